"""Videos stored as lists of encoded JPEG frames (the `records` and `tfds` sources).

A source module (`records`, `tfds_source`) gives a host's endless, reshuffled stream of stored
items and a `parse` of one item into {'frames': (n,) JPEG strings, 'label': int32, 'video_id':
string}. Here the frames of a clip are picked among the stored ones, and examples are grouped
with their substitutes.
"""
import numpy as np
import tensorflow as tf

from input_pipeline import records
from input_pipeline import tfds_source


def source_module(config):
    """The module reading `config.source`: `records` or `tfds_source`."""
    return {"records": records, "tfds": tfds_source}[config.source]


def checked_label(label, num_classes):
    """`label`, failing (the video is then unreadable) when outside [0, num_classes).

    `num_classes` 0 checks nothing.
    """
    if not num_classes:
        return label
    checks = [tf.debugging.assert_less(label, num_classes, "label outside [0, num_classes)"),
              tf.debugging.assert_non_negative(label)]
    with tf.control_dependencies(checks):
        return tf.identity(label)


def sampled_frames(video, indices_fn, count, *arguments):
    """(count,) JPEGs of a parsed video at the indices `indices_fn(num_frames, *arguments)`.

    `indices_fn` is a numpy function; `arguments` are int64 scalar tensors, passed as ints. A
    video without frames gives empty strings, which fail to decode (it is then unreadable).
    """
    length = tf.size(video["frames"], out_type=tf.int64)
    indices = tf.numpy_function(
        lambda length, *values: np.asarray(indices_fn(int(length), *map(int, values)),
                                           np.int64).reshape(-1) if length else
        np.zeros(count, np.int64), [length, *arguments], tf.int64, stateful=False)
    frames = tf.cond(length > 0, lambda: tf.gather(video["frames"], indices),
                     lambda: tf.fill([count], ""))
    return tf.ensure_shape(frames, [count])


def train_windows(stream, parse, *, num_frames, tries, start_example, process_index,
                  process_count, indices_fn):
    """Endless dataset of windows over a host's stream of stored videos.

    Window k = {'example': int64 (tries,), 'frames': (tries, num_frames) JPEG strings,
    'label': int32 (tries,), 'video_id': (tries,)} holds videos k .. k + tries - 1 (video k,
    then those that replace it when it is unreadable), from k = `start_example` on; the items
    before are skipped unparsed. Video k of host p is example k * process_count + p, unique
    over hosts; its frames are those `indices_fn(num_frames_of_video, example)` picks.
    """

    def sample(index, item):
        example = index * process_count + process_index
        video = parse(item)
        return {"example": example, "label": video["label"], "video_id": video["video_id"],
                "frames": sampled_frames(video, indices_fn, num_frames, example)}

    clips = stream.enumerate().skip(start_example).map(
        sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    first = {"example": tf.zeros([tries], tf.int64), "label": tf.zeros([tries], tf.int32),
             "video_id": tf.fill([tries], ""), "frames": tf.fill([tries, num_frames], "")}

    def slide(window, clip):
        window = {key: tf.concat([window[key][1:], [clip[key]]], 0) for key in window}
        return window, window

    return clips.scan(first, slide).skip(tries - 1)
