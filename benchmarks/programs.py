"""The programs the speed benchmarks time, compiled for one device: the eval step (`infer`) and
the training program (`train`, `steps.build_train_step`).

Imports jax, flax and the model code only: `benchmarks.device` runs on machines without
TensorFlow or ml_collections.
"""
import time

import jax
from flax import nnx

from blvnet_jax import steps
from blvnet_jax.models import create_model


def compile_program(config, mode: str, batch: dict):
    """Compiles the `mode` program of `config` for `batch` (device arrays, `video` and for `train`
    the rest of a training batch). Returns `(lowered, compiled, run)`; `run()` makes one call and
    waits for its result."""
    model = create_model(config.model, rngs=nnx.Rngs(config.seed))
    if mode == "infer":
        model.eval()
        graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        lowered = jax.jit(steps.make_eval_step(graphdef)).lower(params, batch_stats, batch["video"])
        compiled = lowered.compile()

        def run():
            compiled(params, batch_stats, batch["video"]).block_until_ready()
    elif mode == "train":
        _, state, train_step = steps.build_train_step(config, model, steps.measurement_schedule(config))
        rng = jax.random.key(config.seed)
        lowered = train_step.lower(state, batch, rng)
        compiled = lowered.compile()
        holder = [state]

        def run():
            holder[0], metrics = compiled(holder[0], batch, rng)
            jax.block_until_ready((holder[0], metrics))
    else:
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    return lowered, compiled, run


def xla_flops(stage) -> float:
    """FLOPs of one call by XLA's cost analysis of a compiled (or lowered) program; 0.0 if none."""
    try:
        cost = stage.cost_analysis()
    except NotImplementedError:
        return 0.0
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def time_calls(run, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of `repeats` calls of `run()` (which blocks) after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times
