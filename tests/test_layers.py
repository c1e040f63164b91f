"""Temporal mixing, pooling and resampling against hand-computed cases."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from blvnet_jax.layers import (TAM, TemporalShift, avg_pool_3x3_s2, nearest_indices, pair_taps, split_clips,
                               temporal_mix, upsample_nearest)


def reference_tam(clips: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Loop form of the TAM: out[t] = relu(sum_i w_i x[t + i - r//2]), zero outside the clip."""
    half = weights.shape[0] // 2
    out = np.zeros_like(clips)
    for t in range(clips.shape[1]):
        for i in range(weights.shape[0]):
            source = t + i - half
            if 0 <= source < clips.shape[1]:
                out[:, t] += weights[i] * clips[:, source]
    return np.maximum(out, 0)


def make_tam(channels, blending_frames, seed=0):
    tam = TAM(channels, blending_frames, rngs=nnx.Rngs(seed))
    return tam, np.asarray(tam.weight[...])


def test_tam_hand_computed_three_frames():
    tam, _ = make_tam(2, 3)
    tam.weight[...] = jnp.array([[1.0, 10.0], [100.0, 1000.0], [-1.0, 0.5]])  # prev, curr, next
    x = jnp.array([1.0, 2.0, 3.0])[:, None, None, None] * jnp.array([1.0, -1.0])  # (3 frames, 1, 1, 2)
    out = np.asarray(tam(x, clips=1))[:, 0, 0]
    # channel 0: t0 = 100*1 - 1*2 = 98; t1 = 1*1 + 100*2 - 3 = 198; t2 = 2 + 300 = 302 (no wrap to frame 0)
    # channel 1: t0 = -1000 - 1 = -1001 -> 0; t1 = -10 - 2000 - 1.5 -> 0; t2 = -20 - 3000 -> 0
    np.testing.assert_allclose(out, [[98.0, 0.0], [198.0, 0.0], [302.0, 0.0]])


@pytest.mark.parametrize("blending_frames", [3, 5, 7])
def test_tam_matches_loop_and_keeps_clips_apart(blending_frames):
    tam, weights = make_tam(4, blending_frames)
    clips = np.random.default_rng(1).standard_normal((2, 6, 3, 3, 4)).astype(np.float32)
    out = np.asarray(tam(jnp.asarray(clips.reshape(12, 3, 3, 4)), clips=2)).reshape(clips.shape)
    np.testing.assert_allclose(out, reference_tam(clips, weights), rtol=1e-5, atol=1e-6)
    changed = clips.copy()
    changed[1] += 5.0
    out_changed = np.asarray(tam(jnp.asarray(changed.reshape(12, 3, 3, 4)), clips=2)).reshape(clips.shape)
    np.testing.assert_array_equal(out_changed[0], out[0])


def test_temporal_modules_read_the_clip_length_from_their_input():
    """One module, no stored frame count: the same 12 frames as 1 clip of 12, 2 of 6 or 3 of 4."""
    tam, weights = make_tam(16, 3)
    frames = np.random.default_rng(4).standard_normal((12, 2, 2, 16)).astype(np.float32)
    shift = TemporalShift()
    for clips in (1, 2, 3):
        video = frames.reshape((clips, -1) + frames.shape[1:])
        out = np.asarray(tam(jnp.asarray(frames), clips)).reshape(video.shape)
        np.testing.assert_allclose(out, reference_tam(video, weights), rtol=1e-5, atol=1e-6)
        shifted = np.asarray(shift(jnp.asarray(frames), clips)).reshape(video.shape)
        np.testing.assert_array_equal(shifted[:, :-1, ..., :2], video[:, 1:, ..., :2])
        np.testing.assert_array_equal(shifted[:, -1, ..., :2], 0.0)  # no frame after a clip's last
        np.testing.assert_array_equal(shifted[:, 0, ..., 2:4], 0.0)  # nor before its first
    with pytest.raises(ValueError, match="12 frames do not split into 5 clips"):
        split_clips(jnp.asarray(frames), 5)


def test_tam_rejects_even_blending_frames():
    with pytest.raises(ValueError, match="odd"):
        TAM(4, 4, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("blending_frames", [3, 5, 7])
def test_tam_paired_equals_tam_on_duplicated_frames(blending_frames):
    tam, _ = make_tam(5, blending_frames, seed=blending_frames)
    pairs = jnp.asarray(np.random.default_rng(2).standard_normal((2 * 4, 2, 2, 5)), jnp.float32)
    duplicated = jnp.repeat(pairs, 2, axis=0)  # frames 2k and 2k+1 both hold pair k
    full = np.asarray(tam(duplicated, clips=2))
    little, big = tam.paired(pairs, clips=2)
    np.testing.assert_allclose(np.asarray(little), full[0::2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(big), full[1::2], rtol=1e-5, atol=1e-6)


def test_pair_taps_merge_weights_by_parity():
    prev, curr, nxt = np.array([1.0]), np.array([10.0]), np.array([100.0])
    (little_w, little_off), (big_w, big_off) = pair_taps(jnp.stack([prev, curr, nxt]))
    assert little_off == [-1, 0] and big_off == [0, 1]
    np.testing.assert_allclose(np.asarray(little_w)[:, 0], [1.0, 110.0])
    np.testing.assert_allclose(np.asarray(big_w)[:, 0], [11.0, 100.0])


def test_temporal_shift_hand_computed():
    channels = 16  # fold 2: channels 0-1 from the next frame, 2-3 from the previous, rest in place
    x = jnp.arange(1.0, 4.0)[:, None, None, None] * jnp.ones((3, 1, 1, channels))
    out = np.asarray(TemporalShift()(x, clips=1))[:, 0, 0]
    np.testing.assert_array_equal(out[:, 0], [2.0, 3.0, 0.0])
    np.testing.assert_array_equal(out[:, 2], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(out[:, 4], [1.0, 2.0, 3.0])


def test_temporal_shift_paired_equals_shift_on_duplicated_frames():
    shift = TemporalShift()
    pairs = jnp.asarray(np.random.default_rng(3).standard_normal((2 * 3, 2, 2, 16)), jnp.float32)
    full = np.asarray(shift(jnp.repeat(pairs, 2, axis=0), clips=2))
    little, big = shift.paired(pairs, clips=2)
    np.testing.assert_allclose(np.asarray(little), full[0::2], atol=1e-6)
    np.testing.assert_allclose(np.asarray(big), full[1::2], atol=1e-6)


def test_temporal_mix_asymmetric_offsets():
    x = jnp.arange(1.0, 5.0)[None, :, None, None, None]  # one clip, frames 1..4
    out = np.asarray(temporal_mix(x, jnp.array([[1.0], [10.0]]), [0, 2]))[0, :, 0, 0, 0]
    np.testing.assert_allclose(out, [1 + 30, 2 + 40, 3, 4])


def test_avg_pool_counts_padding():
    out = np.asarray(avg_pool_3x3_s2(jnp.ones((1, 4, 4, 1))))[0, :, :, 0]
    np.testing.assert_allclose(out, [[4 / 9, 6 / 9], [6 / 9, 9 / 9]])


def test_nearest_indices_like_pytorch():
    np.testing.assert_array_equal(nearest_indices(4, 7), [0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(nearest_indices(13, 25)[:6], [0, 0, 1, 1, 2, 2])
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(np.asarray(upsample_nearest(x, 4, 4))[0, :, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    odd = np.asarray(upsample_nearest(jnp.arange(4.0).reshape(1, 4, 1, 1), 7, 1))[0, :, 0, 0]
    np.testing.assert_array_equal(odd, [0, 0, 1, 1, 2, 2, 3])
