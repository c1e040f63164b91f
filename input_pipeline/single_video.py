"""Video files and frame folders -> evaluation views for prediction, decoding only the sampled frames.

The frames are picked by the evaluation sampling of the datasets (`sampling.eval_indices`) and cut
into views by `transforms.eval_views`, the pixels of the evaluation path. What a clip needs is
asked for as a *request*: int64 `(clips, frames)` frame indices, one per video (`eval_request`) or
one per window of a long video (`window_requests`). `sampled_clips` serves any number of requests
in one pass over the video:

- a video file (anything PyAV decodes) is decoded frame by frame; only a frame some request samples
  is converted to RGB, upright (`video_files.upright_rgb`), and its shorter side resized at once
  (`transforms.resize_shorter_side`, per frame as the evaluation path resizes it), and it is kept
  only until the last request using it is complete. Memory holds the sampled frames of the requests
  in progress, whatever the length;
- a frame folder (`00001.jpg`, ... sorted by name) reads only the sampled image files (PIL, as the
  official loader).

The frame count comes first (`probe`: the container's count, or a demux pass that decodes nothing);
the decoding pass counts again and raises `FrameCountError` if the two differ, so that the caller
samples again with the true count: the indices are always those of the whole decoded video.
"""
import collections
import dataclasses
import logging
import os
from typing import Iterator

import av
import numpy as np
from PIL import Image

from input_pipeline import faults, sampling, transforms, video_files
from input_pipeline.tensorflow_cpu import tf

class UnreadableVideoError(ValueError):
    """A video file or frame folder that cannot be decoded; the message names the path."""


class FrameCountError(Exception):
    """The decoding pass found `actual` frames where `probe` counted `expected`."""

    def __init__(self, path: str, expected: int, actual: int):
        super().__init__(f"{path}: {actual} frames decoded, {expected} counted")
        self.path, self.expected, self.actual = path, expected, actual


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """`frame_count` frames; `fps` frames per second, None when unknown (a frame folder)."""
    frame_count: int
    fps: float | None


def _read_image(path: str) -> np.ndarray:
    """uint8 `(height, width, 3)` of an image file, decoded by PIL as the official loader does."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except faults.IMAGE_ERRORS as error:
        raise UnreadableVideoError(f"{path}: PIL cannot decode it ({error})") from error


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is neither a video file nor a frame folder")
    try:
        container = video_files.open_video(path)
    except (av.error.FFmpegError, ValueError) as error:
        raise UnreadableVideoError(f"{path}: PyAV cannot decode it ({error})") from error
    if not container.streams.video:
        container.close()
        raise UnreadableVideoError(f"{path}: the file has no video stream")
    return container


def probe(path: str) -> VideoInfo:
    """Frame count and rate of a video file or frame folder, decoding nothing: the container's frame
    count where it stores one (mp4, mov, avi), else a count of the video packets (webm, mkv)."""
    if os.path.isdir(path):
        files = video_files.frame_files(path)
        if not files:
            raise UnreadableVideoError(f"{path}: a frame folder needs {', '.join(video_files.FRAME_EXTENSIONS)} files; "
                                       "found none")
        return VideoInfo(len(files), None)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        count = stream.frames
        if count <= 0:
            try:
                count = sum(1 for packet in container.demux(stream) if packet.size)
            except av.error.FFmpegError as error:
                raise UnreadableVideoError(f"{path}: PyAV cannot read it ({error})") from error
    if count <= 0:
        raise UnreadableVideoError(f"{path}: the video has no decodable frame")
    return VideoInfo(count, float(rate) if rate else None)


def resized_frame(frame: np.ndarray, side: int) -> np.ndarray:
    """uint8 `(height, width, 3)` -> shorter side `side`, as `transforms.eval_views` resizes each frame."""
    return transforms.resize_shorter_side(tf.constant(frame[None]), side).numpy()[0]


def _decoded_frames(path: str, wanted: np.ndarray, side: int, frame_count: int) -> Iterator[tuple[int, np.ndarray]]:
    """`(index, resized frame)` for each index in the sorted `wanted`, in one decoding pass."""
    if os.path.isdir(path):
        files = video_files.frame_files(path)
        if len(files) != frame_count:
            raise FrameCountError(path, frame_count, len(files))
        for index in wanted:
            yield int(index), resized_frame(_read_image(files[index]), side)
        return
    position, count, corrupt, first_size = 0, 0, [], None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # frame threads: the same frames, decoded in parallel
        try:
            for count, frame in enumerate(video_files.decoded_frames(container, stream, corrupt), 1):
                sampled = position < len(wanted) and wanted[position] == count - 1
                if sampled or first_size is None:
                    rgb = video_files.upright_rgb(frame)
                    first_size = first_size or rgb.shape[1::-1]
                if sampled:
                    if rgb.shape[1::-1] != first_size:  # The stream changed resolution: the first frame's size.
                        rgb = np.asarray(Image.fromarray(rgb).resize(first_size, Image.BILINEAR))
                    yield count - 1, resized_frame(rgb, side)
                    position += 1
        except av.error.FFmpegError as error:
            raise UnreadableVideoError(f"{path}: PyAV cannot decode it ({error})") from error
    if not count:
        raise UnreadableVideoError(f"{path}: no frame decodes ({corrupt[0] if corrupt else 'no frame'})")
    if count != frame_count:
        raise FrameCountError(path, frame_count, count)
    if corrupt:
        logging.warning("%s: %s; %d frames decoded.", path, video_files.damage_report(corrupt), count)


def sampled_clips(path: str, requests: list[np.ndarray], side: int, frame_count: int,
                  stats: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """`(request number, clips)` for each request as soon as its last frame is decoded: clips are
    uint8 `(clips, frames, height, width, 3)`, the shorter side resized to `side`.

    `requests`: int64 `(clips, frames)` indices in [0, frame_count). A frame is held until the last
    request using it is served. Raises `FrameCountError` at the end of the pass if the video has
    another frame count than `frame_count` (requests already served were sampled on a wrong count).
    `stats`, if given, receives `held_peak` (the most frames held at once) and `decoded_kept`.
    """
    order = sorted(range(len(requests)), key=lambda r: int(requests[r].max()))
    last_rank = {}
    for rank, number in enumerate(order):
        for index in np.unique(requests[number]):
            last_rank[int(index)] = rank
    pending, held, rank = collections.deque(order), {}, 0
    stats = {} if stats is None else stats
    stats.update(held_peak=0, decoded_kept=0)
    for index, frame in _decoded_frames(path, np.asarray(sorted(last_rank), np.int64), side, frame_count):
        held[index] = frame
        stats["decoded_kept"] += 1
        stats["held_peak"] = max(stats["held_peak"], len(held))
        while pending and requests[pending[0]].max() <= index:
            number = pending.popleft()
            yield number, np.stack([np.stack([held[int(i)] for i in clip]) for clip in requests[number]])
            for i in np.unique(requests[number]):
                if last_rank[int(i)] == rank:
                    del held[int(i)]
            rank += 1


def eval_resize_side(data_config) -> int:
    """The shorter side frames are resized to before the evaluation crops."""
    return transforms.eval_resize_side(data_config.crop_size, data_config.eval_resize_to_crop)


def views_of(clips: np.ndarray, data_config) -> np.ndarray:
    """Resized clips `(clips, frames, h, w, 3)` -> uint8 `(clips * num_crops, frames, crop, crop, 3)`,
    clip-major as in evaluation (`transforms.eval_views`; its resize is the identity on them)."""
    side = eval_resize_side(data_config)
    return np.concatenate([transforms.eval_views(list(clip), data_config.crop_size, side,
                                                 data_config.num_crops).numpy() for clip in clips])


def eval_views(path: str, data_config, num_frames: int, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(views, indices)` of a video file or frame folder: uint8 `(num_clips * num_crops, num_frames,
    crop, crop, 3)`, clip-major as in evaluation, and the sampled 0-based frame indices
    `(num_clips, num_frames)`. Decodes only those frames (`sampled_clips`)."""
    frame_count = probe(path).frame_count
    for _ in range(2):
        indices = sampling.eval_indices(data_config, frame_count, num_frames)
        try:
            [(_, clips)] = list(sampled_clips(path, [indices], eval_resize_side(data_config), frame_count, stats))
            return views_of(clips, data_config), indices
        except FrameCountError as error:
            frame_count = error.actual
    raise UnreadableVideoError(f"{path}: its frame count changes between two decodings")


def windows(frame_count: int, fps: float, window_seconds: float, stride_seconds: float) -> np.ndarray:
    """int64 `(windows, 2)` frame ranges [start, end) of sliding windows over a video.

    Window k starts at frame round(k * stride_seconds * fps) and spans round(window_seconds * fps)
    frames (at least 1); windows run while they fit in the video, so the last < stride_seconds of a
    video may start no window. A video shorter than one window gives one window over all of it.
    """
    if window_seconds <= 0 or stride_seconds <= 0:
        raise ValueError(f"window_seconds={window_seconds} and stride_seconds={stride_seconds} must be positive")
    length = max(1, round(window_seconds * fps))
    if frame_count <= length:
        return np.asarray([[0, frame_count]], np.int64)
    ranges = []
    while (start := round(len(ranges) * stride_seconds * fps)) + length <= frame_count:
        ranges.append((start, start + length))
    return np.asarray(ranges, np.int64)


def window_requests(data_config, ranges: np.ndarray, num_frames: int) -> list[np.ndarray]:
    """The evaluation sampling inside each window `[start, end)`: int64 `(num_clips, num_frames)` each."""
    return [start + sampling.eval_indices(data_config, int(end - start), num_frames) for start, end in ranges]
