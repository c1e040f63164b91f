"""Model size and cost: parameters, multiply-adds per clip, compiled train-step memory.

    python -m blvnet_jax.summary --config=configs/ssv1_8x2.py [--config.a.b=v ...] [--json]

Multiply-adds ("FLOPs" in the paper) are counted from the traced forward pass: every convolution
and matrix product at `config.data.crop_size`, one clip. The memory figure is XLA's analysis of
the compiled training program (`steps.build_train_step`: forward, loss, backward and the config's
optimizer update) at batch 1: arguments + outputs + temporaries - aliased.
"""
import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from blvnet_jax import cli, steps
from blvnet_jax.models import create_model


def count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def equation_macs(eqn) -> int:
    """Multiply-adds of one convolution or dot_general equation, 0 for anything else."""
    out_size = int(np.prod(eqn.outvars[0].aval.shape))
    if eqn.primitive.name == "conv_general_dilated":
        kernel = eqn.invars[1].aval.shape
        out_channels = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
        return out_size * int(np.prod(kernel)) // out_channels
    if eqn.primitive.name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return out_size * int(np.prod([lhs[d] for d in lhs_contract]))
    return 0


def jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += equation_macs(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += jaxpr_macs(sub)
    return total


def count_macs(model: nnx.Module, video_shape: tuple) -> int:
    """Multiply-adds of the eval-mode forward pass on one input of `video_shape`."""
    model.eval()
    graphdef, state = nnx.split(model)
    closed = jax.make_jaxpr(lambda state, video: nnx.merge(graphdef, state)(video))(
        state, jax.ShapeDtypeStruct(video_shape, jnp.float32))
    return jaxpr_macs(closed.jaxpr)


def compiled_train_step(config, batch_size: int):
    """`config`'s training program (`steps.build_train_step`, `steps.measurement_schedule`)
    compiled for `batch_size` uint8 clips `(batch, frames, crop, crop, channels)` and their labels."""
    model = create_model(config.model, rngs=nnx.Rngs(0))
    _, state, train_step = steps.build_train_step(config, model, steps.measurement_schedule(config))
    crop = config.data.crop_size
    batch = {"video": jax.ShapeDtypeStruct(
                 (batch_size, config.model.num_frames, crop, crop, config.model.input_channels), jnp.uint8),
             "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return train_step.lower(abstract_state, batch, jax.random.key(0)).compile()


def train_step_bytes(config, batch_size: int) -> dict:
    """XLA memory analysis (`steps.memory_figures`) of `compiled_train_step(config, batch_size)`."""
    return steps.memory_figures(compiled_train_step(config, batch_size))


def summarize(config, with_memory: bool = True, batch_size: int = 1) -> dict:
    """`{'params', 'gmacs', 'train_step_bytes', ...}` for the model of `config` at its crop size:
    GMACs per clip, train-step memory at `batch_size` clips."""
    model_config = config.model
    video_shape = (1, model_config.num_frames, config.data.crop_size, config.data.crop_size,
                   model_config.input_channels)
    model = nnx.eval_shape(lambda: create_model(model_config, rngs=nnx.Rngs(0)))
    result = {"model": model_config.name, "depth": model_config.depth,
              "num_frames": model_config.num_frames, "crop_size": config.data.crop_size,
              "params": count_params(model), "gmacs": count_macs(model, video_shape) / 1e9,
              "batch_size": batch_size}
    if with_memory:
        memory = train_step_bytes(config, batch_size)
        result["train_step_bytes"] = memory.pop("step_bytes")
        result.update(memory)
    return result


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    config_flags.DEFINE_config_file("config", None, "Config file describing the model.", lock_config=True)
    flags.DEFINE_bool("json", False, "End with one JSON line of the figures.")
    flags.DEFINE_bool("memory", True, "Compile a train step to measure its memory (slower for big models).")


def main(argv):
    del argv
    result = summarize(FLAGS.config, with_memory=FLAGS.memory)
    print(f"{result['model']}-{result['depth']}, {result['num_frames']} frames at {result['crop_size']}: "
          f"{result['params'] / 1e6:.2f}M params, {result['gmacs']:.1f} GMACs per clip")
    if "train_step_bytes" in result:
        print(f"train step at batch 1: {result['train_step_bytes'] / 2**20:.0f} MiB "
              f"(arguments {result['argument_bytes'] / 2**20:.0f}, outputs {result['output_bytes'] / 2**20:.0f}, "
              f"temporaries {result['temp_bytes'] / 2**20:.0f}, aliased {result['alias_bytes'] / 2**20:.0f})")
    if FLAGS.json:
        print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("config")
    app.run(main, flags_parser=cli.parse_flags)
