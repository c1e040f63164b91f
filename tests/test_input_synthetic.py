"""The generated order-only dataset: layout, determinism, pairs that are time reversals."""
import filecmp
import os

import numpy as np

from configs import data_defaults
from input_pipeline import sources
from input_pipeline import synthetic


def tiny_synthetic_config():
    config = data_defaults.get_synthetic_config()
    config.num_classes = 4
    config.train_videos_per_class = 3
    config.val_videos_per_class = 2
    config.frame_height, config.frame_width = 32, 40
    config.min_video_frames, config.max_video_frames = 8, 12
    return config


def test_pairs_are_time_reversals():
    for kind in range(5):
        forward = synthetic.render_video(2 * kind, 10, 32, 40, np.random.default_rng(kind))
        backward = synthetic.render_video(2 * kind + 1, 10, 32, 40, np.random.default_rng(kind))
        assert forward.shape == (10, 32, 40, 3) and forward.dtype == np.uint8
        np.testing.assert_array_equal(backward, forward[::-1])
        assert not np.array_equal(forward[0], forward[-1])


def test_moving_right_moves_right():
    video = synthetic.render_video(0, 12, 48, 64, np.random.default_rng(3)).astype(float)
    background = np.median(video[0], axis=(0, 1))
    object_columns = [np.mean(np.nonzero(np.abs(frame - background).sum(-1) > 120)[1])
                      for frame in video]
    assert np.all(np.diff(object_columns) > 0)


def test_writes_lists_and_frames_deterministically(tmp_path):
    config = tiny_synthetic_config()
    first = synthetic.write_synthetic_dataset(str(tmp_path / "a"), config)
    synthetic.write_synthetic_dataset(str(tmp_path / "b"), config)
    entries, problems = sources.read_video_list(first["train_list"], " ", 4)
    assert not problems and len(entries) == 12
    assert sorted({entry.label for entry in entries}) == [0, 1, 2, 3]
    assert all(8 <= entry.num_frames <= 12 for entry in entries)
    for entry in entries:
        names = sorted(os.listdir(os.path.join(first["root"], entry.video_dir)))
        assert names == [f"{i:05d}.jpg" for i in range(1, entry.num_frames + 1)]
    comparison = filecmp.dircmp(str(tmp_path / "a"), str(tmp_path / "b"))
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    assert sources.read_class_names(first["class_names_file"]) == [
        "moving right", "moving left", "moving down", "moving up"]


def test_source_synthetic_generates_once_into_root(tmp_path):
    config = data_defaults.get_data_config()
    config.source = "synthetic"
    config.root = str(tmp_path / "cache")
    config.synthetic = tiny_synthetic_config()
    resolved = sources.create_source(config).config
    assert resolved.num_classes == 4
    stamp = os.path.getmtime(resolved.train_list)
    assert sources.create_source(config).config.train_list == resolved.train_list
    assert os.path.getmtime(resolved.train_list) == stamp
    assert sources.create_source(config).class_names()[:2] == ["moving right", "moving left"]
