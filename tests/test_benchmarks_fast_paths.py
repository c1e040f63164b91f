"""The performance rewrites in `layers` equal their plain definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blvnet_jax import layers


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
    x = jax.random.normal(jax.random.key(0), (clips * frames, 3, 3, channels))
    weights = jax.random.normal(jax.random.key(1), (blending_frames, channels))
    half = blending_frames // 2
    full = layers.temporal_mix(x.reshape(clips, frames, 3, 3, channels), weights, range(-half, half + 1))
    even, odd = layers.parity_mix(x, weights, frames)
    np.testing.assert_allclose(even, full[:, 0::2].reshape(even.shape), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(odd, full[:, 1::2].reshape(odd.shape), rtol=1e-6, atol=1e-6)
