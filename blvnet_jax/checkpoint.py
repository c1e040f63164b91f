"""Checkpoint I/O, the one place that talks to Orbax.

Layout: `{workdir}/checkpoints/<step>/` with the items `params` and `batch_stats` (nested dicts of
arrays keyed like the model's attributes) and `metadata` (JSON: the config, the class names).
Training adds its own items (optimizer state, data position) beside these; evaluation, prediction
and the converter only need the three above. Evaluation and prediction open checkpoints read-only
(`open_reader`) and create nothing. A failed asynchronous save surfaces as `SaveError` at the next
`confirm_saved`, naming the step, the path, the cause and the intact steps.
"""
import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from blvnet_jax import hosts
from blvnet_jax.models import create_model
from blvnet_jax.sharding import create_mesh, replicated


def checkpoint_dir(workdir: str) -> epath.Path:
    """`{workdir}/checkpoints`, for a local workdir or a URL (`gs://...`)."""
    return hosts.workdir_path(workdir) / "checkpoints"


class NoCheckpointError(FileNotFoundError):
    """The workdir has no checkpoint to read."""


class SaveError(OSError):
    """An asynchronous save failed (disk full, permission); the message names the step, path and cause."""


def open_manager(workdir: str, options: ocp.CheckpointManagerOptions | None = None) -> ocp.CheckpointManager:
    """A manager that knows how each item is stored, so it can read their metadata."""
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers={
        "params": ocp.StandardCheckpointHandler(), "batch_stats": ocp.StandardCheckpointHandler(),
        "opt_state": ocp.StandardCheckpointHandler(), "metadata": ocp.JsonCheckpointHandler()})


def open_reader(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager; raises `NoCheckpointError` naming the path, creating nothing, when the
    workdir has no `checkpoints/`."""
    directory = checkpoint_dir(workdir)
    if not directory.exists():
        raise NoCheckpointError(f"no checkpoint under {directory}: train or convert one first "
                                "(or check --workdir)")
    return open_manager(workdir, ocp.CheckpointManagerOptions(read_only=True, create=False))


def stored_metadata(workdir: str) -> tuple[int | None, dict | None]:
    """`(step, metadata)` of the latest checkpoint in `workdir` (read-only); `(None, None)` if none."""
    try:
        manager = open_reader(workdir)
    except NoCheckpointError:
        return None, None
    with manager:
        step = latest_step(manager)
        if step is None:
            return None, None
        return step, manager.restore(step, args=metadata_restore_args())["metadata"]


def open_training_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """Asynchronous saves; keeps the last `config.keep_checkpoints` plus the best by eval top-1;
    removes the partial files of a save that failed (only one run holds the workdir: `workdir_lock`)."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics["top1"], reverse=False, n=1,
                                      keep_checkpoints_without_metrics=False)])
    return open_manager(workdir, ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True))


def metadata_of(config: ml_collections.ConfigDict, class_names: list[str] | None, **extra) -> dict:
    return {"config": json.loads(config.to_json_best_effort()), "class_names": class_names, **extra}


def metadata_restore_args() -> ocp.args.Composite:
    return ocp.args.Composite(metadata=ocp.args.JsonRestore())


def save_train_state(manager: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict,
                     class_names: list[str] | None, metrics: dict | None, **extra_metadata) -> None:
    """Starts an asynchronous save of a `steps.TrainState`; the data position is the step.
    `extra_metadata` (JSON) goes into the metadata item. Raises `SaveError` if the save cannot start;
    call `confirm_saved` first so that a failure of the previous save is named as such."""
    try:
        manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(nnx.to_pure_dict(state.params)),
            batch_stats=ocp.args.StandardSave(nnx.to_pure_dict(state.batch_stats)),
            opt_state=ocp.args.StandardSave(state.opt_state),
            metadata=ocp.args.JsonSave(metadata_of(config, class_names, data_position=step, **extra_metadata))),
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
    `wait=False` only once it has ended. Every process of a multi-host run raises together."""
    if step is None:
        return
    error = saves_failed(manager, wait)
    if jax.process_count() > 1:
        failed = hosts.failing_processes(error is None)
        if failed and error is None:
            error = RuntimeError(f"{', '.join(failed)} could not write it (see its log)")
    if error is not None:
        raise save_error(manager, step, error)


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


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The latest complete step as process 0 sees it; every process must see it too
    (`hosts.agreed_step`)."""
    return hosts.agreed_step(manager.latest_step(), list(manager.all_steps()), str(manager.directory))


def restore_latest_train_state(manager: ocp.CheckpointManager, state):
    """`(state, step)` from the latest checkpoint, restored into `state`'s shapes and shardings;
    `(state, 0)` when there is none."""
    step = latest_step(manager)
    if step is None:
        return state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(nnx.to_pure_dict(abstract.params)),
        batch_stats=ocp.args.StandardRestore(nnx.to_pure_dict(abstract.batch_stats)),
        opt_state=ocp.args.StandardRestore(abstract.opt_state)))
    nnx.replace_by_pure_dict(state.params, restored["params"])
    nnx.replace_by_pure_dict(state.batch_stats, restored["batch_stats"])
    step_array = jax.device_put(jnp.asarray(step, jnp.int32), state.step.sharding)
    return dataclasses.replace(state, opt_state=restored["opt_state"], step=step_array), step


def transfer_weights(source: nnx.Module, target: nnx.Module) -> str:
    """Copies `source`'s weights into `target` of the same architecture (e.g. 8x2 -> 16x2
    frames); a head of another class count stays as initialised. Returns what was done."""
    source_items, target_items = model_items(source), model_items(target)
    head_differs = source_items["params"]["head"]["bias"].shape != target_items["params"]["head"]["bias"].shape
    for items in (source_items, target_items):
        if head_differs:
            items["params"].pop("head")
    for name in ("params", "batch_stats"):
        check_same_shapes(target_items[name], source_items[name], "config.init_from")
    _, params, batch_stats = nnx.split(target, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, source_items["params"])
    nnx.replace_by_pure_dict(batch_stats, source_items["batch_stats"])
    nnx.update(target, params, batch_stats)
    return "all weights" + (" except the head (another class count: re-initialised)" if head_differs else "")


def model_items(model: nnx.Module) -> dict:
    """`{'params': ..., 'batch_stats': ...}` as nested dicts of arrays."""
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)}


def save_model(workdir: str, step: int, model: nnx.Module, config: ml_collections.ConfigDict,
               class_names: list[str] | None = None) -> str:
    """Writes the model's weights with the config; returns the step directory."""
    items = model_items(model)
    metadata = metadata_of(config, class_names)
    with open_manager(workdir) as manager:
        manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(items["params"]),
            batch_stats=ocp.args.StandardSave(items["batch_stats"]),
            metadata=ocp.args.JsonSave(metadata)), force=True)
        manager.wait_until_finished()
    return str(checkpoint_dir(workdir) / str(step))


def flat_shapes(tree) -> dict[str, tuple]:
    """`{'backbone.layer1.big.0.conv1.kernel': shape}` for arrays or Orbax array metadata."""
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_same_shapes(expected: dict, found: dict, where: str) -> None:
    """Raises naming the first parameter whose presence or shape differs between two trees."""
    expected_flat, found_flat = flat_shapes(expected), flat_shapes(found)
    for key, shape in expected_flat.items():
        if key not in found_flat:
            raise ValueError(f"{where}: the model has {key} {shape} but the checkpoint does not; "
                             "it was written for another architecture (see its config)")
        if found_flat[key] != shape:
            raise ValueError(f"{where}: {key} is {found_flat[key]} in the checkpoint but {shape} in the model; "
                             "it was written for another architecture (see its config)")
    extra = sorted(set(found_flat) - set(expected_flat))
    if extra:
        raise ValueError(f"{where}: the checkpoint has {extra[0]} {found_flat[extra[0]]} that the model "
                         f"lacks ({len(extra)} such); it was written for another architecture")


def restore_model(workdir: str, step: int | None = None,
                  config: ml_collections.ConfigDict | None = None) -> tuple[nnx.Module, dict]:
    """Rebuilds the model of a checkpoint (latest step by default) without optimizer state,
    replicated over this run's devices whatever devices wrote it.

    `config` overrides the stored one (its model must have the same parameter shapes).
    Returns the model in eval mode and the metadata (`config`, `class_names`, `step`).
    """
    directory = checkpoint_dir(workdir)
    with open_reader(workdir) as manager:
        step = latest_step(manager) if step is None else step
        if step is None:
            raise NoCheckpointError(f"no checkpoint under {directory}: train or convert one first")
        metadata = manager.restore(step, args=metadata_restore_args())["metadata"]
        config = config or ml_collections.ConfigDict(metadata["config"])
        model = nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0)))
        sharding = replicated(create_mesh())
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                model_items(model))
        stored = manager.item_metadata(step)
        where = str(directory / str(step))
        for name in ("params", "batch_stats"):
            check_same_shapes(abstract[name], stored[name], where)
        restored = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract["params"]),
            batch_stats=ocp.args.StandardRestore(abstract["batch_stats"])))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, restored["params"])
    nnx.replace_by_pure_dict(batch_stats, restored["batch_stats"])
    model = nnx.merge(graphdef, params, batch_stats)
    model.eval()
    return model, dict(metadata, step=step)
