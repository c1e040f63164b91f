"""Training and evaluation pipelines on a tiny generated dataset: shapes, determinism, resume,
hosts, flips."""
import numpy as np
from PIL import Image
import pytest

from configs import data_defaults
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import datasets
from input_pipeline import faults
from input_pipeline import sampling
from input_pipeline import sources
from tests.test_input_synthetic import tiny_synthetic_config

NUM_FRAMES = 4
CROP = 24


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    """A 'frames' config of 12 training and 8 validation videos of 32x40 pixels, 4 classes."""
    config = data_defaults.get_data_config()
    config.source = "synthetic"
    config.root = str(tmp_path_factory.mktemp("synthetic"))
    config.synthetic = tiny_synthetic_config()
    config.crop_size = CROP
    return sources.create_source(config).config


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _train(config, **kwargs):
    arguments = dict(num_frames=NUM_FRAMES, global_batch_size=4, seed=0)
    return input_pipeline.create_train_dataset(create_source(config), **{**arguments, **kwargs})


def test_train_batch_shapes_and_labels(data_config):
    assert create_source(data_config).num_videos("train") == 12
    batch = next(_train(data_config))
    shapes = {key: (value.shape, value.dtype) for key, value in batch.items()}
    assert shapes == input_pipeline.train_batch_shapes(data_config, NUM_FRAMES, 4)
    assert batch["video"].shape == (4, NUM_FRAMES, CROP, CROP, 3)
    assert set(batch["label"]) <= {0, 1, 2, 3}


def test_train_is_deterministic_and_resumes_exactly(data_config):
    # 5 steps of 4 = 20 examples cross the epoch boundary of 12 videos.
    full = _take(_train(data_config), 5)
    again = _take(_train(data_config), 5)
    resumed = _take(_train(data_config, start_step=3), 2)
    other_seed = _take(_train(data_config, seed=1), 5)
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a["video"], b["video"])
    for a, b in zip(full[3:], resumed):
        np.testing.assert_array_equal(a["video"], b["video"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert not all(np.array_equal(a["video"], b["video"]) for a, b in zip(full, other_seed))


def test_train_epoch_visits_every_video_once(data_config):
    order = sources.TrainOrder(12, seed=5)
    epoch = [int(order.candidates(slot, 1)[0]) for slot in range(12, 24)]
    assert sorted(epoch) == list(range(12))


def test_two_hosts_split_each_global_batch(data_config):
    single = _take(_train(data_config), 3)
    hosts = [_take(_train(data_config, process_index=p, process_count=2), 3) for p in range(2)]
    for step in range(3):
        assert hosts[0][step]["video"].shape[0] == 2
        joined = np.concatenate([hosts[0][step]["video"], hosts[1][step]["video"]])
        np.testing.assert_array_equal(joined, single[step]["video"])


def test_flip_swaps_mirrored_clips_labels(data_config):
    config = data_config.copy_and_resolve_references()
    config.flip = False
    plain = _take(_train(config, global_batch_size=12), 2)
    config.flip = True
    config.flip_label_map = ((0, 1), (2, 3))
    flipped = _take(_train(config, global_batch_size=12), 2)
    swapped = 0
    for a, b in zip(plain, flipped):
        for video_a, label_a, video_b, label_b in zip(a["video"], a["label"], b["video"],
                                                      b["label"]):
            if np.array_equal(video_b, video_a):
                assert label_b == label_a
            else:
                np.testing.assert_array_equal(video_b, video_a[:, :, ::-1])
                assert label_b == label_a ^ 1
                swapped += 1
    assert 0 < swapped < 24


def _all_eval_batches(config, batch_size, process_index=0, process_count=1):
    return list(input_pipeline.create_eval_dataset(create_source(config), num_frames=NUM_FRAMES, batch_size=batch_size,
                                                   process_index=process_index, process_count=process_count))


def test_eval_views_and_every_video_once(data_config):
    config = data_config.copy_and_resolve_references()
    config.num_crops, config.num_clips = 3, 2
    batches = _all_eval_batches(config, batch_size=3)
    assert len(batches) == 3  # 8 videos in batches of 3, the last one padded.
    assert batches[0]["video"].shape == (3, 6, NUM_FRAMES, CROP, CROP, 3)
    indices = np.concatenate([b["video_index"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(indices, np.arange(8))
    assert list(batches[-1]["mask"]) == [True, True, False]
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2, 3, 3])


def test_eval_two_hosts_disjoint_and_complete(data_config):
    hosts = [_all_eval_batches(data_config, 3, p, 2) for p in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == datasets.eval_batch_count(8, 3, 2) == 2
    seen = [np.concatenate([b["video_index"][b["mask"]] for b in batches]) for batches in hosts]
    assert not set(seen[0]) & set(seen[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(8))


def test_eval_is_the_centre_crop_of_the_sampled_frames(data_config):
    config = data_config.copy_and_resolve_references()
    config.eval_resize_to_crop = True
    batch = _all_eval_batches(config, batch_size=8)[0]
    folders = sources.create_source(config).videos("val")
    length = folders.entries[0].num_frames
    paths = folders.frame_paths(0, sampling.uniform_eval_indices(length, NUM_FRAMES, 1)[0])
    first = np.asarray(Image.open(paths[0]).convert("RGB").resize((30, 24), Image.BILINEAR))
    # 32x40 frames: shorter side to 24 gives 24x30, the centre crop starts at column 3.
    difference = np.abs(batch["video"][0, 0, 0].astype(int) - first[:, 3:27].astype(int))
    assert np.mean(difference) < 4


def _rewritten(config, root, image_template, format="PNG", scale=lambda index: 1):
    """`config` on a copy of its frames under `root`, named by `image_template`: each frame saved
    in `format` from PIL's decode of the JPEG, frame i resized by `scale(i)`."""
    for list_file in (config.train_list, config.val_list):
        for entry in sources.read_video_list(list_file)[0]:
            (root / entry.video_dir).mkdir(parents=True)
            for index in range(entry.num_frames):
                jpeg = entry.frame_path(config.root, config.image_template, index)
                with Image.open(jpeg) as image:
                    size = tuple(round(side * scale(index)) for side in image.size)
                    image.convert("RGB").resize(size, Image.BILINEAR).save(
                        entry.frame_path(str(root), image_template, index), format=format)
    rewritten = config.copy_and_resolve_references()
    rewritten.update(source="frames", root=str(root), image_template=image_template)
    return rewritten


def test_png_frames_train_and_evaluate_as_their_jpegs(data_config, tmp_path):
    # The same frames as PNG, written from PIL's decode of each JPEG, which evaluation reproduces
    # bit for bit: evaluation batches are equal; training reads every clip without a fault.
    config = data_config.copy_and_resolve_references()
    png = _rewritten(config, tmp_path, "{:05d}.png")
    for jpeg_batch, png_batch in zip(_all_eval_batches(config, 8), _all_eval_batches(png, 8), strict=True):
        for key in jpeg_batch:
            np.testing.assert_array_equal(png_batch[key], jpeg_batch[key])
    train = _train(png)
    batches = _take(train, 3)
    assert [list(batch["label"]) for batch in batches] == [list(batch["label"]) for batch in _take(_train(config), 3)]
    assert batches[0]["video"].shape == (4, NUM_FRAMES, CROP, CROP, 3)
    assert train.stats.kinds == {} and train.stats.unreadable == 0


def test_frames_of_another_format_than_the_template_names_are_skipped_naming_it(data_config, tmp_path):
    # PNG files named .jpg: the template says JPEG, which training decodes only a window of, and
    # TensorFlow cannot for a PNG. PIL reads them, so no frame fault is found: every video is
    # skipped as an unreadable video, naming the format the template gave.
    train = _train(_rewritten(data_config, tmp_path, "{:05d}.jpg"))
    with pytest.raises(faults.DataError, match="none of the 12 videos of the train split could be read"):
        next(train)
    assert train.stats.kinds[faults.UNREADABLE_VIDEO] > 0
    assert train.stats.kind_examples[faults.UNREADABLE_VIDEO][0].endswith(
        "unreadable video: its frames decode in PIL, not in TensorFlow as JPEG files")


def test_videos_whose_frames_differ_in_size_train_and_evaluate_without_a_fault(data_config, tmp_path):
    # Frames at twice and at half the size of the others, as from a stream whose resolution
    # changes: every clip is read (`transforms` cuts the same part of each picture).
    scales = {1: 2, 3: 0.5}
    config = _rewritten(data_config, tmp_path, "{:05d}.jpg", "JPEG", lambda index: scales.get(index % 4, 1))
    train = _train(config)
    assert [batch["video"].shape for batch in _take(train, 3)] == [(4, NUM_FRAMES, CROP, CROP, 3)] * 3
    assert train.stats.kinds == {} and train.stats.unreadable == 0
    evaluation = input_pipeline.create_eval_dataset(create_source(config), num_frames=NUM_FRAMES, batch_size=8)
    assert all(next(evaluation)["mask"]) and evaluation.stats.kinds == {}


def test_leaving_the_with_block_stops_the_pipeline(data_config):
    with _train(data_config) as train:
        assert next(train)["video"].shape == (4, NUM_FRAMES, CROP, CROP, 3)
    with pytest.raises(StopIteration):
        next(train)
