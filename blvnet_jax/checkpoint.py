"""Checkpoint I/O, the one place that talks to Orbax.

Layout: `{workdir}/checkpoints/<step>/` with the items `params` and `batch_stats` (nested dicts of
arrays keyed like the model's attributes), `metadata` (JSON: the config, the class names) and
`digests` (JSON: a SHA-256 per array and of the metadata, `integrity`). Training adds its optimizer
state (and data position, in the metadata); evaluation, prediction and the converter only read
params, batch statistics and metadata.

Every read is verified. Training sets a damaged step aside as `<step>.damaged` (one log line with
the reason) and resumes from the previous intact one; evaluation and prediction open checkpoints
read-only (`open_reader`), create and rename nothing, and skip a damaged step with a log line,
unless it was asked for by number. Old steps are renamed into `deleting/` before they are removed,
so a kill mid-deletion leaves no listed half-step (on GCS, where Orbax deletes in place, such a step
fails verification instead). A failed asynchronous save surfaces as `SaveError` at the next
`confirm_saved`, naming the step, the path, the cause and the intact steps.
"""
import contextlib
import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from jax.experimental import multihost_utils

from blvnet_jax import hosts, integrity
from blvnet_jax.integrity import DamagedCheckpointError
from blvnet_jax.models import create_model
from blvnet_jax.sharding import create_mesh, replicated


def checkpoint_dir(workdir: str) -> epath.Path:
    """`{workdir}/checkpoints`, for a local workdir or a URL (`gs://...`)."""
    return hosts.workdir_path(workdir) / "checkpoints"


DAMAGED_SUFFIX = ".damaged"
DELETING_SUBDIR = "deleting"


# Orbax records a save's metrics (evaluation results) only when it tracks a best step.
BEST_BY_TOP1 = dict(best_fn=lambda metrics: metrics["top1"], best_mode="max")


class NoCheckpointError(FileNotFoundError):
    """The workdir has no (intact, or requested) checkpoint to read."""


class ArchitectureError(ValueError):
    """A checkpoint holds another model than the one it is read into."""


class WeightsOnlyError(ValueError):
    """Training was asked to resume from a checkpoint of weights only (`save_model`: a converted or
    exported model), which holds no optimizer state."""


class SaveError(OSError):
    """An asynchronous save failed (disk full, permission); the message names the step, path and cause."""


def open_manager(workdir: str, options: ocp.CheckpointManagerOptions | None = None) -> ocp.CheckpointManager:
    """A manager that knows how each item is stored, so it can read their metadata."""
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers={
        "params": ocp.StandardCheckpointHandler(), "batch_stats": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler(),
        "digests": ocp.JsonCheckpointHandler()})


def open_reader(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager; raises `NoCheckpointError` naming the path, creating nothing, when the
    workdir has no `checkpoints/`."""
    directory = checkpoint_dir(workdir)
    if not directory.exists():
        raise NoCheckpointError(f"no checkpoint under {directory}: train or convert one first "
                                "(or check --workdir)")
    return open_manager(workdir, ocp.CheckpointManagerOptions(read_only=True, create=False, **BEST_BY_TOP1))


def stored_metadata(workdir: str) -> tuple[int | None, dict | None]:
    """`(step, metadata)` of the latest checkpoint in `workdir` whose metadata reads (read-only; the
    arrays are verified when they are restored); `(None, None)` if none."""
    try:
        manager = open_reader(workdir)
    except NoCheckpointError:
        return None, None
    with manager:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                return step, manager.restore(step, args=metadata_restore_args())["metadata"]
            except Exception:  # noqa: BLE001 - a damaged step; restoring it names the reason
                continue
    return None, None


def open_training_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """Asynchronous saves; keeps the last `config.keep_checkpoints` plus the best by eval top-1;
    removes the partial files of a save that failed (only one run holds the workdir: `workdir_lock`)
    and the old steps left in `deleting/`."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics["top1"], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False)])
    manager = open_manager(workdir, ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True,
        todelete_subdir=DELETING_SUBDIR, **BEST_BY_TOP1))
    remove_deleted_steps(manager)
    return manager


def remove_deleted_steps(manager: ocp.CheckpointManager) -> None:
    """Removes the old steps Orbax renamed into `deleting/` (never listed as steps), by process 0."""
    trash = manager.directory / DELETING_SUBDIR
    if jax.process_index() == 0 and trash.exists():
        trash.rmtree()


def metadata_of(config: ml_collections.ConfigDict, class_names: list[str] | None, **extra) -> dict:
    return {"config": json.loads(config.to_json_best_effort()), "class_names": class_names, **extra}


def metadata_restore_args() -> ocp.args.Composite:
    return ocp.args.Composite(metadata=ocp.args.JsonRestore())


def save_args(items: dict, metadata: dict) -> ocp.args.Composite:
    """Orbax arguments saving `items` (`{'params': tree, ...}`), `metadata` marked with the integrity
    scheme, and the digests of both, taken now from the values in memory."""
    metadata = json.loads(json.dumps(dict(metadata, integrity=integrity.SCHEME)))
    return ocp.args.Composite(
        **{name: ocp.args.StandardSave(tree) for name, tree in items.items()},
        metadata=ocp.args.JsonSave(metadata), digests=ocp.args.JsonSave(integrity.digests_of(items, metadata)))


def train_state_items(state) -> dict:
    """The stored items of a `steps.TrainState` (or of its abstract shapes)."""
    return {"params": nnx.to_pure_dict(state.params), "batch_stats": nnx.to_pure_dict(state.batch_stats),
            "opt_state": state.opt_state}


def save_train_state(manager: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict,
                     class_names: list[str] | None, metrics: dict | None, **extra_metadata) -> None:
    """Starts an asynchronous save of a `steps.TrainState`; the data position is the step.
    `extra_metadata` (JSON) goes into the metadata item. Raises `SaveError` if the save cannot start;
    call `confirm_saved` first so that a failure of the previous save is named as such."""
    try:
        manager.save(step, args=save_args(train_state_items(state),
                                          metadata_of(config, class_names, data_position=step, **extra_metadata)),
                     metrics={k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))} or None)
    except Exception as error:  # noqa: BLE001 - any failure to write is reported the same way
        raise save_error(manager, step, error) from error


def saves_failed(manager: ocp.CheckpointManager, wait: bool) -> BaseException | None:
    """The error of the last asynchronous save, if it failed; `wait=False` only looks at a save that
    has ended (no blocking)."""
    if not wait and manager.is_saving_in_progress():
        return None
    try:
        manager.wait_until_finished()
        manager.check_for_errors()
    except Exception as error:  # noqa: BLE001
        return error
    return None


def confirm_saved(manager: ocp.CheckpointManager, step: int | None, wait: bool = True) -> None:
    """Raises `SaveError` if the save of `step` (the last one started; None: none) failed; with
    `wait=False` only once it has ended. Every process of a multi-host run raises together. With
    `wait`, the old steps the save replaced are then removed (not at every log step)."""
    if step is None:
        return
    error = saves_failed(manager, wait)
    if jax.process_count() > 1:
        failed = hosts.failing_processes(error is None)
        if failed and error is None:
            error = RuntimeError(f"{', '.join(failed)} could not write it (see its log)")
    if error is not None:
        raise save_error(manager, step, error)
    if wait:  # the save has ended, and the deletions it made with it
        remove_deleted_steps(manager)


def save_error(manager: ocp.CheckpointManager, step: int, error: BaseException) -> SaveError:
    """A one-line `SaveError` for the failed save of `step`: the path, the cause, and the earlier
    steps, confirmed intact by reading back the latest one. The step's partial files (`<step>.orbax-
    checkpoint-tmp`, never listed as a step) are removed when training restarts."""
    directory = manager.directory
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    try:
        manager.reload()
        intact = sorted(s for s in manager.all_steps() if s != step)
        if intact:
            manager.restore(intact[-1], args=metadata_restore_args())
        earlier = (f"intact: step(s) {', '.join(map(str, intact))}, the latest read back; free space or fix "
                   f"permissions and run the same command to resume from step {intact[-1]}"
                   if intact else "no earlier checkpoint exists: a restart begins again from step 0")
    except Exception as check:  # noqa: BLE001
        earlier = f"the earlier checkpoints could not be read back either ({str(check).strip()[:200]})"
    logging.error("Checkpoint save of step %d failed: %r", step, error)
    return SaveError(f"could not save the checkpoint of step {step} to {directory / str(step)}: {cause} "
                     f"({type(error).__name__}); training stopped. In {directory}, {earlier}")


def latest_step(manager: ocp.CheckpointManager, below: int | None = None) -> int | None:
    """The latest complete step (below `below`, if given) as process 0 sees it; every process must
    see it too (`hosts.agreed_step`)."""
    steps = [step for step in manager.all_steps() if below is None or step < below]
    return hosts.agreed_step(max(steps, default=None), steps, str(manager.directory))


@contextlib.contextmanager
def reading(manager: ocp.CheckpointManager, step: int):
    """Turns any failure to read `step` (running out of memory excepted) into a
    `DamagedCheckpointError` naming the step and the error's first line."""
    try:
        yield
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - anything unreadable in a step is damage, named
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        raise DamagedCheckpointError(step, str(manager.directory), f"{type(error).__name__}: {reason}") from error


def holds_weights_only(manager: ocp.CheckpointManager, step: int) -> bool:
    """Whether `step` holds a model's weights only (`save_model`: a converted or exported model): its
    digests, written in the same step as its items, list no optimizer state."""
    stored = manager.item_metadata(step)
    if "digests" not in stored or stored.get("opt_state") is not None:
        return False
    return "opt_state" not in manager.restore(step, args=ocp.args.Composite(digests=ocp.args.JsonRestore()))["digests"]


def weights_only_error(manager: ocp.CheckpointManager, step: int) -> WeightsOnlyError:
    return WeightsOnlyError(
        f"step {step} in {manager.directory} holds a model's weights only (written by convert or save_model), not "
        f"a training run to resume: to fine-tune from it, train in a new --workdir with "
        f"--config.init_from={manager.directory.parent}")


def refuse_weights_only(workdir: str, step: int) -> None:
    """Raises `WeightsOnlyError` when `step` of `workdir` holds weights only (training cannot resume it)."""
    with open_reader(workdir) as manager:
        if holds_weights_only(manager, step):
            raise weights_only_error(manager, step)


def read_step(manager: ocp.CheckpointManager, step: int, abstract_items: dict) -> tuple[dict, dict]:
    """`(items, metadata)` of `step`, restored into the shapes, dtypes and shardings of
    `abstract_items` (`{'params': tree of jax.ShapeDtypeStruct, ...}`) and verified against the
    step's digests (and finite).

    Raises `DamagedCheckpointError` when the step cannot be read back as it was written,
    `ArchitectureError` when it holds another model and `WeightsOnlyError` when a training state is
    asked of a step of weights only.
    """
    with reading(manager, step):
        metadata = manager.restore(step, args=metadata_restore_args())["metadata"]
        stored = manager.item_metadata(step)
        missing = [name for name in abstract_items if stored.get(name) is None]
        weights_only = missing == ["opt_state"] and holds_weights_only(manager, step)
        if missing and not weights_only:
            raise FileNotFoundError(f"its {missing[0]} item is missing")
    if weights_only:
        raise weights_only_error(manager, step)
    for name in ("params", "batch_stats"):  # another model is not damage
        if name in abstract_items:
            check_same_shapes(abstract_items[name], stored[name], str(manager.directory / str(step)))
    verified = metadata.get("integrity") == integrity.SCHEME
    with reading(manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(
            **{name: ocp.args.StandardRestore(tree) for name, tree in abstract_items.items()},
            **({"digests": ocp.args.JsonRestore()} if verified else {})))
    items = {name: restored[name] for name in abstract_items}
    if verified:
        problem = integrity.problems(items, metadata, restored["digests"])
    else:
        nonfinite = integrity.nonfinite_arrays(items)
        problem = f"non-finite values in {nonfinite[0]}" if nonfinite else None
        if problem is None:
            logging.warning("Checkpoint step %d in %s was written without digests (an older blvnet-jax): "
                            "checked for finite values only", step, manager.directory)
    if problem:
        raise DamagedCheckpointError(step, str(manager.directory), problem)
    return items, metadata


def newest_intact_step(manager: ocp.CheckpointManager, read, set_aside: bool):
    """`(step, read(step))` for the newest step that `read` reads without `DamagedCheckpointError`;
    `(None, None)` when the manager lists no step.

    Each damaged step is named in one log line with the reason and, with `set_aside` (training,
    which holds the workdir), renamed `<step>.damaged`. Every process of a multi-host run reads
    the step and they decide together. Raises `NoCheckpointError` when every step is damaged.
    """
    damaged_steps, step = [], latest_step(manager)
    while step is not None:
        try:
            return_value, reason = read(step), None
        except DamagedCheckpointError as error:
            return_value, reason = None, error.reason
        if jax.process_count() > 1:
            failed = hosts.failing_processes(reason is None)
            if failed and reason is None:
                reason = f"{', '.join(failed)} could not read it (see its log)"
        if reason is None:
            return step, return_value
        damaged_steps.append(step)
        if set_aside:
            moved_to = move_aside(manager, step, DAMAGED_SUFFIX)
            logging.error("Checkpoint step %d in %s is damaged (%s): set aside as %s; trying the previous step",
                          step, manager.directory, reason, moved_to.name)
        else:
            logging.error("Checkpoint step %d in %s is damaged (%s): skipped (training in this workdir sets it "
                          "aside); trying the previous step", step, manager.directory, reason)
        step = latest_step(manager, below=step)
    if damaged_steps:
        raise NoCheckpointError(
            f"no intact checkpoint in {manager.directory}: step(s) {', '.join(map(str, damaged_steps))} failed "
            "verification (see the log)" + (", set aside as <step>.damaged; run again to start from step 0, or "
                                            "restore the files if the storage was at fault" if set_aside else ""))
    return None, None


def move_aside(manager: ocp.CheckpointManager, step: int, suffix: str) -> epath.Path:
    """Renames `<step>` to `<step><suffix>` (`-2`, `-3`, ... if taken) so that no manager lists it;
    process 0 renames, every process returns the new path."""
    target = manager.directory / f"{step}{suffix}"
    copies = 1
    while target.exists():
        copies += 1
        target = manager.directory / f"{step}{suffix}-{copies}"
    if jax.process_index() == 0:
        (manager.directory / str(step)).rename(target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"blvnet_jax: step {step} set aside")
    manager.reload()
    return target


def newest_intact_train_state(manager: ocp.CheckpointManager, state) -> tuple[int | None, dict | None]:
    """`(step, items)` of the newest intact checkpoint, restored into `state`'s shapes and shardings,
    damaged steps set aside; `(None, None)` when there is none."""
    abstract_items = train_state_items(jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    return newest_intact_step(manager, lambda step: read_step(manager, step, abstract_items)[0], set_aside=True)


def restore_latest_train_state(manager: ocp.CheckpointManager, state):
    """`(state, step)` from the newest intact checkpoint (`newest_intact_train_state`); `(state, 0)`
    when there is none."""
    step, restored = newest_intact_train_state(manager, state)
    if step is None:
        return state, 0
    nnx.replace_by_pure_dict(state.params, restored["params"])
    nnx.replace_by_pure_dict(state.batch_stats, restored["batch_stats"])
    step_array = jax.device_put(jnp.asarray(step, jnp.int32), state.step.sharding)
    return dataclasses.replace(state, opt_state=restored["opt_state"], step=step_array), step


def transfer_weights(source: nnx.Module, target: nnx.Module, other_classes: bool = False) -> str:
    """Copies `source`'s weights into `target` of the same architecture (e.g. 8x2 -> 16x2
    frames); a head of another class count, or of `other_classes` (another class list of the same
    count), stays as initialised. Returns what was done."""
    source_items, target_items = model_items(source), model_items(target)
    other_count = source_items["params"]["head"]["bias"].shape != target_items["params"]["head"]["bias"].shape
    for items in (source_items, target_items):
        if other_count or other_classes:
            items["params"].pop("head")
    for name in ("params", "batch_stats"):
        check_same_shapes(target_items[name], source_items[name], "config.init_from")
    _, params, batch_stats = nnx.split(target, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, source_items["params"])
    nnx.replace_by_pure_dict(batch_stats, source_items["batch_stats"])
    nnx.update(target, params, batch_stats)
    if other_count or other_classes:
        return f"all weights except the head (another class {'count' if other_count else 'list'}: re-initialised)"
    return "all weights"


def model_items(model: nnx.Module) -> dict:
    """`{'params': ..., 'batch_stats': ...}` as nested dicts of arrays."""
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)}


def save_model(workdir: str, step: int, model: nnx.Module, config: ml_collections.ConfigDict,
               class_names: list[str] | None = None) -> str:
    """Writes the model's weights with the config (and their digests); returns the step directory."""
    with open_manager(workdir) as manager:
        manager.save(step, args=save_args(model_items(model), metadata_of(config, class_names)), force=True)
        manager.wait_until_finished()
    return str(checkpoint_dir(workdir) / str(step))


def flat_shapes(tree) -> dict[str, tuple]:
    """`{'backbone.layer1.big.0.conv1.kernel': shape}` for arrays or Orbax array metadata."""
    return {key: tuple(leaf.shape) for key, leaf in integrity.flat_leaves(tree).items()}


def check_same_shapes(expected: dict, found: dict, where: str) -> None:
    """Raises `ArchitectureError` naming the first parameter whose presence or shape differs."""
    expected_flat, found_flat = flat_shapes(expected), flat_shapes(found)
    for key, shape in expected_flat.items():
        if key not in found_flat:
            raise ArchitectureError(f"{where}: the model has {key} {shape} but the checkpoint does not; "
                                    "it was written for another architecture (see its config)")
        if found_flat[key] != shape:
            raise ArchitectureError(f"{where}: {key} is {found_flat[key]} in the checkpoint but {shape} in the "
                                    "model; it was written for another architecture (see its config)")
    extra = sorted(set(found_flat) - set(expected_flat))
    if extra:
        raise ArchitectureError(f"{where}: the checkpoint has {extra[0]} {found_flat[extra[0]]} that the model "
                                f"lacks ({len(extra)} such); it was written for another architecture")


def best_top1(manager: ocp.CheckpointManager) -> float | None:
    """The evaluation top-1 of the best step saved with one (`BEST_BY_TOP1`); None when none was."""
    step = manager.best_step()
    metrics = manager.metrics(step) if step is not None else None
    return float(metrics["top1"]) if metrics else None


def parse_step(which: str) -> int | str:
    """A `--checkpoint` value ('latest', 'best' or a step number) as `restore_model` takes it."""
    if which not in ("latest", "best") and not which.isdigit():
        raise ValueError(f"--checkpoint={which!r}: use 'latest', 'best' or a step number")
    return int(which) if which.isdigit() else which


def requested_step(manager: ocp.CheckpointManager, which: int | str) -> int:
    """The step of `--checkpoint` `which` (a number, or 'best': the best evaluation top-1 saved)."""
    steps = sorted(manager.all_steps())
    if which == "best":
        step = manager.best_step()  # None when no step has metrics
        if step is None:
            raise NoCheckpointError(f"no checkpoint in {manager.directory} was saved with an evaluation score, so "
                                    "none is 'best': use --checkpoint=latest or a step")
        return step
    if int(which) not in steps:
        raise NoCheckpointError(f"no checkpoint step {which} in {manager.directory} (steps: "
                                f"{', '.join(map(str, steps)) or 'none'})")
    return int(which)


def restore_model(workdir: str, step: int | str | None = None,
                  config: ml_collections.ConfigDict | None = None) -> tuple[nnx.Module, dict]:
    """Rebuilds the model of a checkpoint without optimizer state, replicated over this run's
    devices whatever devices wrote it, after verifying it.

    `step`: None or 'latest' (the newest intact step: damaged ones are skipped with a log line),
    'best' (the best evaluation top-1) or a number; a requested step that is damaged raises
    `DamagedCheckpointError`. `config` overrides the stored one (its model must have the same
    parameter shapes). Returns the model in eval mode and the metadata (`config`, `class_names`, `step`).
    """
    sharding = replicated(create_mesh())

    def read(at_step: int) -> tuple[nnx.Module, dict, dict]:
        with reading(manager, at_step):
            stored_config = manager.restore(at_step, args=metadata_restore_args())["metadata"]["config"]
        model = nnx.eval_shape(lambda: create_model((config or ml_collections.ConfigDict(stored_config)).model,
                                                    rngs=nnx.Rngs(0)))
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                model_items(model))
        restored, metadata = read_step(manager, at_step, abstract)
        return model, restored, metadata

    with open_reader(workdir) as manager:
        if step in (None, "latest"):
            step, (model, restored, metadata) = newest_intact_step(manager, read, set_aside=False)
            if step is None:
                raise NoCheckpointError(f"no checkpoint under {manager.directory}: train or convert one first")
        else:
            step = requested_step(manager, step)
            model, restored, metadata = read(step)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, restored["params"])
    nnx.replace_by_pure_dict(batch_stats, restored["batch_stats"])
    model = nnx.merge(graphdef, params, batch_stats)
    model.eval()
    return model, dict(metadata, step=step)
