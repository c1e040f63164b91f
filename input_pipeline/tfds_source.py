"""The `tfds` source's videos: a split of a dataset written by `tfds_builders`, read frame by frame.

`config.data.tfds_name` names the builder (e.g. 'something_something_v2', 'video_folder'),
`config.data.tfds_data_dir` where it was prepared, `config.data.tfds_max_fps` the frame-rate
cap it was prepared with (0: every frame). The header records of a split give each video's id,
label and number of frames; a clip then reads only its frames' records (ArrayRecord, random
access). Our split 'val' is TFDS's 'validation'.
"""
import functools

from array_record.python import array_record_data_source
import tensorflow as tf

from input_pipeline import tfds_builders

SPLITS = {"train": "train", "val": "validation"}
_HEADER_CHUNK = 4096


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


def split_records(config, split):
    """Random access to the records of split 'train' or 'val' (`tfds_builders`' layout)."""
    prepared = builder(config)
    if SPLITS[split] not in prepared.info.splits:
        raise ValueError(f"TFDS dataset {config.tfds_name!r} in {prepared.data_dir} has no split "
                         f"{SPLITS[split]!r} (it has {', '.join(prepared.info.splits)}).")
    return array_record_data_source.ArrayRecordDataSource(prepared.info.splits[SPLITS[split]].file_instructions)


def headers(records):
    """The fields (`fields`) of the header records of a split, which come first (frame -1)."""
    found, total = [], len(records)
    while len(found) < total:
        chunk = [fields(record) for record in records.__getitems__(range(len(found), min(len(found) + _HEADER_CHUNK,
                                                                                             total)))]
        kept = [header for header in chunk if header["frame"] < 0]
        found += kept
        if len(kept) < len(chunk):
            break
    return found


def fields(record):
    """A serialized record -> {feature name: its value}."""
    features = tf.train.Example.FromString(record).features.feature
    return {name: (feature.bytes_list.value or feature.int64_list.value or [b""])[0]
            for name, feature in features.items()}


def frame_jpeg(record):
    """The 'jpeg' of a serialized frame record (the only field a clip needs: 1.4x faster than `fields`)."""
    return tf.train.Example.FromString(record).features.feature["jpeg"].bytes_list.value[0]
