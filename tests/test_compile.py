"""The train and eval steps build for hardware this machine lacks: lowered for CUDA and TPU, and
compiled for a 4-chip TPU v5e (`v5e:2x2`, batch over `data`) by libtpu's compiler on the CPU.

The compiled data-parallel bfloat16 train step reduces only float32 gradients over devices
(XLA:CPU upcasts bfloat16 collectives, so only a TPU compile shows their dtype) and moves no
data with all-to-all.
"""
import jax
import jax.numpy as jnp
import pytest

from benchmarks.tpu_compile import collective_census, eval_program, topology_mesh, train_program
from blvnet_jax import steps
from configs import demo, ssv1_8x2

TPU_TOPOLOGY = "v5e:2x2"
V5E_HBM_BYTES = 16 * 2**30


def tiny_config(dtype="float32"):
    config = demo.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=3, dtype=dtype))
    config.data.crop_size = 32
    config.batch_size = 2
    return config


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_and_eval_steps_lower_for_cuda_and_tpu_without_custom_calls(dtype):
    """Lowering for a platform needs no device of it; a custom call would tie the program to
    a kernel library that platform may lack."""
    config = tiny_config(dtype)
    train_step, state, batch, rng = train_program(config)
    eval_step, params, batch_stats, video = eval_program(config, 2)
    for traced in (train_step.trace(state, batch, rng), eval_step.trace(params, batch_stats, video)):
        for platform in ("cuda", "tpu"):
            module = traced.lower(lowering_platforms=(platform,)).as_text()
            assert "stablehlo.convolution" in module
            assert "custom_call" not in module


@pytest.fixture(scope="module")
def tpu_mesh():
    mesh = topology_mesh(TPU_TOPOLOGY, (4, 1))
    assert mesh.devices.size == 4 and all(device.platform == "tpu" for device in mesh.devices.flat)
    return mesh


@pytest.fixture(scope="module")
def bfloat16_train_step(tpu_mesh):
    """The width-16 bfloat16 bLVNet-TAM train step (demo model, crop 32) compiled for the TPU
    mesh, 2 clips per chip, and its parameter count."""
    config = demo.get_config()
    config.model.dtype = "bfloat16"
    config.data.crop_size = 32
    config.batch_size = 8
    train_step, state, batch, rng = train_program(config, tpu_mesh)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    return train_step.lower(state, batch, rng).compile(), num_params


@pytest.fixture(scope="module")
def full_size_eval_step(tpu_mesh):
    """`configs/ssv1_8x2.py`'s eval step (bLVNet-TAM-50, 16 frames, 224 crop, 174 classes)
    compiled for the TPU mesh, one clip per chip."""
    eval_step, params, batch_stats, video = eval_program(ssv1_8x2.get_config(), 4, tpu_mesh)
    return eval_step.lower(params, batch_stats, video).compile()


def test_collective_census_reads_tuple_all_reduces():
    hlo = ("  %all-reduce.5 = (bf16[2,16]{1,0:T(2,128)(2,1)S(1)}, f32[3,3,8,8]{3,2,1,0}) all-reduce(%a, %b), "
           "channel_id=1\n  ROOT %r = f32[7]{0} all-reduce(%c), to_apply=%add\n")
    assert collective_census(hlo) == {("all-reduce", "bf16"): 32, ("all-reduce", "f32"): 576 + 7}


@pytest.mark.tpu_compile
def test_bfloat16_train_step_reduces_float32_gradients_on_tpu(bfloat16_train_step):
    """Every gradient (and batch statistic) is summed over the data axis in float32: at least one
    element per parameter, none of another type."""
    compiled, num_params = bfloat16_train_step
    census = collective_census(compiled.as_text())
    reduced = {key: count for key, count in census.items() if key[0] in ("all-reduce", "reduce-scatter")}
    assert {element_type for _, element_type in reduced} == {"f32"}, census
    assert sum(reduced.values()) >= num_params


@pytest.mark.tpu_compile
def test_data_parallel_train_step_has_no_all_to_all(bfloat16_train_step):
    compiled, _ = bfloat16_train_step
    assert not any(opcode == "all-to-all" for opcode, _ in collective_census(compiled.as_text()))


@pytest.mark.tpu_compile
def test_full_size_eval_step_compiles_for_tpu_and_fits_a_chip(full_size_eval_step):
    memory = steps.memory_figures(full_size_eval_step)
    assert 0 < memory["step_bytes"] < V5E_HBM_BYTES
    assert memory["argument_bytes"] > 25e6 * 4  # the float32 parameters of bLVNet-TAM-50
    logits, = jax.tree.leaves(full_size_eval_step.out_info)
    assert logits.shape == (4, 174) and logits.dtype == jnp.float32
