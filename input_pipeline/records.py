"""The `records` source: TFRecord shards of tf.train.Example, one per video.

Files: `<root>/<split>-SSSSS-of-NNNNN.tfrecord`, and `<root>/classes.txt` (the class names,
read when `config.data.class_names_file` is empty). Features:
  video_id   bytes   the video's name (its path or id in the original dataset)
  label      int64
  num_frames int64
  frames     bytes list, one JPEG per frame (shorter side resized by the preparation tool)
"""
import glob
import os

import numpy as np
import tensorflow as tf

from input_pipeline import video_list

# The class list `prepare` fixes for a dataset, beside its shards: one name a line, line i = label i.
CLASSES_FILE = "classes.txt"

FEATURES = {
    "video_id": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "frames": tf.io.VarLenFeature(tf.string),
}


def shard_name(split, shard, num_shards):
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def serialize(video_id, label, jpeg_frames):
    """A serialized tf.train.Example of one video; `jpeg_frames` is a list of JPEG bytes."""
    feature = {
        "video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id.encode()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "num_frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(jpeg_frames)])),
        "frames": tf.train.Feature(bytes_list=tf.train.BytesList(value=jpeg_frames)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(serialized):
    """A serialized Example -> {'video_id', 'label' int32, 'num_frames' int64, 'frames' (n,)}.

    Sampling counts the frames stored, not `num_frames`.
    """
    example = tf.io.parse_single_example(serialized, FEATURES)
    return {"video_id": example["video_id"], "label": tf.cast(example["label"], tf.int32),
            "num_frames": example["num_frames"],
            "frames": example["frames"].values}


def class_names(config):
    """The names of `config.class_names_file` (under `root` when relative), else of the classes.txt
    `prepare` wrote beside the shards; None when there is neither."""
    path = config.class_names_file or CLASSES_FILE
    path = path if os.path.isabs(path) else os.path.join(config.root, path)
    return video_list.read_class_names(path) if config.class_names_file or os.path.isfile(path) else None


def record_files(root, split):
    """Sorted shard paths of a split; an error naming the pattern when there are none."""
    pattern = os.path.join(root, f"{split}-*-of-*.tfrecord")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No record file matches {pattern!r}; write them with python -m "
                                "input_pipeline.prepare, or set config.data.root.")
    return files


def host_stream(files, seed, process_index, process_count):
    """The endless, per-epoch reshuffled record stream of one host, before the shuffle buffer.

    With at least as many shard files as hosts, host p reads files p, p + P, ... only; else
    every host reads every file and keeps the records `index % P == p`.
    """
    by_files = len(files) >= process_count
    mine = files[process_index::process_count] if by_files else files
    dataset = tf.data.Dataset.from_tensor_slices(mine).shuffle(len(mine), seed=seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(mine), 8))
    if not by_files:
        dataset = dataset.enumerate().filter(
            lambda index, _: index % process_count == process_index).map(lambda _, r: r)
    return dataset


def train_stream(config, *, seed, process_index, process_count):
    """A host's endless stream of serialized 'train' records, reshuffled every epoch."""
    stream = host_stream(record_files(config.root, "train"), seed, process_index,
                          process_count)
    return stream.shuffle(config.shuffle_buffer, seed=seed).repeat()


def split_stream(config, split, *, process_index, process_count):
    """Dataset of (video index, serialized record): videos p, p + P, ... of a split, in order."""
    dataset = tf.data.TFRecordDataset(record_files(config.root, split)).enumerate()
    return dataset.filter(lambda index, _: index % process_count == process_index)


def count_videos(config, split):
    """Number of videos in a split's shards (reads them all)."""
    return int(tf.data.TFRecordDataset(record_files(config.root, split)).reduce(
        np.int64(0), lambda count, _: count + 1))


def parse_video_id(serialized):
    """The 'video_id' of a serialized Example, its frames left unparsed ('' if it has none)."""
    return tf.io.parse_single_example(serialized, {"video_id": tf.io.FixedLenFeature(
        [], tf.string, default_value="")})["video_id"]
