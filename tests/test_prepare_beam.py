"""Preparation on Apache Beam (DirectRunner, 2 worker processes) writes the same dataset as without Beam."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from array_record.python import array_record_data_source

from input_pipeline import prepare_tfds
from input_pipeline import synthetic
from input_pipeline import tfds_builders
from input_pipeline import tfds_source
from input_pipeline import video_files

beam = pytest.importorskip("apache_beam")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (split, class, file name, frames); train/rising/broken.mp4 is not a video.
VIDEOS = [("train", "falling", "a.mp4", 5), ("train", "rising", "b.mp4", 4),
          ("train", "rising", "c.mp4", 6), ("validation", "falling", "d.mp4", 3)]
BEAM_OPTIONS = "--direct_num_workers=2 --direct_running_mode=multi_processing"


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """A video_folder manual dir of 4 videos of 32x40 pixels and one unreadable file."""
    root = tmp_path_factory.mktemp("manual")
    for split, name, file_name, length in VIDEOS:
        (root / split / name).mkdir(parents=True, exist_ok=True)
        frames = synthetic.render_video(2 if name == "falling" else 3, length, 32, 40, np.random.default_rng(length))
        video_files.write_video(str(root / split / name / file_name), frames)
    (root / "train" / "rising" / "broken.mp4").write_bytes(b"not a video")
    return str(root)


@pytest.fixture(scope="module")
def local(manual, tmp_path_factory):
    builder, wrote = tfds_builders.build("video_folder", manual, str(tmp_path_factory.mktemp("local")), workers=1)
    assert wrote
    return builder


@pytest.fixture(scope="module")
def on_beam(manual, tmp_path_factory):
    """(builder, output) of `prepare_tfds --beam_runner=DirectRunner` with 2 worker processes."""
    data_dir = str(tmp_path_factory.mktemp("beam"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "input_pipeline.prepare_tfds", "--dataset=video_folder", f"--manual_dir={manual}",
         f"--data_dir={data_dir}", "--beam_runner=DirectRunner", f"--beam_options={BEAM_OPTIONS}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return tfds_builders.dataset_builder("video_folder", data_dir), done.stdout + done.stderr


def _records(builder, split):
    return array_record_data_source.ArrayRecordDataSource(builder.info.splits[split].file_instructions)


def _examples(records):
    # Parsed, not bytes: TFDS serializes an Example's feature map in an order that differs between
    # processes (protobuf's hash seed), so even two preparations without Beam differ byte by byte.
    return [tf.train.Example.FromString(record) for record in records]


def test_beam_writes_the_same_records_in_the_same_order(local, on_beam):
    builder, output = on_beam
    assert builder.is_prepared()
    assert "video_folder: 2 classes; train 4 videos (1 left out, unreadable), validation 1 videos listed" in output
    assert "Left out video rising/broken.mp4" in output  # Logged by the Beam worker that read it.
    assert "video_folder train: videos left out: 1." in output  # Counted by the workers, logged by the driver.
    assert sorted(builder.info.splits) == sorted(local.info.splits) == ["train", "validation"]
    for split in local.info.splits:
        records = _records(builder, split)
        assert len(records) == len(_records(local, split))
        assert _examples(records) == _examples(_records(local, split))  # The same records, in the same order.
        headers = tfds_source.headers(records, builder.info.splits[split].file_instructions, split)
        frames = [tfds_source.fields(records[i]) for i in range(len(headers), len(records))]
        assert [header["frame"] for header in headers] == [-1] * len(headers)
        assert [(frame["video_id"], frame["frame"]) for frame in frames] == [
            (header["video_id"], i) for header in headers for i in range(header["num_frames"])]
    headers = tfds_source.headers(_records(builder, "train"), builder.info.splits["train"].file_instructions, "train")
    assert [(h["video_id"], h["label"], h["num_frames"]) for h in headers] == [
        (b"falling/a.mp4", 0, 5), (b"rising/b.mp4", 1, 4), (b"rising/c.mp4", 1, 6)]  # broken.mp4 left out.


def test_beam_keeps_class_names_and_inputs_metadata(manual, local, on_beam):
    builder, _ = on_beam
    assert builder.info.features["label"].names == local.info.features["label"].names == ["falling", "rising"]
    assert builder.info.metadata["inputs"] == local.info.metadata["inputs"]
    assert len(builder.info.metadata["inputs"]["videos"]["train"]) == 4  # Listed, broken.mp4 included.
    assert not os.path.exists(builder.decode_cache)
    # Prepared from the same inputs: nothing to do, Beam or not.
    _, wrote = tfds_builders.build("video_folder", manual, os.path.dirname(os.path.dirname(builder.data_dir)),
                                   download_config=prepare_tfds.beam_download_config("DirectRunner", BEAM_OPTIONS))
    assert not wrote


def test_beam_flags_make_the_download_config():
    assert prepare_tfds.beam_download_config(None, None) is None
    config = prepare_tfds.beam_download_config("DirectRunner", BEAM_OPTIONS)
    assert config.beam_options.get_all_options()["direct_num_workers"] == 2
    assert config.beam_options.get_all_options()["direct_running_mode"] == "multi_processing"
    with pytest.raises(SystemExit, match="--beam_runner: Unexpected pipeline runner: NoSuchRunner"):
        prepare_tfds.beam_download_config("NoSuchRunner", None)


def test_the_pipeline_holds_no_video_list(tmp_path):
    # Dataflow refuses a job over 20 MB; in the pipeline, Kinetics-400's list of train videos would take 13 MB.
    videos = [(f"class_{i % 400}/{'a' * 40}_{i:06d}.mp4", f"/data/kinetics/train/{'b' * 40}_{i:06d}.mp4", i % 400)
              for i in range(50_000)]
    builder = tfds_builders.dataset_builder("video_folder", str(tmp_path), beam=True)
    pipeline = beam.Pipeline()
    _ = pipeline | builder._generate_examples("train", videos, str(tmp_path / "cache"))
    assert sum(len(json.dumps(video)) for video in videos) > 5_000_000
    assert len(pipeline.to_runner_api().SerializeToString()) < 100_000
    lines = (tmp_path / "cache" / "train_videos.jsonl").read_text().splitlines()
    assert json.loads(lines[7]) == [7, *videos[7]]

