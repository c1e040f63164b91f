"""prepare -> records -> decode round trip on PyAV-written mp4 and webm videos."""
import os

import av
import numpy as np
import pytest

from configs import data_defaults
import input_pipeline
from input_pipeline import prepare
from input_pipeline import records
from input_pipeline import synthetic

# (file name, codec, label, frames): a class folder per label.
VIDEOS = [("a.mp4", "mpeg4", 0, 9), ("b.webm", "libvpx", 0, 12), ("c.mp4", "libx264", 1, 10),
          ("d.webm", "libvpx", 1, 11)]


def _write_video(path, codec, frames):
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
    """Shards of 4 generated videos (48x64, labels 0 and 1) plus one unreadable file."""
    folder = tmp_path_factory.mktemp("videos")
    for name, codec, label, length in VIDEOS:
        os.makedirs(folder / f"class{label}", exist_ok=True)
        frames = synthetic.render_video(label, length, 48, 64, np.random.default_rng(length))
        _write_video(str(folder / f"class{label}" / name), codec, frames)
    (folder / "class1" / "e.mp4").write_bytes(b"not a video")
    videos, classes = prepare.videos_by_class_folder(str(folder))
    assert classes == ["class0", "class1"]
    out = str(tmp_path_factory.mktemp("records"))
    unreadable = prepare.prepare(videos, out, "train", num_shards=2, workers=2, short_side=32)
    assert len(unreadable) == 1 and "e.mp4" in unreadable[0]
    prepare.prepare(videos[:4], out, "val", num_shards=1, workers=1, short_side=32)
    return out


def test_records_hold_every_frame_resized(record_dir):
    import tensorflow as tf
    examples = [records.parse(s) for s in tf.data.TFRecordDataset(
        records.record_files(record_dir, "train"))]
    by_name = {os.path.basename(e["video_id"].numpy().decode()): e for e in examples}
    assert sorted(by_name) == ["a.mp4", "b.webm", "c.mp4", "d.webm"]
    for name, _, label, length in VIDEOS:
        example = by_name[name]
        assert int(example["label"]) == label and int(example["num_frames"]) == length
        assert example["frames"].shape == (length,)
        assert tf.io.decode_jpeg(example["frames"][0]).shape == (32, 43, 3)


def test_prepare_skips_finished_shards(record_dir):
    shard = os.path.join(record_dir, records.shard_name("train", 0, 2))
    stamp = os.path.getmtime(shard)
    assert prepare.prepare([], record_dir, "train", num_shards=2, workers=1) == []
    assert os.path.getmtime(shard) == stamp


def _records_config(record_dir):
    config = data_defaults.get_data_config()
    config.update(source="records", root=record_dir, crop_size=16, shuffle_buffer=8)
    return config


def test_train_and_eval_from_records(record_dir):
    config = _records_config(record_dir)
    iterator = input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=2,
                                                   seed=0)
    batches = [next(iterator) for _ in range(4)]
    assert batches[0]["video"].shape == (2, 4, 16, 16, 3) and batches[0]["video"].dtype == np.uint8
    resumed = input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=2,
                                                  seed=0, start_step=2)
    for expected in batches[2:]:
        np.testing.assert_array_equal(next(resumed)["video"], expected["video"])
    config.num_crops = 3
    eval_batches = list(input_pipeline.create_eval_dataset(config, num_frames=4, batch_size=3))
    assert eval_batches[0]["video"].shape == (3, 3, 4, 16, 16, 3)
    assert sum(int(b["mask"].sum()) for b in eval_batches) == 4
