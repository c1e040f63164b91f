"""The TFDS builders on tiny PyAV-written manual downloads in each dataset's layout, read by the 'tfds' source."""
import csv
import json
import typing

import numpy as np
import pytest
from PIL import Image

from blvnet_jax import config_check
from configs import data_defaults
from configs import demo
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import check_data
from input_pipeline import synthetic
from input_pipeline import tfds_builders
from input_pipeline import video_files

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
        video_files.write_video(str(manual / split / name / file_name), frames,
                                CODECS[file_name.rsplit(".", 1)[1]])
    (manual / "train" / "rising" / "broken.mp4").write_bytes(b"not a video")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = tfds_builders.build("video_folder", str(manual), data_dir)
    return builder, data_dir


def _config(data_dir, tfds_name="video_folder"):
    config = data_defaults.get_data_config()
    config.update(source="tfds", tfds_name=tfds_name, tfds_data_dir=data_dir, crop_size=16,
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
    assert create_source(config).class_names() == ["falling", "rising"]
    assert create_source(config).num_videos("train") == 4
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=3,
                                                   seed=0)
    batches = [next(iterator) for _ in range(3)]
    assert batches[0]["video"].shape == (3, 4, 16, 16, 3)
    assert batches[0]["video"].dtype == np.uint8
    assert set(np.concatenate([b["label"] for b in batches])) <= {0, 1}
    assert iterator.stats.unreadable == 0
    resumed = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=3,
                                                  seed=0, start_step=1)
    np.testing.assert_array_equal(next(resumed)["video"], batches[1]["video"])


def test_tfds_evaluation_hosts_disjoint_and_complete(prepared):
    _, data_dir = prepared
    config = _config(data_dir)
    seen, labels = [], []
    for process_index in range(2):
        batches = list(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=2,
                                                          process_index=process_index, process_count=2))
        assert len(batches) == 1 and list(batches[0]["mask"]) == [True, False]
        assert batches[0]["video"].shape == (2, 1, 4, 16, 16, 3)
        seen.append(batches[0]["video_index"][0])
        labels.append(batches[0]["label"][0])
    assert sorted(seen) == [0, 1]  # Host p gets video p of the 2 validation videos.
    assert sorted(labels) == [0, 1]  # One falling, one rising video.


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_pipeline.prepare_tfds"):
        input_pipeline.create_eval_dataset(create_source(_config(str(tmp_path))), num_frames=4, batch_size=2)


def test_config_check_counts_the_classes_in_the_metadata(prepared, tmp_path):
    _, data_dir = prepared
    config = demo.get_config()  # 8 classes
    config.data = _config(data_dir)
    with pytest.raises(config_check.ConfigError, match=r"config.model.num_classes=8 but the data has 2 classes \(the "
                       r"class names of TFDS dataset 'video_folder'\): set --config.model.num_classes=2"):
        config_check.check_num_classes(config)
    config.model.num_classes = 2
    config_check.check_num_classes(config)
    config.data.tfds_data_dir = str(tmp_path)
    with pytest.raises(config_check.ConfigError, match="not prepared in .* input_pipeline.prepare_tfds"):
        config_check.check_num_classes(config)


def test_check_data_finds_no_problem_in_a_prepared_dataset(prepared):
    _, data_dir = prepared
    assert check_data.check_split(_config(data_dir), "train", workers=2) == []


def test_max_fps_config_keeps_at_most_that_many_frames_a_second(tmp_path):
    manual = tmp_path / "manual"
    lengths = {"train": [9, 8], "validation": [7]}
    for split, split_lengths in lengths.items():
        for number, length in enumerate(split_lengths):
            (manual / split / "falling").mkdir(parents=True, exist_ok=True)
            frames = synthetic.render_video(2, length, 32, 40, np.random.default_rng(length))
            video_files.write_video(str(manual / split / "falling" / f"{number}.mp4"), frames,
                                    fps=12)
    data_dir = str(tmp_path / "tfds")
    builder = tfds_builders.build("video_folder", str(manual), data_dir, max_fps=6)
    assert builder.data_dir.startswith(f"{data_dir}/video_folder/max_fps_6/")
    # 12 fps thinned to 6: frames 0, 2, 4, ... are kept.
    stored = sorted(example["video"].shape[0] for example in builder.as_dataset(split="train"))
    assert stored == [4, 5]
    config = _config(data_dir)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        create_source(config).num_videos("train")  # Every frame was not prepared.
    config.tfds_max_fps = 6
    assert create_source(config).num_videos("train") == 2
    batch = next(iter(input_pipeline.create_eval_dataset(create_source(config), num_frames=4, batch_size=1)))
    assert batch["video"].shape == (1, 1, 4, 16, 16, 3)
    with pytest.raises(ValueError, match="distributed as frames"):
        tfds_builders.build("something_something_v1", str(manual), data_dir, max_fps=6)


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
    with open(path, "w", newline="") as f:
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
    return name, download, tfds_builders.build(name, str(manual), data_dir), data_dir


def test_builder_keeps_class_order_labels_and_frames_in_order(dataset):
    _, download, builder, _ = dataset
    assert builder.info.features["label"].names == download.class_names
    for split in SPLITS:
        expected = {video.video_id: video for video in download.videos if video.split == split}
        assert builder.info.splits[split].num_examples == len(expected)
        examples = {example["video_id"].numpy().decode(): example for example in builder.as_dataset(split=split)}
        assert sorted(examples) == sorted(expected)
        for video_id, video in expected.items():
            frames = examples[video_id]["video"].numpy()
            assert int(examples[video_id]["label"]) == video.label
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
    assert sorted(labels) == sorted(video.label for video in download.videos if video.split == "validation")


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
    with pytest.raises(ValueError, match="something-something-v1-train.csv: video 7 is of class 'Dropping something'"):
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
