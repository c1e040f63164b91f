"""The training and evaluation loop: `train_and_evaluate(config, workdir)`.

One jitted train step over a mesh of all devices (batch sharded on the `data` axis, state
replicated, batch-norm statistics over the global batch), periodic evaluation, Orbax checkpoints
that resume exactly (same step, optimizer state and data position), logs to TensorBoard and
`{workdir}/metrics.jsonl`.
"""
import json
import logging
import math
import time

import jax
import numpy as np
import optax
from clu import metric_writers, periodic_actions
from etils import epath
from flax import nnx

import input_pipeline
from blvnet_jax import checkpoint, config_check, evaluation, hosts, steps
from blvnet_jax.sharding import batch_sharding, create_mesh, global_batch, replicated
from blvnet_jax.models import create_model


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Warm-up, then cosine to 0 or x`lr_decay_factor` at each epoch of `lr_decay_epochs`."""
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, max(1, total_steps - warmup_steps))
    elif config.lr_schedule == "multistep":
        main = optax.piecewise_constant_schedule(config.learning_rate, {
            int(epoch * steps_per_epoch) - warmup_steps: config.lr_decay_factor for epoch in config.lr_decay_epochs})
    else:
        raise ValueError(f"config.lr_schedule={config.lr_schedule!r}: use 'cosine' or 'multistep'")
    if not warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and L2 weight decay on every parameter, as the official code."""
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    parts += [optax.add_decayed_weights(config.weight_decay),
              optax.sgd(schedule, momentum=config.momentum, nesterov=True)]
    optimizer = optax.chain(*parts)
    if config.grad_accumulation_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=config.grad_accumulation_steps)
    return optimizer


def steps_per_epoch(config) -> int:
    return max(1, input_pipeline.num_videos(config.data, "train") // config.batch_size)


def total_train_steps(config, epoch_steps: int) -> int:
    return config.num_train_steps if config.num_train_steps > 0 else int(config.num_epochs * epoch_steps)


def initial_model(config) -> nnx.Module:
    """The model of the config, with `config.init_from` weights when given (head re-initialised
    when the class count differs)."""
    model = create_model(config.model, rngs=nnx.Rngs(config.seed))
    if config.init_from:
        source, metadata = checkpoint.restore_model(config.init_from)
        transferred = checkpoint.transfer_weights(source, model)
        logging.info("Initialised from %s (step %d): %s", config.init_from, metadata["step"], transferred)
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


def compile_train_step(config, graphdef, optimizer, state, mesh):
    """Compiles the train step ahead of time, logs its memory, and fails early if it cannot fit."""
    local_batch = config.batch_size // mesh.shape["data"]
    batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, key))
             for key, (shape, dtype) in input_pipeline.train_batch_shapes(
                 config.data, config.model.num_frames, config.batch_size).items()}
    step_fn = steps.make_train_step(graphdef, optimizer, config.label_smoothing, config.skip_nonfinite_steps,
                                    config.data.crop_size)
    compiled = jax.jit(step_fn, donate_argnums=0,
                       out_shardings=(replicated(mesh), replicated(mesh))).lower(
        state, batch, jax.random.key(0)).compile()
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
    """Scalars to TensorBoard and the log (clu) and to `{workdir}/metrics.jsonl`, by process 0."""

    def __init__(self, workdir: epath.Path):
        self.writer = metric_writers.create_default_writer(str(workdir), just_logging=jax.process_index() > 0)
        self.jsonl = (workdir / "metrics.jsonl").open("a") if jax.process_index() == 0 else None

    def write(self, step: int, metrics: dict) -> None:
        self.writer.write_scalars(step, metrics)
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        self.writer.flush()
        if self.jsonl:
            self.jsonl.close()


def check_finite(step: int, metrics: list[dict], manager) -> None:
    """Stops training on a NaN/inf loss or gradient norm, naming the step and the last good checkpoint."""
    for name in ("loss", "grad_norm"):
        bad = [float(x) for x in jax.device_get([m[name] for m in metrics]) if not math.isfinite(float(x))]
        if bad:
            manager.wait_until_finished()
            raise FloatingPointError(
                f"the {name.replace('_', ' ')} became {bad[0]} by step {step}: training stopped; the last "
                f"good checkpoint is step {manager.latest_step()} in {manager.directory}")


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the last metrics."""
    config_check.check_training(config)
    workdir = hosts.workdir_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    hosts.check_shared_workdir(workdir)
    mesh = create_mesh(config.mesh_shape)
    epoch_steps = steps_per_epoch(config)
    total_steps = total_train_steps(config, epoch_steps)
    schedule = learning_rate_schedule(config, epoch_steps, total_steps)
    optimizer = make_optimizer(config, schedule)
    graphdef, state = steps.init_train_state(initial_model(config), optimizer)
    state = jax.device_put(state, replicated(mesh))
    class_names = input_pipeline.class_names(config.data)

    manager = checkpoint.open_training_manager(str(workdir), config)
    state, start_step = checkpoint.restore_latest_train_state(manager, state)
    if start_step:
        logging.info("Resumed from %s at step %d", manager.directory, start_step)

    train_step = compile_train_step(config, graphdef, optimizer, state, mesh)
    evaluator = evaluation.Evaluator(config, graphdef, mesh, class_names)
    logger = MetricLogger(workdir)
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=logger.writer,
                                               every_steps=config.log_every_steps)
    dataset = input_pipeline.create_train_dataset(
        config.data, num_frames=config.model.num_frames, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(), start_step=start_step)
    rng = jax.random.key(config.seed)
    logging.info("Training %s for %d steps (%d per epoch), global batch %d on %d devices",
                 config.model.name, total_steps, epoch_steps, config.batch_size, jax.device_count())

    eval_every = config.eval_every_steps if config.eval_every_steps > 0 else epoch_steps
    train_metrics, last_eval, last_log_time, skipped_steps = [], {}, time.time(), 0
    preemption = hosts.PreemptionWatch()
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
            if step % config.log_every_steps == 0 or save_now:
                if not config.skip_nonfinite_steps:
                    check_finite(step, train_metrics, manager)
                summary = {f"train_{k}": float(np.mean(jax.device_get([m[k] for m in train_metrics])))
                           for k in train_metrics[0] if k != "skipped"}
                skipped_steps += int(sum(jax.device_get([m["skipped"] for m in train_metrics])))
                summary["skipped_nonfinite_steps"] = skipped_steps
                now = time.time()
                summary["clips_per_s"] = len(train_metrics) * config.batch_size / (now - last_log_time)
                last_log_time = now
                summary["learning_rate"] = float(schedule(step - 1))
                summary.update(dataset.stats.report())  # unreadable_videos, faults_<kind>: counts
                logger.write(step, summary)
                train_metrics = []
            eval_now = (step % eval_every == 0 or is_last) and not preempted
            if eval_now:
                last_eval = evaluator.evaluate(state.params, state.batch_stats, step, workdir)
                logger.write(step, {f"eval_{k}": last_eval[k] for k in ("top1", "top5", "loss", "num_videos")})
                last_log_time = time.time()  # clips/s counts training only
            if save_now:
                checkpoint.save_train_state(manager, step, state, config, class_names, last_eval if eval_now else None)
            if preempted:
                logging.warning("Preempted: stopped at step %d with its checkpoint in %s; the same command "
                                "resumes from it", step, manager.directory)
                break
    finally:  # an interrupted run keeps every checkpoint it started writing
        preemption.close()
        manager.wait_until_finished()
        manager.close()
        logger.close()
    return last_eval


def evaluate_checkpoint(config, workdir: str) -> dict:
    """Evaluates the latest checkpoint in `workdir` with `config`'s data and views."""
    config_check.check_evaluation(config)
    model, metadata = checkpoint.restore_model(workdir, config=config)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    mesh = create_mesh(config.mesh_shape)
    params, batch_stats = jax.device_put((params, batch_stats), replicated(mesh))
    class_names = metadata.get("class_names") or input_pipeline.class_names(config.data)
    evaluator = evaluation.Evaluator(config, graphdef, mesh, class_names)
    return evaluator.evaluate(params, batch_stats, metadata["step"], workdir)
