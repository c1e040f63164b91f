"""The `records` source: TFRecord shards of tf.train.Example, one per video.

Files: `<root>/<split>-SSSSS-of-NNNNN.tfrecord`. Features:
  video_id   bytes   the video's name (its path or id in the original dataset)
  label      int64
  num_frames int64
  frames     bytes list, one JPEG per frame (shorter side resized by the preparation tool)
"""
import glob
import os

import numpy as np
import tensorflow as tf

from input_pipeline import sampling

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
    """A serialized Example -> {'video_id', 'label' int32, 'num_frames' int64, 'frames' (n,)}."""
    example = tf.io.parse_single_example(serialized, FEATURES)
    return {"video_id": example["video_id"], "label": tf.cast(example["label"], tf.int32),
            "num_frames": example["num_frames"],
            "frames": tf.sparse.to_dense(example["frames"])}


def record_files(root, split):
    """Sorted shard paths of a split; an error naming the pattern when there are none."""
    pattern = os.path.join(root, f"{split}-*-of-*.tfrecord")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No record file matches {pattern!r}; write them with python -m "
                                "input_pipeline.prepare, or set config.data.root.")
    return files


def sampled_frames(example, index, indices_fn):
    """The JPEGs at the indices `indices_fn(num_frames, index)` (a numpy function) picks."""
    indices = tf.numpy_function(
        lambda length, i: np.asarray(indices_fn(int(length), int(i)), np.int64).reshape(-1),
        [example["num_frames"], index], tf.int64, stateful=False)
    return tf.gather(example["frames"], indices)


def train_examples(config, *, num_frames, seed, process_index, process_count, start_example):
    """Endless dataset of {'frames': (num_frames,) JPEG, 'label', 'example' index} for one host.

    Each host reads every shard and keeps examples `index % process_count == process_index` of a
    seeded, per-epoch reshuffled stream; resuming skips the `start_example` examples before.
    """
    files = record_files(config.root, "train")
    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8))
    dataset = dataset.shuffle(config.shuffle_buffer, seed=seed).repeat().enumerate()
    dataset = dataset.filter(lambda index, _: index % process_count == process_index)
    dataset = dataset.skip(start_example)

    def sample(index, serialized):
        example = parse(serialized)
        frames = sampled_frames(example, index, lambda length, i: sampling.train_indices(
            config, length, num_frames, np.random.default_rng([seed, i])))
        return {"frames": tf.ensure_shape(frames, [num_frames]), "label": example["label"],
                "example": index}

    return dataset.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_examples(config, *, num_frames, process_index, process_count):
    """Dataset of {'frames': (num_clips * num_frames,) JPEG, 'label', 'video_index'} of one host."""
    dataset = tf.data.TFRecordDataset(record_files(config.root, "val")).enumerate()
    dataset = dataset.filter(lambda index, _: index % process_count == process_index)

    def sample(index, serialized):
        example = parse(serialized)
        frames = sampled_frames(example, index, lambda length, _: sampling.eval_indices(
            config, length, num_frames))
        return {"frames": tf.ensure_shape(frames, [config.num_clips * num_frames]),
                "label": example["label"], "video_index": index}

    return dataset.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def count_videos(root, split):
    """Number of videos in a split's shards (reads them all)."""
    return int(tf.data.TFRecordDataset(record_files(root, split)).reduce(
        np.int64(0), lambda count, _: count + 1))
