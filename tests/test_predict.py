"""Prediction on a video file and on a frame folder, through the evaluation transforms."""
import os

import numpy as np
from flax import nnx
from PIL import Image
import pytest

from blvnet_jax import checkpoint, predict
from blvnet_jax.models import create_model
from configs import demo
from input_pipeline import sampling, single_video, video_files


def write_workdir(path):
    config = demo.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=3))
    config.data.update(dict(crop_size=32, num_clips=2))
    checkpoint.save_model(str(path), 5, create_model(config.model, rngs=nnx.Rngs(0)), config,
                          class_names=["pushing", "pulling", "dropping"])


def moving_square(num_frames=11, height=40, width=48):
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, 10:20, 2 + 3 * t:12 + 3 * t] = (255, 200, 0)
    return frames


def test_predict_frame_folder_and_video_file(tmp_path):
    write_workdir(tmp_path / "run")
    frames = moving_square()
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t + 1:05d}.png")
    result = predict.predict(str(tmp_path / "run"), str(folder), top_k=3)
    assert [name for name, _ in result["top"]] and {n for n, _ in result["top"]} == {"pushing", "pulling", "dropping"}
    probabilities = [p for _, p in result["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    np.testing.assert_allclose(sum(probabilities), 1.0, rtol=1e-5)
    assert result["views"].shape == (2, 4, 32, 32, 3) and result["views"].dtype == np.uint8
    np.testing.assert_array_equal(result["indices"], sampling.uniform_eval_indices(11, 4, 2))

    video = str(tmp_path / "clip.mp4")
    video_files.write_video(video, frames)
    from_video = predict.predict(str(tmp_path / "run"), video, top_k=1)
    assert len(from_video["top"]) == 1
    assert np.abs(from_video["views"].astype(int) - result["views"].astype(int)).mean() < 12
    predict.save_png(str(tmp_path / "out.png"), from_video, video)
    assert os.path.getsize(tmp_path / "out.png") > 0


def test_frame_folder_frames_are_pils_and_an_undecodable_one_is_named(tmp_path):
    # Textured frames, where TF's default fast IDCT would not give PIL's pixels.
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), np.uint8)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{t + 1:05d}.jpg", quality=90)
    official = np.stack([np.asarray(Image.open(tmp_path / f"{t + 1:05d}.jpg").convert("RGB"))
                         for t in range(3)])
    np.testing.assert_array_equal(single_video.read_frames(str(tmp_path)), official)
    (tmp_path / "00004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="00004.jpg: PIL cannot decode it"):
        single_video.read_frames(str(tmp_path))
