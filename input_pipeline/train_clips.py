"""Training clips: the augmentation of one clip and the schema of a training batch.

A clip's crop window and flip come from a stateless TF seed (seed, example), so they are the same
whenever the example is made again (`sources` draws its frame indices the same way).
"""
import numpy as np
import tensorflow as tf

from input_pipeline import transforms


def _flip_label_table(config):
    """int32 (n,): the label of each class after a horizontal flip, for the labels < n it names."""
    size = 1 + max([label for pair in config.flip_label_map for label in pair], default=0)
    table = np.arange(size, dtype=np.int32)
    for a, b in config.flip_label_map:
        table[a], table[b] = b, a
    return tf.constant(table)


def train_clip_fn(config, seed):
    """(jpegs (n,), label, example index) -> (uint8 (n, crop, crop, 3), label after the flip)."""
    flip_table = _flip_label_table(config)
    scales = tuple(config.train_scales)

    def train_clip(jpegs, label, index):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), index]), 2))
        flip = tf.logical_and(config.flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
        clip = transforms.decode_train_clip(jpegs, config.crop_size, scales, config.max_distort, crop_seed, flip)
        size = flip_table.shape[0]
        flipped = tf.where(label < size, tf.gather(flip_table, tf.minimum(label, size - 1)), label)
        return clip, tf.where(flip, flipped, label)

    return train_clip


def train_batch_shapes(data_config, num_frames, batch_size):
    """{key: (shape, numpy dtype)} of a training batch of `batch_size` clips: 'video' uint8
    (batch, num_frames, crop, crop, 3) and 'label' int32 (batch,)."""
    crop = data_config.crop_size
    return {"video": ((batch_size, num_frames, crop, crop, 3), np.uint8), "label": ((batch_size,), np.int32)}


def gave_up(config, num_frames, tries, slot, **extra):
    """The element of an example none of whose candidates could be read (label -1, attempt
    `tries`): filled on the host from another example of its batch (`faults.fill_holes`)."""
    crop = config.crop_size
    return {"video": tf.zeros([num_frames, crop, crop, 3], tf.uint8), "label": tf.constant(-1),
            "attempt": tf.constant(tries), "slot": slot, "sampled": tf.zeros([num_frames], tf.int64),
            "used": tf.zeros([num_frames], tf.int64), **extra}
