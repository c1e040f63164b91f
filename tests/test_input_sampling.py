"""Frame-index rules, hand-computed for every branch."""
import numpy as np
import pytest

from input_pipeline import sampling


@pytest.mark.parametrize("video_frames, num_frames, num_clips, expected", [
    # L > n, one clip: tick 2.5, offset 0, index int(1.25 + 2.5 x).
    (20, 8, 1, [[1, 3, 6, 8, 11, 13, 16, 18]]),
    # Three clips: offsets -1, 0, 1 inside [-1.25, 1.25).
    (20, 8, 3, [[0, 2, 5, 7, 10, 12, 15, 17], [1, 3, 6, 8, 11, 13, 16, 18],
                [2, 4, 7, 9, 12, 14, 17, 19]]),
    # tick 1.25: offset -1 clamps to -0.625, offset 1 to 0.625 - 1e-4.
    (10, 8, 3, [[0, 1, 2, 3, 5, 6, 7, 8], [0, 1, 3, 4, 5, 6, 8, 9], [1, 2, 3, 4, 6, 7, 8, 9]]),
    # Even clip counts: range((-4) // 2 + 1, 4 // 2 + 1) = -1, 0, 1, 2.
    (40, 4, 4, [[4, 14, 24, 34], [5, 15, 25, 35], [6, 16, 26, 36], [7, 17, 27, 37]]),
    # Two clips: offsets 0 and 1.
    (40, 4, 2, [[5, 15, 25, 35], [6, 16, 26, 36]]),
])
def test_uniform_eval_indices_long_videos(video_frames, num_frames, num_clips, expected):
    np.testing.assert_array_equal(
        sampling.uniform_eval_indices(video_frames, num_frames, num_clips), expected)


@pytest.mark.parametrize("video_frames, num_frames, num_clips", [(5, 8, 2), (8, 8, 1), (1, 4, 1),
                                                                 (3, 3, 3)])
def test_uniform_eval_indices_short_videos_use_seeded_choice(video_frames, num_frames,
                                                             num_clips):
    expected = [np.sort(np.random.RandomState(clip).choice(video_frames, num_frames))
                for clip in range(num_clips)]
    np.testing.assert_array_equal(
        sampling.uniform_eval_indices(video_frames, num_frames, num_clips), expected)


def test_uniform_eval_indices_short_video_literal_values():
    np.testing.assert_array_equal(sampling.uniform_eval_indices(5, 8, 2),
                                  [[0, 1, 2, 3, 3, 3, 3, 4], [0, 0, 0, 1, 1, 3, 3, 4]])
    np.testing.assert_array_equal(sampling.uniform_eval_indices(1, 4, 1), [[0, 0, 0, 0]])


def test_uniform_train_shares_one_offset_by_default():
    offsets = set()
    for seed in range(50):
        indices = sampling.uniform_train_indices(20, 8, np.random.default_rng(seed))
        offset = indices - 2 * np.arange(8)  # Segments of 20 // 8 = 2 frames.
        assert len(set(offset)) == 1 and 0 <= offset[0] < 2
        offsets.add(offset[0])
    assert offsets == {0, 1}


def test_uniform_train_independent_offsets():
    rng = np.random.default_rng(0)
    draws = np.stack([sampling.uniform_train_indices(40, 8, rng, independent_offsets=True)
                      for _ in range(20)])
    offsets = draws - 5 * np.arange(8)
    assert offsets.min() >= 0 and offsets.max() < 5
    assert any(len(set(row)) > 1 for row in offsets)


def test_uniform_train_short_video_draws_sorted_with_replacement():
    indices = sampling.uniform_train_indices(3, 8, np.random.default_rng(0))
    assert len(indices) == 8 and np.all(np.diff(indices) >= 0)
    assert indices.min() >= 0 and indices.max() < 3


def test_dense_train_random_start_and_wrap():
    starts = set()
    for seed in range(100):
        indices = sampling.dense_train_indices(40, 8, 2, np.random.default_rng(seed))
        np.testing.assert_array_equal(indices, indices[0] + 2 * np.arange(8))
        starts.add(int(indices[0]))
    assert starts <= set(range(24)) and len(starts) > 12  # Start in [0, 40 - 16).
    np.testing.assert_array_equal(sampling.dense_train_indices(10, 8, 2, np.random.default_rng(0)),
                                  [0, 2, 4, 6, 8, 0, 2, 4])


def test_dense_eval_evenly_spaced_clips():
    # Starts linspace(0, 1 + 40 - 2 * 4 - 1, 3) = 0, 16, 32.
    np.testing.assert_array_equal(sampling.dense_eval_indices(40, 4, 2, 3),
                                  [[0, 2, 4, 6], [16, 18, 20, 22], [32, 34, 36, 38]])
    np.testing.assert_array_equal(sampling.dense_eval_indices(5, 4, 2, 2),
                                  [[0, 2, 4, 1], [0, 2, 4, 1]])
