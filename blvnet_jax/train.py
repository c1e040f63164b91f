"""The training and evaluation loop: `train_and_evaluate(config, workdir)`.

One jitted train step over a mesh of all devices (batch sharded on the `data` axis, state
replicated, batch-norm statistics over the global batch), periodic evaluation, Orbax checkpoints
that resume exactly (same step, optimizer state and data position), the best evaluation saved
when it is measured, logs to TensorBoard and `{workdir}/metrics.jsonl` (`train/...` and
`eval/...`), result files of each evaluation in `{workdir}/eval/` (`evaluation`).
"""
import json
import logging
import math
import time

import jax
import numpy as np
from clu import metric_writers, periodic_actions
from etils import epath
from flax import nnx

import input_pipeline
from blvnet_jax import checkpoint, config_check, evaluation, hosts, recipe, steps, workdir_lock
from blvnet_jax.sharding import batch_sharding, create_mesh, global_batch, replicated
from blvnet_jax.models import create_model


def steps_per_epoch(config, source: input_pipeline.Source) -> int:
    return max(1, source.num_videos("train") // config.batch_size)


def total_train_steps(config, epoch_steps: int) -> int:
    return config.num_train_steps if config.num_train_steps > 0 else int(config.num_epochs * epoch_steps)


def initial_model(config, class_names: list[str] | None) -> nnx.Module:
    """The model of the config, with `config.init_from` weights when given (head re-initialised
    when the class count differs, or when the checkpoint's class names are not `class_names`, the data's)."""
    model = create_model(config.model, rngs=nnx.Rngs(config.seed))
    if config.init_from:
        source, metadata = checkpoint.restore_model(config.init_from)
        other_classes = recipe.class_list_difference(metadata.get("class_names"), class_names)
        transferred = checkpoint.transfer_weights(source, model, other_classes=other_classes is not None)
        logging.info("Initialised from %s (step %d): %s%s", config.init_from, metadata["step"], transferred,
                     f"; {other_classes}" if other_classes else "")
    return model


def device_memory_bytes() -> int | None:
    """Memory one device may use: the accelerator's limit, or the host's available RAM on CPU."""
    stats = jax.local_devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def compile_train_step(config, jitted_step, state, mesh):
    """Compiles `jitted_step` (`steps.build_train_step`'s) ahead of time for the config's batches on
    `mesh`, logs its memory, and fails early if it cannot fit."""
    local_batch = config.batch_size // mesh.shape["data"]
    batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, key))
             for key, (shape, dtype) in input_pipeline.train_batch_shapes(
                 config.data, config.model.num_frames, config.batch_size).items()}
    logging.info("Compiling the train step (%s, %d frames at %d px, %d clips per device) ...", config.model.name,
                 config.model.num_frames, config.data.crop_size, local_batch)
    compiled = jitted_step.lower(state, batch, jax.random.key(0)).compile()
    if compiled.memory_analysis() is None:
        return compiled
    needed = steps.memory_figures(compiled)["step_bytes"]
    available = device_memory_bytes()
    logging.info("Train step: %.2f GiB per device (XLA estimate) at %d clips per device; %s available",
                 needed / 2**30, local_batch, f"{available / 2**30:.2f} GiB" if available else "unknown")
    if available and needed > available:
        raise MemoryError(
            f"one train step needs about {needed / 2**30:.2f} GiB per device but {available / 2**30:.2f} GiB "
            f"are available: lower config.batch_size ({config.batch_size}; raise "
            "config.grad_accumulation_steps to keep the effective batch), use --config.model.dtype=bfloat16, "
            "or fewer frames / a smaller crop")
    return compiled


class MetricLogger:
    """Scalars to TensorBoard and the log (clu) and to `{workdir}/metrics.jsonl`, by process 0, under
    the same names: `train/loss`, `train/learning_rate`, ..., `eval/top1`, ...

    The lines of steps after `start_step`, written by a run that stopped past its last checkpoint
    (and a last line cut short), are dropped: the run goes on from `start_step`.
    """

    def __init__(self, workdir: epath.Path, start_step: int = 0):
        self.writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
        self.jsonl = None
        if jax.process_index() == 0:
            path = workdir / "metrics.jsonl"
            lines = path.read_text().splitlines(keepends=True) if path.exists() else []
            kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= start_step]
            if len(kept) < len(lines):
                path.write_text("".join(kept))
            self.jsonl = path.open("a")

    def write(self, step: int, metrics: dict) -> None:
        self.writer.write_scalars(step, metrics)
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        self.writer.flush()
        if self.jsonl:
            self.jsonl.close()


def check_finite(step: int, metrics: list[dict], manager, state) -> None:
    """Stops training on a NaN/inf loss or gradient norm among `metrics` (one per step, the last
    at `step`), naming the first such step and the last good checkpoint: the newest one that passes
    verification and was followed by a finite step. The checkpoints after it are set aside as
    `<step>.nonfinite`, so that the same command resumes from the good one."""
    values = jax.device_get([{"loss": m["loss"], "gradient norm": m["grad_norm"]} for m in metrics])
    bad = [(i, name, float(value)) for i, step_values in enumerate(values) for name, value in step_values.items()
           if not math.isfinite(float(value))]
    if not bad:
        return
    index, name, value = bad[0]
    first_bad_step = step - len(metrics) + 1 + index
    manager.wait_until_finished()
    for later in sorted(s for s in manager.all_steps() if s >= first_bad_step - 1):  # its state gave the bad step
        moved_to = checkpoint.move_aside(manager, later, ".nonfinite")
        logging.error("Checkpoint step %d led to a non-finite %s: set aside as %s", later, name, moved_to.name)
    try:
        good, _ = checkpoint.newest_intact_train_state(manager, state)
    except checkpoint.NoCheckpointError:  # every earlier step is damaged: logged, set aside
        good = None
    resume = (f"the last good checkpoint is step {good} in {manager.directory}: the same command resumes from it "
              "(lower config.learning_rate or set config.skip_nonfinite_steps=True first)" if good is not None else
              f"no good checkpoint precedes it in {manager.directory}: a restart begins from step 0")
    raise FloatingPointError(f"the {name} became {value} at step {first_bad_step}: training stopped; {resume}")


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the last metrics.

    Raises `workdir_lock.WorkdirBusyError` if another training holds the workdir,
    `recipe.RecipeChangedError` if the checkpoint was trained with another recipe or class list, and
    `checkpoint.SaveError` at a save that failed."""
    config_check.check_training(config)
    workdir = hosts.workdir_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    hosts.check_shared_workdir(workdir)
    # A notice that comes before the first step (while the step compiles) stops the run after that step.
    with workdir_lock.WorkdirLock(workdir), hosts.PreemptionWatch() as preemption:
        return train_in_workdir(config, workdir, preemption)


def resume_recipe_changes(config, workdir: epath.Path, class_names: list[str] | None,
                          train_split: dict) -> list[dict]:
    """The recipe changes to record in the next checkpoints: the stored history plus the change this
    resume on data of `class_names` and `train_split` makes (`recipe.check_resume` raises unless it
    is allowed)."""
    step, metadata = checkpoint.stored_metadata(str(workdir))
    if step is None:
        return []
    checkpoint.refuse_weights_only(str(workdir), step)
    history = list(metadata.get("recipe_changes", []))
    accepted = recipe.check_resume(metadata, config, class_names, train_split,
                                   str(checkpoint.checkpoint_dir(str(workdir))), step)
    return history + [accepted] if accepted else history


def train_in_workdir(config, workdir: epath.Path, preemption: hosts.PreemptionWatch) -> dict:
    """The loop of `train_and_evaluate`, run while this run holds the workdir's lock; it saves and
    stops at the step `preemption` says."""
    source = input_pipeline.create_source(config.data)
    class_names, train_split = source.class_names(), source.split_digest("train")
    recipe_changes = resume_recipe_changes(config, workdir, class_names, train_split)
    mesh = create_mesh(config.mesh_shape)
    epoch_steps = steps_per_epoch(config, source)
    total_steps = total_train_steps(config, epoch_steps)
    logging.info("Data: %d training videos (%d steps per epoch); building %s and its optimizer state ...",
                 source.num_videos("train"), epoch_steps, config.model.name)
    schedule = steps.learning_rate_schedule(config, epoch_steps, total_steps)
    graphdef, state, jitted_step = steps.build_train_step(config, initial_model(config, class_names), schedule, mesh)
    state = jax.device_put(state, replicated(mesh))

    manager = checkpoint.open_training_manager(str(workdir), config)
    state, start_step = checkpoint.restore_latest_train_state(manager, state)
    if start_step:
        logging.info("Resumed from %s at step %d", manager.directory, start_step)

    train_step = compile_train_step(config, jitted_step, state, mesh)
    evaluator = evaluation.Evaluator(config, graphdef, mesh, source, class_names)
    logger = MetricLogger(workdir, start_step)
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=logger.writer,
                                               every_steps=config.log_every_steps)
    dataset = input_pipeline.create_train_dataset(
        source, num_frames=config.model.num_frames, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(), start_step=start_step)
    rng = jax.random.key(config.seed)
    logging.info("Training %s for %d steps (%d per epoch), global batch %d on %d devices",
                 config.model.name, total_steps, epoch_steps, config.batch_size, jax.device_count())

    eval_every = config.eval_every_steps if config.eval_every_steps > 0 else epoch_steps
    train_metrics, last_eval, last_log_time, skipped_steps = [], {}, time.time(), 0
    saving = None  # the step of the last save started; a failure stops training (checkpoint.SaveError)
    best_top1 = checkpoint.best_top1(manager)  # of the evaluations saved so far; None: none
    try:
        for step in range(start_step + 1, total_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                batch = global_batch(next(dataset), mesh)
                state, metrics = train_step(state, batch, rng)
            train_metrics.append(metrics)
            progress(step)
            preempted = preemption.reached(step)
            is_last = step == total_steps
            save_now = step % config.checkpoint_every_steps == 0 or is_last or preempted
            eval_now = (step % eval_every == 0 or is_last) and not preempted
            if step % config.log_every_steps == 0 or save_now or eval_now:  # saves and evaluations: finite
                hosts.raise_together(dataset.error, input_pipeline.DataError)  # and of data within the rules
                checkpoint.confirm_saved(manager, saving, wait=False)
                if not config.skip_nonfinite_steps:
                    check_finite(step, train_metrics, manager, state)
                summary = {k: float(np.mean(jax.device_get([m[k] for m in train_metrics])))
                           for k in train_metrics[0] if k != "skipped"}
                skipped_steps += int(sum(jax.device_get([m["skipped"] for m in train_metrics])))
                summary["skipped_nonfinite_steps"] = skipped_steps
                now = time.time()
                summary["clips_per_s"] = len(train_metrics) * config.batch_size / (now - last_log_time)
                last_log_time = now
                summary["learning_rate"] = float(schedule(step - 1))
                summary.update(dataset.stats.report())  # unreadable_videos, faults_<kind>: counts
                logger.write(step, {f"train/{k}": v for k, v in summary.items()})
                train_metrics = []
            if eval_now:
                checkpoint.confirm_saved(manager, saving)  # no evaluation after a failed save
                last_eval = evaluator.evaluate(state.params, state.batch_stats, step, workdir, writer=logger.writer)
                logger.write(step, {f"eval/{k}": last_eval[k] for k in ("top1", "top5", "loss", "num_videos")})
                last_log_time = time.time()  # clips/s counts training only
                if best_top1 is None or last_eval["top1"] > best_top1:  # saved now, kept as the best
                    best_top1, save_now = last_eval["top1"], True
            if save_now:
                checkpoint.confirm_saved(manager, saving)
                checkpoint.save_train_state(manager, step, state, config, class_names, last_eval if eval_now else None,
                                            recipe_changes=recipe_changes, train_split=train_split)
                logging.info("Saving checkpoint step %d to %s (in the background)", step, manager.directory / str(step))
                saving = step
            if preempted:
                logging.warning("Stopped (preempted, or Ctrl-C) at step %d with its checkpoint in %s; the same "
                                "command resumes from it", step, manager.directory)
                break
    finally:  # an interrupted run keeps every checkpoint it started writing
        dataset.close()
        try:
            checkpoint.confirm_saved(manager, saving)
        finally:
            manager.close()
            logger.close()
    done = int(state.step)
    evaluated = "no evaluation this run" if not last_eval else "evaluation in " + str(
        evaluation.result_dir(workdir, last_eval["step"], last_eval["crops"], last_eval["clips"]))
    logging.info("%s at step %d of %d: checkpoints in %s, metrics in %s, TensorBoard in %s, %s",
                 "Finished" if done == total_steps else "Stopped", done, total_steps, manager.directory,
                 workdir / "metrics.jsonl", workdir, evaluated)
    return last_eval


def evaluate_checkpoint(config, workdir: str, step: int | str = "latest") -> dict:
    """Evaluates a checkpoint in `workdir` (`checkpoint.restore_model`'s `step`) with `config`'s data and views;
    a checkpoint of the data's classes in another order is scored with its outputs reordered, one of other
    classes raises `recipe.ClassListError`."""
    config_check.check_evaluation(config)
    model, metadata = checkpoint.restore_model(workdir, step, config=config)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    mesh = create_mesh(config.mesh_shape)
    params, batch_stats = jax.device_put((params, batch_stats), replicated(mesh))
    source = input_pipeline.create_source(config.data)
    class_names = source.class_names()
    output_of_label = outputs_of_data_labels(metadata, class_names, str(checkpoint.checkpoint_dir(workdir)))
    evaluator = evaluation.Evaluator(config, graphdef, mesh, source, class_names or metadata.get("class_names"),
                                     output_of_label)
    return evaluator.evaluate(params, batch_stats, metadata["step"], workdir)


def outputs_of_data_labels(metadata: dict, class_names: list[str] | None, where: str) -> list[int] | None:
    """The model output of each data label (`class_names`) when the checkpoint (`metadata`, in `where`)
    was trained on the same classes in another order (logged); None when no reordering is needed.
    Raises `recipe.ClassListError` when the classes are not the same."""
    stored_names = metadata.get("class_names")
    other_classes = recipe.class_list_difference(stored_names, class_names)
    if other_classes is None:
        return None
    if sorted(stored_names) != sorted(class_names) or len(set(class_names)) != len(class_names):
        raise recipe.ClassListError(
            f"the checkpoint of step {metadata['step']} in {where} was trained on other classes than the data's "
            f"({other_classes}); its outputs cannot be scored against these labels: evaluate it on the data of its "
            "classes (config.data.class_names_file or config.data.tfds_data_dir), or fine-tune it on these with "
            "--config.init_from")
    logging.info("The checkpoint of step %d was trained on the data's classes in another order (%s): its outputs "
                 "are reordered to the data's labels", metadata["step"], other_classes)
    return [stored_names.index(name) for name in class_names]
