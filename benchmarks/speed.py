"""Throughput of the jitted forward pass or of the full train step, after warm-up.

    python -m benchmarks.speed --config=configs/ssv1_8x2.py [--config.model.name=tsn ...] \\
        --mode=infer|train --batch_size=N [--repeats=5] [--json]

`infer`: the eval-mode forward pass (uint8 clips in, logits out, normalisation included).
`train`: the training program (`steps.build_train_step`: forward, loss, backward and the config's
optimizer update, state donated) on a batch as the input pipeline makes it.
Inputs are put on the device once, before timing (host-to-device transfer excluded). Prints the
median of `--repeats` timed calls and the achieved GFLOP/s from XLA's cost analysis of the
compiled program; with `--json` the last line is `{"clips_per_s", "median_s", "gflops_per_s", ...}`.

On a CPU run the XLA:CPU flags and huge pages of `blvnet_jax.xla_env` are applied first (the
process restarts itself once to get huge pages); `BLVNET_XLA_ENV=0` measures XLA's defaults instead.
"""
from blvnet_jax import xla_env

xla_env.configure()

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import programs  # noqa: E402


def random_batch(config, batch_size: int, mode: str) -> dict:
    """Random inputs of one call, on the device. `infer`: uint8 clips `(batch, frames, crop,
    crop, channels)`; `train`: those and int32 labels `(batch,)`, a batch as the input pipeline
    makes it for `config.data` (`input_pipeline.train_batch_shapes`)."""
    model_config = config.model
    rng = np.random.default_rng(0)
    crop = config.data.crop_size
    video = rng.integers(0, 256, (batch_size, model_config.num_frames, crop, crop, model_config.input_channels),
                         dtype=np.uint8)
    batch = {"video": video}
    if mode == "train":
        batch["label"] = rng.integers(0, model_config.num_classes, batch_size).astype(np.int32)
    return jax.device_put(batch)


def build(config, mode: str, batch_size: int):
    """Compiles the `mode` program for `config` at `batch_size`.

    Returns `(info, run)`: `info` describes the program (model, compile time, XLA's FLOPs per
    call) and `run()` makes one call and waits for its result.
    """
    batch = random_batch(config, batch_size, mode)
    start = time.perf_counter()
    _, compiled, run = programs.compile_program(config, mode, batch)
    info = {"model": config.model.name, "depth": config.model.depth,
            "num_frames": config.model.num_frames, "crop_size": config.data.crop_size,
            "dtype": config.model.dtype, "mode": mode, "batch_size": batch_size,
            "compile_s": time.perf_counter() - start, "gflops_per_call": programs.xla_flops(compiled) / 1e9,
            "device": str(jax.devices()[0].device_kind), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    return info, run


def benchmark(config, mode: str, batch_size: int, repeats: int = 5, warmup: int = 2) -> dict:
    """`build`'s info plus the timings: clips/s and seconds of the median call, GFLOP/s."""
    info, run = build(config, mode, batch_size)
    times = programs.time_calls(run, repeats, warmup)
    median = statistics.median(times)
    return {**info, "clips_per_s": batch_size / median, "median_s": median,
            "gflops_per_s": info["gflops_per_call"] / median, "times_s": times}


FLAGS = flags.FLAGS


def define_flags():
    config_flags.DEFINE_config_file("config", None, "Config file describing the model.", lock_config=True)
    flags.DEFINE_enum("mode", "infer", ["infer", "train"], "Forward pass only, or the full train step.")
    flags.DEFINE_integer("batch_size", 1, "Clips per call.")
    flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")
    flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
    flags.DEFINE_bool("json", False, "End with one JSON line of the figures.")


def main(argv):
    del argv
    result = benchmark(FLAGS.config, FLAGS.mode, FLAGS.batch_size, FLAGS.repeats, FLAGS.warmup)
    print(f"{result['model']}-{result['depth']} {result['num_frames']}f {result['crop_size']}px "
          f"{result['dtype']} {result['mode']} batch {result['batch_size']} on {result['device']}: "
          f"{result['clips_per_s']:.3f} clips/s (median {result['median_s'] * 1e3:.0f} ms of "
          f"{', '.join(f'{t * 1e3:.0f}' for t in result['times_s'])}), "
          f"{result['gflops_per_s']:.0f} GFLOP/s, compile {result['compile_s']:.0f} s")
    if FLAGS.json:
        print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("config")
    app.run(main)
