"""Bad input: broken list lines, missing, corrupt and truncated frames; skip, count, name, check."""
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from configs import data_defaults
import input_pipeline
from input_pipeline import check_data
from input_pipeline import sources
from input_pipeline import synthetic
from input_pipeline import video_list
from tests.test_input_synthetic import tiny_synthetic_config


@pytest.fixture(scope="module")
def broken_config(tmp_path_factory):
    """12 training videos, 3 of them broken (a missing, a garbage, a truncated frame), and the
    same broken videos as the first 3 validation videos."""
    root = str(tmp_path_factory.mktemp("broken"))
    paths = synthetic.write_synthetic_dataset(os.path.join(root, "data"), tiny_synthetic_config())
    shutil.copy(paths["train_list"], paths["val_list"])
    entries, _ = video_list.read_video_list(paths["train_list"])
    frame = lambda entry, number: os.path.join(paths["root"], entry.video_dir, f"{number:05d}.jpg")
    os.remove(frame(entries[0], 1))
    with open(frame(entries[1], 1), "wb") as f:
        f.write(b"this is not a jpeg")
    with open(frame(entries[2], 3), "rb+") as f:
        f.truncate(200)
    config = data_defaults.get_data_config()
    config.update(root=paths["root"], train_list=paths["train_list"], val_list=paths["val_list"],
                  class_names_file=paths["class_names_file"], crop_size=16)
    return config


BROKEN_DIRS = ("frames/train/00_0000", "frames/train/00_0001", "frames/train/00_0002")


def test_list_problems_name_file_and_line(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text("a 1 10 0\nb 1 x 0\nc 1 10\nd 5 4 1\ne 1 10 7\nf;1;10;1\n\ng 1 10 3\n")
    entries, problems = video_list.read_video_list(str(list_file), " ", num_classes=4)
    assert [entry.video_dir for entry in entries] == ["a", "g"]
    assert entries[1].where == f"{list_file}:8"
    assert [problem.message.split(": ")[0] for problem in problems] == [
        f"{list_file}:{line}" for line in (2, 3, 4, 5, 6)]
    assert [problem.kind for problem in problems] == [video_list.MALFORMED] * 3 + [
        video_list.LABEL_OUT_OF_RANGE, video_list.MALFORMED]
    assert "integers" in problems[0].message and "4 fields" in problems[1].message
    assert "empty" in problems[2].message and "label 7" in problems[3].message


def test_strict_mode_rejects_bad_list_lines(tmp_path, broken_config):
    config = broken_config.copy_and_resolve_references()
    config.train_list = str(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("frames/train/00_0003 1 8 0\nbad line\n")
    iterator = input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=1, seed=0)
    assert iterator.stats.bad_list_lines == [f"{config.train_list}:2: expected 4 fields '<video dir> <start> <end> "
                                             "<label>' separated by ' ', got 2; set config.data.list_separator: "
                                             "'bad line'"]
    assert iterator.stats.kinds == {video_list.MALFORMED: 1}
    config.strict = True
    with pytest.raises(ValueError, match="list.txt:2"):
        input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=1, seed=0)


def test_training_replaces_and_counts_unreadable_videos(broken_config):
    iterator = input_pipeline.create_train_dataset(
        broken_config, num_frames=8, global_batch_size=4, seed=0)
    batches = [next(iterator) for _ in range(6)]  # Two epochs: each broken video met twice.
    assert all(batch["video"].shape == (4, 8, 18, 18, 3) for batch in batches)  # resize_on_device
    assert iterator.stats.unreadable == 6
    assert iterator.stats.kinds == {sources.MISSING_FRAME: 1, sources.CORRUPT_FRAME: 2}  # Each video once.
    messages = "\n".join(iterator.stats.examples)
    for video_dir in BROKEN_DIRS:
        assert video_dir in messages
    assert "missing frame" in messages and "corrupt frame" in messages


def test_strict_training_stops_at_an_unreadable_video(broken_config):
    config = broken_config.copy_and_resolve_references()
    config.strict = True
    iterator = input_pipeline.create_train_dataset(config, num_frames=8, global_batch_size=12,
                                                   seed=0)
    with pytest.raises(ValueError, match="frames/train/00_000[012]"):
        next(iterator)


def test_evaluation_masks_and_counts_unreadable_videos(broken_config):
    iterator = input_pipeline.create_eval_dataset(broken_config, num_frames=8, batch_size=5)
    batches = list(iterator)
    valid = np.concatenate([batch["video_index"][batch["mask"]] for batch in batches])
    np.testing.assert_array_equal(valid, np.arange(3, 12))
    assert iterator.stats.unreadable == 3
    assert iterator.stats.kinds == {sources.MISSING_FRAME: 1, sources.CORRUPT_FRAME: 2}
    assert iterator.stats.scalars() == {"unreadable_videos": 3, "faults_missing_frame": 1, "faults_corrupt_frame": 2}


def test_video_faults_tell_truncated_and_empty_videos_from_missing_frames(tmp_path):
    """a: frame 3 missing; b: frame 2 corrupt, frames 4-6 missing; c: no frame at all."""
    (tmp_path / "list.txt").write_text("a 1 6 0\nb 1 6 0\nc 1 6 0\n")
    for video, frames in (("a", (1, 2, 4, 5, 6)), ("b", (1, 2, 3)), ("c", ())):
        (tmp_path / video).mkdir()
        for number in frames:
            Image.new("RGB", (8, 8)).save(tmp_path / video / f"{number:05d}.jpg")
    (tmp_path / "b" / "00002.jpg").write_bytes(b"not a jpeg")
    config = data_defaults.get_data_config()
    config.update(root=str(tmp_path), train_list="list.txt")
    folders = sources.frame_folders(config, "train")
    faults = [folders.video_faults(video) for video in range(3)]
    assert faults[0] == [(sources.MISSING_FRAME, f"missing frame {tmp_path}/a/00003.jpg")]
    assert [kind for kind, _ in faults[1]] == [sources.CORRUPT_FRAME, sources.TRUNCATED_VIDEO]
    assert faults[2] == [(sources.EMPTY_VIDEO, f"empty video: none of its 6 frames is on disk "
                                               f"({tmp_path}/c/00001.jpg ...)")]
    assert folders.describe(1) == (
        (sources.CORRUPT_FRAME, sources.TRUNCATED_VIDEO),
        f"{tmp_path}/list.txt:2 video 'b': corrupt frame {tmp_path}/b/00002.jpg (cannot identify image file "
        f"'{tmp_path}/b/00002.jpg'); truncated video: frames 4-6 of 6 are missing ({tmp_path}/b/00004.jpg ...)")


def test_check_data_reports_every_problem_and_counts_them_by_kind(broken_config):
    problems = check_data.check_split(broken_config, "train", workers=2)
    assert [kind for kind, _ in problems] == [sources.MISSING_FRAME, sources.CORRUPT_FRAME,
                                              sources.CORRUPT_FRAME]
    for (_, message), video_dir in zip(problems, BROKEN_DIRS):
        assert video_dir in message and message.startswith(broken_config.train_list + ":")
    lines = check_data.report(problems).splitlines()
    assert lines[:3] == [message for _, message in problems]
    assert lines[3] == "3 problems: 1 missing frame, 2 corrupt frame."
    assert check_data.report([]) == "No problem found."


def test_missing_list_file_says_what_to_set(broken_config):
    config = broken_config.copy_and_resolve_references()
    config.val_list = "nowhere.txt"
    with pytest.raises(FileNotFoundError, match="config.data.train_list"):
        sources.frame_folders(config, "val")
