"""prepare -> records -> decode round trip on PyAV-written mp4 and webm videos; unreadable
frames substituted, unreadable records skipped, both counted; hosts reading their own shards."""
import io
import os
import subprocess
import sys

import av
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from configs import data_defaults
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import check_data
from input_pipeline import faults
from input_pipeline import prepare
from input_pipeline import records
from input_pipeline import synthetic
from input_pipeline import video_files
from input_pipeline import video_list

# (file name, codec, label, frames): a class folder per label.
VIDEOS = [("a.mp4", "mpeg4", 0, 9), ("b.webm", "libvpx", 0, 12), ("c.mp4", "libx264", 1, 10),
          ("d.webm", "libvpx", 1, 11)]


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
    """Shards of 4 generated videos (48x64, labels 0 and 1) plus one unreadable file."""
    folder = tmp_path_factory.mktemp("videos")
    for name, codec, label, length in VIDEOS:
        os.makedirs(folder / f"class{label}", exist_ok=True)
        frames = synthetic.render_video(label, length, 48, 64, np.random.default_rng(length))
        video_files.write_video(str(folder / f"class{label}" / name), frames, codec)
    (folder / "class1" / "e.mp4").write_bytes(b"not a video")
    videos, classes = prepare.videos_by_class_folder(str(folder))
    assert classes == ["class0", "class1"]
    out = str(tmp_path_factory.mktemp("records"))
    unreadable = prepare.prepare(videos, out, "train", num_shards=2, workers=2, short_side=32)
    assert len(unreadable) == 1 and "e.mp4" in unreadable[0]
    prepare.prepare(videos[:4], out, "val", num_shards=1, workers=1, short_side=32)
    return out


def test_records_hold_every_frame_resized(record_dir):
    examples = [records.parse(s) for s in tf.data.TFRecordDataset(
        records.record_files(record_dir, "train"))]
    by_name = {os.path.basename(e["video_id"].numpy().decode()): e for e in examples}
    assert sorted(by_name) == ["a.mp4", "b.webm", "c.mp4", "d.webm"]
    for name, _, label, length in VIDEOS:
        example = by_name[name]
        assert int(example["label"]) == label and int(example["num_frames"]) == length
        assert example["frames"].shape == (length,)
        assert tf.io.decode_jpeg(example["frames"][0]).shape == (32, 43, 3)


def test_prepare_refuses_other_inputs_without_touching_the_shards(record_dir):
    shard = os.path.join(record_dir, records.shard_name("train", 0, 2))
    stamp = os.path.getmtime(shard)
    with pytest.raises(prepare.PrepareError, match=r"5 videos removed .* --overwrite"):
        prepare.prepare([], record_dir, "train", num_shards=2, workers=1)
    assert os.path.getmtime(shard) == stamp


def _records_config(record_dir):
    config = data_defaults.get_data_config()
    config.update(source="records", root=record_dir, crop_size=16, shuffle_buffer=8)
    return config


def test_train_and_eval_from_records(record_dir):
    config = _records_config(record_dir)
    assert create_source(config).num_videos("train") == 4
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=2,
                                                   seed=0)
    batches = [next(iterator) for _ in range(4)]
    assert batches[0]["video"].shape == (2, 4, 16, 16, 3) and batches[0]["video"].dtype == np.uint8
    resumed = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=2,
                                                  seed=0, start_step=2)
    for expected in batches[2:]:
        np.testing.assert_array_equal(next(resumed)["video"], expected["video"])
    config.num_crops = 3
    eval_batches = list(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=3))
    assert eval_batches[0]["video"].shape == (3, 3, 4, 16, 16, 3)
    assert sum(int(b["mask"].sum()) for b in eval_batches) == 4


def _jpeg(rng):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def broken_record_dir(tmp_path_factory):
    """8 'train' videos in 4 shards: 'good<k>' of 6 frames, label k % 2, except a corrupt
    frame in 'bad_jpeg', no frame in 'empty' and label 5 (of 2 classes) in 'bad_label'."""
    out = str(tmp_path_factory.mktemp("broken_records"))
    rng = np.random.default_rng(0)
    videos = [(f"good{k}", k % 2, [_jpeg(rng) for _ in range(6)]) for k in range(5)]
    videos += [("bad_jpeg", 0, [_jpeg(rng)] * 3 + [b"not a jpeg"] + [_jpeg(rng)] * 2),
               ("empty", 1, []), ("bad_label", 5, [_jpeg(rng) for _ in range(6)])]
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(out, records.shard_name("train", shard, 4))) as w:
            for video_id, label, jpegs in videos[shard::4]:
                w.write(records.serialize(video_id, label, jpegs))
    return out


def _broken_config(record_dir):
    config = _records_config(record_dir)
    config.update(num_classes=2, shuffle_buffer=1)
    return config


def test_records_training_substitutes_frames_skips_and_counts_unreadable_videos(broken_record_dir):
    iterator = input_pipeline.create_train_dataset(
        create_source(_broken_config(broken_record_dir)), num_frames=4, global_batch_size=4, seed=0)
    batches = [next(iterator) for _ in range(4)]  # 16 examples: two epochs of 8 videos.
    assert all(set(batch["label"]) <= {0, 1} for batch in batches)
    messages = "\n".join(iterator.stats.examples)
    for video_id in ("bad_jpeg", "empty", "bad_label"):
        assert f"'{video_id}'" in messages
    assert "good" not in messages
    # 4-frame clips of 6 frames read frames 0-3: bad_jpeg's frame 3 is replaced by frame 2, in
    # each epoch; empty and bad_label are skipped as examples in each epoch, and tried again as
    # the substitute of a bad video just before them.
    assert iterator.stats.kinds[faults.CORRUPT_FRAME] == 1
    assert iterator.stats.kinds[faults.SUBSTITUTED_FRAME] >= 2
    assert "records train video 'bad_jpeg': frame 3 (corrupt frame) replaced by frame 2" in messages
    assert iterator.stats.unreadable >= 4


def test_records_training_resumes_exactly_past_unreadable_videos(broken_record_dir):
    config = _broken_config(broken_record_dir)
    full = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=2, seed=3)
    expected = [next(full) for _ in range(6)]
    resumed = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=2,
                                                  seed=3, start_step=4)
    for batch in expected[4:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["video"], batch["video"])
        np.testing.assert_array_equal(got["label"], batch["label"])


def test_records_strict_training_names_the_unreadable_video(broken_record_dir):
    config = _broken_config(broken_record_dir)
    config.strict = True
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=8,
                                                   seed=0)
    with pytest.raises(ValueError, match="bad_jpeg|empty|bad_label"):
        next(iterator)


def test_records_hosts_read_disjoint_shards(broken_record_dir):
    config = _broken_config(broken_record_dir)
    seen = []
    for process_index in range(2):
        iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=4, seed=0,
                                                       process_index=process_index, process_count=2)
        for _ in range(4):  # 8 examples per host: two epochs of its 4 videos.
            next(iterator)
        seen.append({message.split("'")[1] for message in iterator.stats.examples})
    # Shards 0, 2 (host 0) hold good0, good4, good2, empty; shards 1, 3 (host 1) hold
    # good1, bad_jpeg, good3, bad_label.
    assert seen == [{"empty"}, {"bad_jpeg", "bad_label"}]


def test_records_evaluation_substitutes_frames_and_masks_unreadable_videos(broken_record_dir):
    config = _broken_config(broken_record_dir)
    for shard in (1, 2):
        os.symlink(os.path.join(broken_record_dir, records.shard_name("train", shard, 4)),
                   os.path.join(broken_record_dir, records.shard_name("val", shard - 1, 2)))
    iterator = input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=6)
    batches = list(iterator)
    # Shards 1 and 2 hold good1, bad_jpeg (frame 3 of its sampled 0, 2, 3, 5 replaced by frame 2),
    # good2 and empty (masked out); 2 padding examples fill the batch.
    assert len(batches) == 1
    assert list(batches[0]["mask"]) == [True, True, True, False, False, False]
    assert list(batches[0]["video_index"]) == [0, 1, 2, 3, -1, -1]
    assert iterator.stats.unreadable == 1
    assert iterator.stats.kinds == {faults.UNREADABLE_VIDEO: 1, faults.CORRUPT_FRAME: 1,
                                    faults.SUBSTITUTED_FRAME: 1}
    assert iterator.stats.kind_examples[faults.SUBSTITUTED_FRAME] == [
        "records val #1 video 'bad_jpeg': frame 3 (corrupt frame) replaced by frame 2"]
    assert iterator.stats.kind_examples[faults.UNREADABLE_VIDEO][0].startswith("records val #3 video 'empty': ")


def test_check_data_reports_every_bad_record(broken_record_dir):
    problems = check_data.check_split(_broken_config(broken_record_dir), "train", workers=2)
    by_video = {message.split("'")[1]: (kind, message) for kind, message in problems}
    assert sorted(by_video) == ["bad_jpeg", "bad_label", "empty"] and len(problems) == 3
    assert by_video["bad_jpeg"][0] == faults.CORRUPT_FRAME
    assert "corrupt frame 3" in by_video["bad_jpeg"][1]
    assert by_video["empty"][0] == faults.EMPTY_VIDEO and "no frame" in by_video["empty"][1]
    assert by_video["bad_label"][0] == faults.LABEL_OUT_OF_RANGE
    assert "label 5 outside [0, 2)" in by_video["bad_label"][1]


@pytest.mark.parametrize("process_count", [2, 5])
def test_host_streams_are_disjoint_and_complete(broken_record_dir, process_count):
    # 4 shard files of 2 records: 2 hosts read 2 files each; 5 hosts (more than the files) read
    # all and keep every fifth record.
    files = records.record_files(broken_record_dir, "train")
    seen = [[records.parse(serialized)["video_id"].numpy().decode() for serialized in
             records.host_stream(files, 0, process_index, process_count)]
            for process_index in range(process_count)]
    everything = sorted(video for host in seen for video in host)
    assert everything == sorted([f"good{k}" for k in range(5)] + ["bad_jpeg", "empty",
                                                                 "bad_label"])
    assert all(abs(len(host) - 8 / process_count) < 1 for host in seen)


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


def test_prepare_max_fps_thins_the_stored_frames(tmp_path):
    os.makedirs(tmp_path / "videos" / "class0")
    frames = synthetic.render_video(0, 9, 48, 64, np.random.default_rng(0))
    video_files.write_video(str(tmp_path / "videos" / "class0" / "a.mp4"), frames, fps=12)
    videos, _ = prepare.videos_by_class_folder(str(tmp_path / "videos"))
    assert prepare.prepare(videos, str(tmp_path / "out"), "train", num_shards=1, workers=1,
                           short_side=32, max_fps=6) == []
    example = records.parse(next(iter(tf.data.TFRecordDataset(
        records.record_files(str(tmp_path / "out"), "train")))))
    assert int(example["num_frames"]) == 5 and example["frames"].shape == (5,)


def _write_videos(folder, names):
    """Writes a 4-frame 16x16 mp4 at each `class/file` name under `folder`; returns `folder`."""
    for number, name in enumerate(names):
        os.makedirs(os.path.dirname(folder / name), exist_ok=True)
        frames = synthetic.render_video(0, 4, 16, 16, np.random.default_rng(number))
        video_files.write_video(str(folder / name), frames)
    return folder


def _prepare_split(out, split, folder, **kwargs):
    """`python -m input_pipeline.prepare --videos=folder` of one split, in this process."""
    videos, classes = prepare.split_videos(out, split, videos_dir=str(folder))
    return prepare.prepare(videos, out, split, **{"num_shards": 1, "workers": 1, "short_side": 16,
                                                  "classes": classes, **kwargs})


def _labels(out, split):
    """{video file name: label} of a split's records."""
    return {os.path.basename(example["video_id"].numpy().decode()): int(example["label"])
            for example in map(records.parse, tf.data.TFRecordDataset(records.record_files(out, split)))}


def test_later_splits_keep_the_class_list_of_the_first(tmp_path):
    out = str(tmp_path / "out")
    _prepare_split(out, "train", _write_videos(tmp_path / "train", ["cat/a.mp4", "dog/b.mp4", "emu/c.mp4"]))
    # val has no 'dog': 'emu' keeps label 2 (its own folders alone would make it 1).
    _prepare_split(out, "val", _write_videos(tmp_path / "val", ["cat/d.mp4", "emu/e.mp4"]))
    assert video_list.read_class_names(os.path.join(out, "classes.txt")) == ["cat", "dog", "emu"]
    assert _labels(out, "val") == {"d.mp4": 0, "e.mp4": 2}
    assert create_source(_records_config(out)).class_names() == ["cat", "dog", "emu"]  # read beside the shards
    _write_videos(tmp_path / "test", ["cat/f.mp4", "fox/g.mp4"])
    with pytest.raises(prepare.PrepareError, match=r"split 'test': class folder 'fox' of .* is not among the 3 "
                       r"classes of .*classes.txt; a new class changes every label: prepare all splits again into"):
        prepare.split_videos(out, "test", videos_dir=str(tmp_path / "test"))
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(prepare.PrepareError, match=r"--classes=.*two.txt \(2 classes\) differs from .*classes.txt"):
        prepare.split_videos(out, "val", videos_dir=str(tmp_path / "val"), classes_file=str(tmp_path / "two.txt"))


def test_classes_flag_fixes_the_class_list_of_a_new_dataset(tmp_path):
    (tmp_path / "classes.txt").write_text("emu\nfox\ncat\n")
    folder = _write_videos(tmp_path / "train", ["cat/a.mp4", "emu/b.mp4"])
    out = str(tmp_path / "out")
    videos, classes = prepare.split_videos(out, "train", videos_dir=str(folder),
                                           classes_file=str(tmp_path / "classes.txt"))
    assert prepare.prepare(videos, out, "train", num_shards=1, workers=1, short_side=16, classes=classes) == []
    assert video_list.read_class_names(os.path.join(out, "classes.txt")) == ["emu", "fox", "cat"]
    assert _labels(out, "train") == {"a.mp4": 2, "b.mp4": 0}
    (tmp_path / "list.txt").write_text("train/cat/a.mp4 2\ntrain/emu/b.mp4 3\n")
    with pytest.raises(prepare.PrepareError, match=r"split 'val': .*list.txt gives .*b.mp4 label 3, but .* lists "
                       r"3 classes \(labels 0-2\)"):
        prepare.split_videos(out, "val", list_file=str(tmp_path / "list.txt"))


def test_prepare_notices_changed_videos_and_overwrites_only_when_asked(tmp_path):
    folder = _write_videos(tmp_path / "train", ["cat/a.mp4", "dog/b.mp4", "dog/c.mp4"])
    out = str(tmp_path / "out")
    assert _prepare_split(out, "train", folder, num_shards=2) == []
    shards = [os.path.join(out, records.shard_name("train", shard, 2)) for shard in range(2)]
    stamps = [os.stat(shard).st_mtime_ns for shard in shards]
    assert _prepare_split(out, "train", folder, num_shards=2) is None  # up to date: nothing written
    os.remove(shards[1])  # as if stopped before the last shard: only that one is written again
    assert _prepare_split(out, "train", folder, num_shards=2) == []
    assert os.stat(shards[0]).st_mtime_ns == stamps[0] and os.path.exists(shards[1])

    _write_videos(folder, ["cat/new.mp4"])
    with pytest.raises(prepare.PrepareError, match=r"split 'train' in .* was prepared from other inputs: 1 video "
                       r"added \(e.g. .*cat/new.mp4\)\. Pass --overwrite"):
        _prepare_split(out, "train", folder, num_shards=2)
    with pytest.raises(prepare.PrepareError, match=r"--shards 2 -> 3, 1 video added"):
        _prepare_split(out, "train", folder, num_shards=3)
    assert _prepare_split(out, "train", folder, num_shards=3, overwrite=True) == []
    # The old shards are gone, not mixed with the new ones.
    assert [os.path.basename(f) for f in records.record_files(out, "train")] == [
        records.shard_name("train", shard, 3) for shard in range(3)]
    assert _labels(out, "train") == {"a.mp4": 0, "new.mp4": 0, "b.mp4": 1, "c.mp4": 1}

    os.remove(os.path.join(out, "train-manifest.json"))
    with pytest.raises(prepare.PrepareError, match="holds shards of split 'train' but no train-manifest.json"):
        _prepare_split(out, "train", folder, num_shards=3)


def test_prepare_command_names_an_unknown_class_in_one_line(tmp_path):
    folder = _write_videos(tmp_path / "val", ["cat/a.mp4", "fox/b.mp4"])
    os.makedirs(tmp_path / "out")
    (tmp_path / "out" / "classes.txt").write_text("cat\ndog\n")
    command = [sys.executable, "-m", "input_pipeline.prepare", f"--videos={folder}",
               f"--output_dir={tmp_path / 'out'}", "--split=val"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "prepare error: split 'val': class folder 'fox' of ")
    assert sorted(os.listdir(tmp_path / "out")) == ["classes.txt"]
