"""Which frames of a video make a clip: 0-based frame indices, numpy only.

`uniform` is TSN segment sampling (the official bLVNet-TAM default); `dense` takes `num_frames`
frames at a fixed stride (I3D style). Every function returns int64 indices in [0, video_frames).
"""
import numpy as np


def uniform_train_indices(video_frames, num_frames, rng, independent_offsets=False):
    """One random frame per segment, shape (num_frames,).

    With L = video_frames and n = num_frames: if L >= n the video is cut into n segments of L // n
    frames and index k = k * (L // n) + r, where r is one offset in [0, L // n) shared by all
    segments (the official code) or drawn per segment when `independent_offsets`. If L < n, n
    sorted indices are drawn with replacement.
    """
    segment = video_frames // num_frames
    if segment == 0:
        return np.sort(rng.integers(0, video_frames, num_frames))
    offsets = rng.integers(0, segment, num_frames if independent_offsets else 1)
    return np.arange(num_frames) * segment + offsets


def uniform_eval_indices(video_frames, num_frames, num_clips):
    """The official evaluation sampling, shape (num_clips, num_frames).

    For L = video_frames > n = num_frames: tick = L / n; clip c uses the offset
    o = range((-num_clips) // 2 + 1, num_clips // 2 + 1)[c], clamped to
    [-tick/2, tick/2 - 1e-4], and index x = int(tick/2 + o + tick*x). For L <= n: clip c draws
    n indices with replacement by `numpy.random.RandomState(c).choice(L, n)`, sorted.
    """
    clips = []
    for clip, offset in enumerate(range((-num_clips) // 2 + 1, num_clips // 2 + 1)):
        if video_frames > num_frames:
            tick = video_frames / num_frames
            if offset >= tick / 2:
                offset = tick / 2 - 1e-4
            elif offset < -tick / 2:
                offset = -tick / 2
            clips.append([int(tick / 2 + offset + tick * x) for x in range(num_frames)])
        else:
            clips.append(np.sort(np.random.RandomState(clip).choice(video_frames, num_frames)))
    return np.asarray(clips, dtype=np.int64)


def dense_train_indices(video_frames, num_frames, stride, rng):
    """`num_frames` frames `stride` apart from a random start, shape (num_frames,).

    The start is uniform in [0, L - stride * n) when that range is not empty, else 0; indices wrap
    around the end of a short video (modulo L), as in the official code.
    """
    highest_start = video_frames - stride * num_frames
    start = rng.integers(0, highest_start) if highest_start > 0 else 0
    return (start + stride * np.arange(num_frames)) % video_frames


def dense_eval_indices(video_frames, num_frames, stride, num_clips):
    """`num_clips` evenly spaced dense clips, shape (num_clips, num_frames).

    Clip starts are `numpy.linspace(0, max(1, 1 + L - stride * n) - 1, num_clips)` truncated to
    int; indices wrap modulo L, as in the official code.
    """
    last_start = max(1, 1 + video_frames - stride * num_frames) - 1
    starts = np.linspace(0, last_start, num=num_clips, dtype=np.int64)
    return (starts[:, None] + stride * np.arange(num_frames)[None, :]) % video_frames


def train_indices(data_config, video_frames, num_frames, rng):
    """Training indices for `data_config.sampling`, shape (num_frames,)."""
    if data_config.sampling == "uniform":
        return uniform_train_indices(video_frames, num_frames, rng, data_config.independent_offsets)
    if data_config.sampling == "dense":
        return dense_train_indices(video_frames, num_frames, data_config.dense_stride, rng)
    raise ValueError(f"config.data.sampling={data_config.sampling!r}: use 'uniform' or 'dense'.")


def eval_indices(data_config, video_frames, num_frames):
    """Evaluation indices for `data_config.sampling`, shape (num_clips, num_frames)."""
    if data_config.sampling == "uniform":
        return uniform_eval_indices(video_frames, num_frames, data_config.num_clips)
    if data_config.sampling == "dense":
        return dense_eval_indices(video_frames, num_frames, data_config.dense_stride,
                                  data_config.num_clips)
    raise ValueError(f"config.data.sampling={data_config.sampling!r}: use 'uniform' or 'dense'.")
