"""The `tfds` source: datasets written by the builders of `input_pipeline.tfds_builders`.

`config.data.tfds_name` names the builder (e.g. 'something_something_v2', 'video_folder'),
`config.data.tfds_data_dir` where it was prepared, `config.data.tfds_max_fps` the frame-rate
cap it was prepared with (0: every frame). Frames are read still encoded and only the
sampled ones are decoded. Our split 'val' is TFDS's 'validation'.
"""
import functools

import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import tfds_builders

_SPLITS = {"train": "train", "val": "validation"}


def builder(config):
    """The prepared builder of `config.tfds_name`; an error saying how to prepare it if not."""
    if config.tfds_name not in tfds_builders.BUILDERS:
        raise ValueError(f"config.data.tfds_name={config.tfds_name!r}: use one of "
                         f"{sorted(tfds_builders.BUILDERS)}.")
    return _prepared_builder(config.tfds_name, config.tfds_data_dir or None, config.tfds_max_fps)


@functools.lru_cache(maxsize=None)
def _prepared_builder(name, data_dir, max_fps):
    """The builder, opened once per (name, data dir, frame-rate cap): its metadata is read from
    disk when it is made. Not cached when it is not prepared."""
    found = tfds_builders.dataset_builder(name, data_dir, max_fps)
    if not found.is_prepared():
        cap = f" --max_fps={max_fps:g}" if max_fps else ""
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {found.data_dir}: run python "
            f"-m input_pipeline.prepare_tfds --dataset={name}{cap} --manual_dir=... "
            "--data_dir=... and set config.data.tfds_data_dir (and config.data.tfds_max_fps to "
            "the --max_fps it was prepared with).")
    return found


def class_names(config):
    """The class names kept in the dataset's metadata, index = label."""
    return builder(config).info.features["label"].names


def parse(example):
    """A TFDS example (frames left encoded) -> {'frames': (n,), 'label' int32, 'video_id'}."""
    return {"frames": example["video"], "label": tf.cast(example["label"], tf.int32),
            "video_id": example["video_id"]}


def parse_video_id(example):
    """The 'video_id' of a TFDS example (its frames are not decoded anyway)."""
    return example["video_id"]


def _read(config, split, read_config, shuffle_files):
    return builder(config).as_dataset(
        split=_SPLITS[split], shuffle_files=shuffle_files, read_config=read_config,
        decoders={"video": tfds.decode.SkipDecoding()})


def train_stream(config, *, seed, process_index, process_count):
    """A host's endless stream of 'train' examples, reshuffled every epoch.

    With at least as many files as hosts, each host reads its own files; else every host
    reads all and keeps the examples `index % P == p`.
    """
    by_files = builder(config).info.splits["train"].num_shards >= process_count
    context = tf.distribute.InputContext(process_count, process_index) if by_files else None
    read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=context)
    stream = _read(config, "train", read_config, shuffle_files=True)
    if not by_files:
        stream = stream.enumerate().filter(
            lambda index, _: index % process_count == process_index).map(lambda _, e: e)
    return stream.shuffle(config.shuffle_buffer, seed=seed).repeat()


def split_stream(config, split, *, process_index, process_count):
    """Dataset of (video index, example): videos p, p + P, ... of a split, in order."""
    stream = _read(config, split, tfds.ReadConfig(), shuffle_files=False).enumerate()
    return stream.filter(lambda index, _: index % process_count == process_index)


def count_videos(config, split):
    """Number of videos of a split, from the dataset's metadata."""
    return builder(config).info.splits[_SPLITS[split]].num_examples
