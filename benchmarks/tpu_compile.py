"""Compile the training program for a TPU slice on this CPU machine and count what it moves
between chips: the collectives of the compiled HLO by opcode and element type, and the memory
one chip needs.

    python -m benchmarks.tpu_compile [--config=ssv1_8x2] [--topology=v5e:2x4] [--mesh=4,2] \\
        [--batch_size=8] [--dtype=bfloat16] [--eval]

libtpu (tests' requirements: the version `jax[tpu]` pins) compiles for
`jax.experimental.topologies.get_topology_desc(topology)` without a TPU. The mesh is `(data,
frames)`: frames > 1 splits each clip's frames over chips (`steps.split_frames`), where the
temporal modules' halos must travel as collective-permute, with no all-gather of the clip and no
all-to-all. Prints the census and the compile time, then a JSON line. `tests/test_compile.py`
uses the same programs at small sizes.
"""
import collections
import importlib
import json
import os
import re
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # libtpu would otherwise look for a local TPU
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import input_pipeline  # noqa: E402
from blvnet_jax import steps  # noqa: E402
from blvnet_jax.models import create_model  # noqa: E402
from blvnet_jax.sharding import batch_sharding, replicated  # noqa: E402


def abstract(tree, sharding=None):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def train_program(config, mesh=None):
    """`(jitted train step, abstract state, abstract batch, rng)` of `config`, placed on `mesh`."""
    model = nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0)))
    _, state, train_step = steps.build_train_step(config, model, optax.constant_schedule(0.01), mesh)
    shapes = input_pipeline.train_batch_shapes(config.data, config.model.num_frames, config.batch_size)
    batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=mesh and batch_sharding(mesh, key))
             for key, (shape, dtype) in shapes.items()}
    return train_step, abstract(state, mesh and replicated(mesh)), batch, jax.random.key(0)


def eval_program(config, num_clips, mesh=None):
    """`(jitted eval step, abstract params, abstract batch statistics, abstract uint8 video)`."""
    model = nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    crop = config.data.crop_size
    video = jax.ShapeDtypeStruct((num_clips, config.model.num_frames, crop, crop, 3), jnp.uint8,
                                 sharding=mesh and batch_sharding(mesh, "video"))
    placement = {} if mesh is None else {"out_shardings": NamedSharding(mesh, PartitionSpec("data"))}
    eval_step = jax.jit(steps.make_eval_step(graphdef), **placement)
    return (eval_step, abstract(params, mesh and replicated(mesh)),
            abstract(batch_stats, mesh and replicated(mesh)), video)


COLLECTIVE = re.compile(r"=\s+(.+?)\s+(all-reduce|all-reduce-start|reduce-scatter|all-to-all|all-gather|"
                        r"all-gather-start|collective-permute|collective-permute-start)\(")


def collective_census(hlo_text: str) -> collections.Counter:
    """Elements moved per (collective opcode, element type) in compiled HLO text; a tuple-shaped
    collective (XLA combines small ones) counts each of its operands."""
    census = collections.Counter()
    for match in COLLECTIVE.finditer(hlo_text):
        result_type, opcode = match.groups()
        for element_type, dims in re.findall(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]", result_type):
            census[opcode.removesuffix("-start"), element_type] += int(np.prod([int(d) for d in dims.split(",") if d]))
    return census


ELEMENT_BYTES = collections.defaultdict(lambda: 4, {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4,
                                                   "s8": 1, "u8": 1, "pred": 1})


def topology_mesh(topology: str, mesh_shape: tuple[int, int]) -> Mesh:
    """A `(data, frames)` mesh over the chips of a TPU topology (no TPU needed)."""
    devices = topologies.get_topology_desc(topology, "tpu").devices
    return Mesh(np.array(devices).reshape(mesh_shape), ("data", "frames"))


def census_table(census: collections.Counter) -> list[str]:
    """One line per (opcode, element type): elements and MiB moved."""
    return [f"  {opcode:<20} {element_type:<5} {count:>14,} elements "
            f"({count * ELEMENT_BYTES[element_type] / 2**20:,.1f} MiB)"
            for (opcode, element_type), count in sorted(census.items())]


def main(argv):
    del argv
    config = importlib.import_module(f"configs.{FLAGS.config}").get_config()
    config.model.dtype = FLAGS.dtype
    mesh_shape = tuple(int(size) for size in FLAGS.mesh)
    config.mesh_shape = mesh_shape
    config.batch_size = FLAGS.batch_size
    mesh = topology_mesh(FLAGS.topology, mesh_shape)
    started = time.perf_counter()
    if FLAGS.eval:
        step, params, batch_stats, video = eval_program(config, FLAGS.batch_size, mesh)
        compiled = step.lower(params, batch_stats, video).compile()
    else:
        step, state, batch, rng = train_program(config, mesh)
        compiled = step.lower(state, batch, rng).compile()
    seconds = time.perf_counter() - started
    census = collective_census(compiled.as_text())
    memory = steps.memory_figures(compiled)
    program = "eval" if FLAGS.eval else "train"
    print(f"{FLAGS.config} {program} step, {FLAGS.dtype}, batch {FLAGS.batch_size} on {FLAGS.topology} as mesh "
          f"(data, frames) = {mesh_shape}: compiled in {seconds:.0f} s (load average {os.getloadavg()[0]:.1f}); "
          f"{memory['step_bytes'] / 2**30:.2f} GiB per chip")
    print("\n".join(census_table(census)))
    print(json.dumps({"config": FLAGS.config, "program": program, "dtype": FLAGS.dtype, "topology": FLAGS.topology,
                      "mesh": list(mesh_shape), "batch_size": FLAGS.batch_size, "compile_seconds": seconds,
                      "step_bytes": memory["step_bytes"],
                      "collectives": {f"{opcode} {element_type}": count
                                      for (opcode, element_type), count in census.items()}}))


if __name__ == "__main__":
    FLAGS = flags.FLAGS
    flags.DEFINE_string("config", "ssv1_8x2", "A module of configs/.")
    flags.DEFINE_string("topology", "v5e:2x4", "TPU topology to compile for.")
    flags.DEFINE_list("mesh", ["4", "2"], "(data, frames) sizes; their product is the topology's chip count.")
    flags.DEFINE_integer("batch_size", 8, "Global batch (clips).")
    flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "config.model.dtype.")
    flags.DEFINE_bool("eval", False, "Compile the eval step instead of the train step.")
    app.run(main)
