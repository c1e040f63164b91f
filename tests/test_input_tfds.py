"""The generic video-folder TFDS builder on PyAV-written videos, read by the 'tfds' source."""
import numpy as np
import pytest

from configs import data_defaults
import input_pipeline
from input_pipeline import check_data
from input_pipeline import synthetic
from input_pipeline import tfds_builders
from tests.test_input_records import _write_video

# (split, class, file name, frames)
VIDEOS = [("train", "falling", "a.mp4", 9), ("train", "falling", "b.webm", 8),
          ("train", "rising", "c.mp4", 10), ("train", "rising", "d.mkv", 7),
          ("validation", "falling", "e.mp4", 8), ("validation", "rising", "f.webm", 9)]
CODECS = {"mp4": "mpeg4", "webm": "libvpx", "mkv": "libx264"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A video_folder dataset prepared from 6 videos of 32x40 pixels and one unreadable file."""
    manual = tmp_path_factory.mktemp("manual")
    for split, name, file_name, length in VIDEOS:
        (manual / split / name).mkdir(parents=True, exist_ok=True)
        label = 2 if name == "falling" else 3  # Synthetic 'moving down' / 'moving up'.
        frames = synthetic.render_video(label, length, 32, 40, np.random.default_rng(length))
        _write_video(str(manual / split / name / file_name), CODECS[file_name.rsplit(".", 1)[1]],
                     frames)
    (manual / "train" / "rising" / "broken.mp4").write_bytes(b"not a video")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = tfds_builders.build("video_folder", str(manual), data_dir)
    return builder, data_dir


def _config(data_dir):
    config = data_defaults.get_data_config()
    config.update(source="tfds", tfds_name="video_folder", tfds_data_dir=data_dir, crop_size=16,
                  shuffle_buffer=4)
    return config


def test_builder_keeps_class_names_and_every_decodable_frame(prepared):
    builder, _ = prepared
    assert builder.info.features["label"].names == ["falling", "rising"]
    assert builder.info.splits["train"].num_examples == 4  # broken.mp4 left out.
    assert builder.info.splits["validation"].num_examples == 2
    examples = {example["video_id"].numpy().decode(): example
                for example in builder.as_dataset(split="train")}
    assert sorted(examples) == ["falling/a.mp4", "falling/b.webm", "rising/c.mp4",
                                "rising/d.mkv"]
    for split, name, file_name, length in VIDEOS[:4]:
        example = examples[f"{name}/{file_name}"]
        assert int(example["label"]) == ["falling", "rising"].index(name)
        # Shorter side resized to 256: 32x40 -> 256x320.
        assert example["video"].shape == (length, 256, 320, 3)


def test_tfds_source_trains_and_evaluates(prepared):
    _, data_dir = prepared
    config = _config(data_dir)
    assert input_pipeline.class_names(config) == ["falling", "rising"]
    assert input_pipeline.num_videos(config, "train") == 4
    iterator = input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=3,
                                                   seed=0)
    batches = [next(iterator) for _ in range(3)]
    assert batches[0]["video"].shape == (3, 4, 16, 16, 3)
    assert batches[0]["video"].dtype == np.uint8
    assert set(np.concatenate([b["label"] for b in batches])) <= {0, 1}
    assert iterator.stats.unreadable == 0
    resumed = input_pipeline.create_train_dataset(config, num_frames=4, global_batch_size=3,
                                                  seed=0, start_step=1)
    np.testing.assert_array_equal(next(resumed)["video"], batches[1]["video"])


def test_tfds_evaluation_hosts_disjoint_and_complete(prepared):
    _, data_dir = prepared
    config = _config(data_dir)
    seen, labels = [], []
    for process_index in range(2):
        batches = list(input_pipeline.create_eval_dataset(
            config, num_frames=4, batch_size=2, process_index=process_index, process_count=2))
        assert len(batches) == 1 and list(batches[0]["mask"]) == [True, False]
        assert batches[0]["video"].shape == (2, 1, 4, 16, 16, 3)
        seen.append(batches[0]["video_index"][0])
        labels.append(batches[0]["label"][0])
    assert sorted(seen) == [0, 1]  # Host p gets video p of the 2 validation videos.
    assert sorted(labels) == [0, 1]  # One falling, one rising video.


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_pipeline.prepare_tfds"):
        input_pipeline.create_eval_dataset(_config(str(tmp_path)), num_frames=4, batch_size=2)


def _videos(builder_class, root, split):
    builder = builder_class(data_dir=str(root / "tfds"))
    return builder.class_names(str(root)), builder.videos(str(root), split)


def test_something_something_v1_lists(tmp_path):
    (tmp_path / "something-something-v1-labels.csv").write_text("Holding something\nPushing "
                                                                "something from left to right\n")
    (tmp_path / "something-something-v1-validation.csv").write_text(
        "42;Pushing something from left to right\n7;Holding something\n")
    names, videos = _videos(tfds_builders.SomethingSomethingV1, tmp_path, "validation")
    assert names == ["Holding something", "Pushing something from left to right"]
    folder = str(tmp_path / "20bn-something-something-v1")
    assert videos == [("42", f"{folder}/42", 1), ("7", f"{folder}/7", 0)]


def test_something_something_v2_lists(tmp_path):
    (tmp_path / "something-something-v2-labels.json").write_text(
        '{"Putting something on a surface": "1", "Approaching something with your camera": "0"}')
    (tmp_path / "something-something-v2-train.json").write_text(
        '[{"id": "78687", "label": "putting a cup on a table", "template": "Putting [something] '
        'on a surface", "placeholders": ["a cup"]}]')
    names, videos = _videos(tfds_builders.SomethingSomethingV2, tmp_path, "train")
    assert names == ["Approaching something with your camera", "Putting something on a surface"]
    assert videos == [("78687", str(tmp_path / "20bn-something-something-v2" / "78687.webm"), 1)]


def test_kinetics400_lists_only_present_videos(tmp_path):
    (tmp_path / "annotations").mkdir()
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (tmp_path / "annotations" / "train.csv").write_text(
        header + "zumba,abc,10,20,train,0\nabseiling,def,0,10,train,0\n")
    (tmp_path / "annotations" / "validate.csv").write_text(
        header + "zumba,ghi,5,15,val,0\nzumba,gone,1,11,val,0\n")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ghi_000005_000015.mp4").write_bytes(b"")
    names, videos = _videos(tfds_builders.Kinetics400, tmp_path, "validation")
    assert names == ["abseiling", "zumba"]
    assert videos == [("ghi_000005_000015", str(tmp_path / "val" / "ghi_000005_000015.mp4"), 1)]


def test_moments_in_time_lists(tmp_path):
    (tmp_path / "moments_categories.txt").write_text("clapping,1\naiming,0\n")
    (tmp_path / "trainingSet.csv").write_text("clapping/x.mp4,clapping,3,0\n")
    (tmp_path / "training" / "clapping").mkdir(parents=True)
    (tmp_path / "training" / "clapping" / "x.mp4").write_bytes(b"")
    names, videos = _videos(tfds_builders.MomentsInTime, tmp_path, "train")
    assert names == ["aiming", "clapping"]
    assert videos == [("clapping/x.mp4", str(tmp_path / "training" / "clapping" / "x.mp4"), 1)]


def test_check_data_finds_no_problem_in_a_prepared_dataset(prepared):
    _, data_dir = prepared
    assert check_data.check_split(_config(data_dir), "train", workers=2) == []
