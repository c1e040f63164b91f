"""What checkpoint verification costs: save and restore of a full-size train state, with and
without the digests and checks of `blvnet_jax.integrity`.

    python -m benchmarks.checkpoint_cost [--config=ssv1_8x2] [--rounds=5] [--workdir=/tmp/blvnet_checkpoint_cost]

The state is the config's model (bLVNet-TAM-50 by default: 25M parameters) with its optimizer
state, on this machine's devices. Per round: a synchronous save as training writes it (digests
taken, then Orbax's write; the digests timed alone too), and a restore read back three ways:
Orbax alone, `checkpoint.read_step` (digests recomputed and compared, finiteness checked), and the
verification alone. Prints medians over `--rounds` and the load average, then a JSON line.
"""
import importlib
import json
import os
import shutil
import statistics
import time

import jax
import optax
from absl import app, flags
from flax import nnx

from blvnet_jax import checkpoint, integrity, steps
from blvnet_jax.models import create_model

FLAGS = flags.FLAGS


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def measure(config_name: str, rounds: int, workdir: str) -> dict:
    config = importlib.import_module(f"configs.{config_name}").get_config()
    optimizer = steps.make_optimizer(config, optax.constant_schedule(0.01))
    _, state = steps.init_train_state(create_model(config.model, rngs=nnx.Rngs(0)), optimizer)
    items = checkpoint.train_state_items(state)
    abstract = checkpoint.train_state_items(jax.tree.map(checkpoint.ocp.utils.to_shape_dtype_struct, state))
    metadata = checkpoint.metadata_of(config, None)
    size = sum(leaf.nbytes for leaf in jax.tree.leaves(items))
    shutil.rmtree(workdir, ignore_errors=True)
    times = {name: [] for name in ("digests", "save", "restore_orbax", "restore_verified", "verify")}
    with checkpoint.open_manager(workdir) as manager:
        for step in range(rounds):
            times["digests"].append(timed(lambda: integrity.digests_of(items, metadata))[0])
            times["save"].append(timed(lambda: (manager.save(step, args=checkpoint.save_args(items, metadata)),
                                                manager.wait_until_finished()))[0])
            orbax_seconds, restored = timed(lambda: manager.restore(step, args=checkpoint.ocp.args.Composite(
                **{name: checkpoint.ocp.args.StandardRestore(tree) for name, tree in abstract.items()},
                metadata=checkpoint.ocp.args.JsonRestore(), digests=checkpoint.ocp.args.JsonRestore())))
            times["restore_orbax"].append(orbax_seconds)
            times["restore_verified"].append(timed(lambda: checkpoint.read_step(manager, step, abstract))[0])
            arrays = {name: restored[name] for name in abstract}
            seconds, problem = timed(lambda: integrity.problems(arrays, restored["metadata"], restored["digests"]))
            assert problem is None, problem
            times["verify"].append(seconds)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"config": config_name, "state_bytes": size, "rounds": rounds, "load_average": os.getloadavg()[0],
            **{name: statistics.median(values) for name, values in times.items()}}


def main(argv):
    del argv
    figures = measure(FLAGS.config, FLAGS.rounds, FLAGS.workdir)
    mb = figures["state_bytes"] / 1e6
    print(f"{figures['config']}: train state {mb:.0f} MB, median of {figures['rounds']} rounds, "
          f"load average {figures['load_average']:.2f}")
    print(f"  save (digests + Orbax write):  {figures['save']:.2f} s, of which digests {figures['digests']:.2f} s "
          f"({figures['digests'] / figures['save']:.0%}, {mb / figures['digests']:.0f} MB/s)")
    print(f"  restore, Orbax alone:          {figures['restore_orbax']:.2f} s")
    print(f"  restore, verified (read_step): {figures['restore_verified']:.2f} s; verification alone "
          f"{figures['verify']:.2f} s ({figures['verify'] / figures['restore_orbax']:.0%} of Orbax's restore)")
    print(json.dumps(figures))


if __name__ == "__main__":
    flags.DEFINE_string("config", "ssv1_8x2", "A module of configs/ whose model and optimizer are saved.")
    flags.DEFINE_integer("rounds", 5, "Save/restore rounds; medians are printed.")
    flags.DEFINE_string("workdir", "/tmp/blvnet_checkpoint_cost", "Scratch folder (emptied).")
    app.run(main)
