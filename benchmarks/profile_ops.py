"""Where a compiled step spends its time: thread time per XLA op, from a `jax.profiler` trace.

    python -m benchmarks.profile_ops --config=configs/ssv1_8x2.py --mode=train --batch_size=2 \\
        [--top=30] [--group=category]

Traces `--steps` calls after warm-up and sums the duration of every XLA op event over all threads
(so with 2 cores the total can reach twice the wall time). `--group=category` adds ops up by
kind (convolution, dot, transpose, fusion, ...). Reading the trace needs TensorFlow's xplane
protobuf (`tensorflow-cpu`, already a dependency of the input pipeline).
"""
from blvnet_jax import cli, xla_env

xla_env.configure()

import collections  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import speed  # noqa: E402


def op_category(name: str) -> str:
    """`'transpose.12'` -> `'transpose'`; fusions keep their kind (`'loop_fusion'`)."""
    return re.sub(r"[._]\d+$", "", name.split(" ")[0])


def op_times(xplane_file: str) -> collections.Counter:
    """Total microseconds per XLA op name over every host thread of the trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415 - optional, heavy.
    space = xplane_pb2.XSpace()
    with open(xplane_file, "rb") as file:
        space.ParseFromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                stats = {stat_names.get(s.metadata_id) for s in event.stats}
                if "hlo_op" in stats or "hlo_module" in stats:
                    totals[names.get(event.metadata_id, "?")] += event.duration_ps / 1e6
    return totals


FLAGS = flags.FLAGS


def main(argv):
    del argv
    result, run = speed.build(FLAGS.config, FLAGS.mode, FLAGS.batch_size)
    for _ in range(2):
        run()
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir):
            for _ in range(FLAGS.steps):
                run()
        totals = op_times(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0])
    if FLAGS.group == "category":
        grouped = collections.Counter()
        for name, micros in totals.items():
            grouped[op_category(name)] += micros
        totals = grouped
    total = sum(totals.values())
    print(f"{result['model']} {FLAGS.mode} batch {FLAGS.batch_size}: {total / 1e3 / FLAGS.steps:.0f} ms "
          f"of op time per call (all threads)")
    for name, micros in totals.most_common(FLAGS.top):
        print(f"{micros / 1e3 / FLAGS.steps:9.1f} ms {100 * micros / total:5.1f}%  {name}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file describing the model.", lock_config=True)
    flags.DEFINE_enum("mode", "train", ["infer", "train"], "Forward pass only, or the full train step.")
    flags.DEFINE_integer("batch_size", 2, "Clips per call.")
    flags.DEFINE_integer("steps", 2, "Traced calls.")
    flags.DEFINE_integer("top", 30, "Lines to print.")
    flags.DEFINE_enum("group", "op", ["op", "category"], "Sum per op, or per kind of op.")
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=cli.parse_flags)
