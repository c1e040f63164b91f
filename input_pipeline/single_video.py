"""One video file or frame folder -> the evaluation views of the pipeline, for prediction.

Uses the evaluation path of the datasets (the same frame sampling and `transforms.eval_views`).
"""
import glob
import os

import av
import numpy as np
from PIL import Image
import tensorflow as tf

from input_pipeline import sampling, sources, transforms

FRAME_PATTERNS = ("*.jpg", "*.jpeg", "*.png")


def _read_image(path: str) -> np.ndarray:
    """uint8 `(height, width, 3)` of an image file, decoded by PIL as the official loader does."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except sources.IMAGE_ERRORS as error:
        raise ValueError(f"{path}: PIL cannot decode it ({error})") from error


def read_frames(path: str) -> np.ndarray:
    """Every frame of a video file (anything PyAV decodes) or of a folder of images, in order.

    Returns uint8 `(frames, height, width, 3)`.
    """
    if os.path.isdir(path):
        files = sorted(f for pattern in FRAME_PATTERNS for f in glob.glob(os.path.join(path, pattern)))
        if not files:
            raise ValueError(f"{path}: a frame folder needs {', '.join(FRAME_PATTERNS)} files; found none")
        return np.stack([_read_image(f) for f in files])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is neither a video file nor a frame folder")
    try:
        with av.open(path) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as error:
        raise ValueError(f"{path}: PyAV cannot decode it ({error})") from error
    if not frames:
        raise ValueError(f"{path}: the video has no decodable frame")
    return np.stack(frames)


def eval_views(path: str, data_config, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`(views, indices)`: uint8 `(num_clips * num_crops, num_frames, crop, crop, 3)`, clip-major as
    in evaluation, and the sampled 0-based frame indices `(num_clips, num_frames)`."""
    frames = read_frames(path)
    indices = sampling.eval_indices(data_config, len(frames), num_frames)
    resize_side = transforms.eval_resize_side(data_config.crop_size, data_config.eval_resize_to_crop)
    clips = [transforms.eval_views(tf.constant(frames[clip]), data_config.crop_size, resize_side,
                                   data_config.num_crops).numpy() for clip in indices]
    return np.concatenate(clips), indices
