"""The performance rewrites in `layers` and the model switches for them equal their plain definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from blvnet_jax import layers, steps
from blvnet_jax.models import create_model
from configs import demo


@pytest.mark.parametrize("in_channels,out_channels", [(8, 24), (24, 8)])
def test_pointwise_gradients_match_autodiff(in_channels, out_channels):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 5, 3, in_channels))
    kernel = jax.random.normal(keys[1], (in_channels, out_channels))
    grad = jax.random.normal(keys[2], (2, 5, 3, out_channels))
    expected = jax.vjp(lambda x, k: jnp.einsum("nhwi,io->nhwo", x, k), x, kernel)[1](grad)
    got = jax.vjp(layers.pointwise, x, kernel)[1](grad)
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blending_frames", [3, 5])
def test_parity_mix_is_temporal_mix_at_even_and_odd_frames(blending_frames):
    clips, frames, channels = 2, 8, 4
    x = jax.random.normal(jax.random.key(0), (clips, frames, 3, 3, channels))
    weights = jax.random.normal(jax.random.key(1), (blending_frames, channels))
    half = blending_frames // 2
    full = layers.temporal_mix(x, weights, range(-half, half + 1))
    even, odd = layers.parity_mix(x, weights)
    np.testing.assert_allclose(even, full[:, 0::2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(odd, full[:, 1::2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_as_dot_equals_convolution(stride):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 7, 6, 8))
    kernel = jax.random.normal(keys[1], (1, 1, 8, 12))
    results = []
    for as_dot in (True, False):
        out, vjp = jax.vjp(lambda x, k, as_dot=as_dot: layers.conv2d(x, k, stride, as_dot), x, kernel)
        results.append((out, *vjp(jax.random.normal(keys[2], out.shape))))
    assert results[0][0].shape == (2, -(-7 // stride), -(-6 // stride), 12)
    for dot, conv in zip(*results):
        np.testing.assert_allclose(dot, conv, rtol=1e-5, atol=1e-5)


def test_model_switches_for_xla_cpu_change_no_values():
    """bLVNet-TAM with 1x1 convolutions as dots and the stem recomputed (the defaults) trains like
    the plain definitions: same loss, gradient norm, parameters and batch statistics after one step."""
    batch = {"video": np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8),
             "label": np.array([1, 0])}
    config = demo.get_config().model
    config.update(dict(width=8, num_frames=4, num_classes=3, dropout=0.0))
    optimizer = optax.sgd(0.1)
    _, state = steps.init_train_state(create_model(config, rngs=nnx.Rngs(0)), optimizer)
    results = []
    for switch in (True, False):
        config.update(dict(pointwise_as_dot=switch, recompute_stem=switch))
        abstract_model = nnx.eval_shape(lambda: create_model(config, rngs=nnx.Rngs(0)))
        graphdef, _ = steps.init_train_state(abstract_model, optimizer)
        results.append(jax.jit(steps.make_train_step(graphdef, optimizer))(state, batch, jax.random.key(0)))
    (fast_state, fast_metrics), (plain_state, plain_metrics) = results
    for name in ("loss", "grad_norm"):
        np.testing.assert_allclose(fast_metrics[name], plain_metrics[name], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 (fast_state.params, fast_state.batch_stats), (plain_state.params, plain_state.batch_stats))
