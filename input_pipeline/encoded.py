"""Videos stored as lists of encoded JPEG frames (`sources.StoredSource`), in TensorFlow.

A parsed video is {'frames': (n,) JPEG strings, 'label': int32, 'video_id': string}. Here the
frames of a clip are picked among the stored ones (unreadable ones substituted), and training
examples are grouped with their candidate videos.
"""
import io

import numpy as np
import tensorflow as tf

from input_pipeline import faults


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


def sampled_indices(video, indices_fn, count, *arguments):
    """int64 (count,): the frame indices `indices_fn(num_frames, *arguments)` of a parsed video
    (zeros for a video without frames).

    `indices_fn` is a numpy function; `arguments` are int64 scalar tensors, passed as ints.
    """
    length = tf.size(video["frames"], out_type=tf.int64)
    indices = tf.numpy_function(
        lambda length, *values: np.asarray(indices_fn(int(length), *map(int, values)),
                                           np.int64).reshape(-1) if length else
        np.zeros(count, np.int64), [length, *arguments], tf.int64, stateful=False)
    return tf.ensure_shape(indices, [count])


def _readable_substitutes(frames, indices):
    """`faults.substitutes` of stored JPEGs; -1s, which fail to gather, when it finds none (an
    exception here would print its traceback)."""
    try:
        return faults.substitutes(indices, len(frames), lambda i: not faults.image_problem(
            io.BytesIO(frames[i]), quick=True))
    except faults.NoSubstitute:
        return np.full(len(indices), -1, np.int64)


def clip_frames(video, indices, substitute):
    """(JPEGs, int64 indices read), both (count,), of a parsed video at `indices`; when the bool
    tensor `substitute` is true each frame that does not decode is replaced by its nearest
    readable neighbour (`faults.substitutes`: it fails when none is, or none needs replacing).
    A video without frames gives empty strings, which fail to decode (it is then unreadable)."""
    frames = video["frames"]
    used = faults.substitute_or_not(substitute, indices, lambda: tf.numpy_function(
        _readable_substitutes, [frames, indices], tf.int64, stateful=False))
    count = indices.shape[0]
    jpegs = tf.cond(tf.size(frames) > 0, lambda: tf.gather(frames, used),
                    lambda: tf.fill([count], ""))
    return tf.ensure_shape(jpegs, [count]), used


def box(frames):
    """A variant scalar holding the (n,) string tensor `frames` by reference (a one-element
    TensorList): windows of boxed videos are stacked and sliced without copying a byte, where
    `concat` and `stack` of string tensors copy every one."""
    return tf.raw_ops.TensorListFromTensor(tensor=frames[None], element_shape=tf.constant([-1], tf.int32))


def unbox(boxed):
    """The (n,) string tensor a `box` holds."""
    return tf.raw_ops.TensorListGetItem(input_handle=boxed, index=0, element_shape=tf.constant([-1], tf.int32),
                                        element_dtype=tf.string)


def train_windows(stream, parse, *, tries, start_example, process_index, process_count):
    """Endless dataset of windows over a host's stream of stored videos.

    Window k = {'example': int64 (tries,), 'frames': (tries,) boxed (n,) JPEG strings (`box`),
    'label': int32 (tries,), 'video_id': (tries,)} holds videos k .. k + tries - 1 (video k,
    then those that replace it when it is unreadable), from k = `start_example` on; the items
    before are skipped unparsed. Video k of host p is example k * process_count + p, unique
    over hosts (its frames are drawn with that number).
    """
    def parsed(index, item):
        video = parse(item)
        return {"example": index * process_count + process_index, "label": video["label"],
                "video_id": video["video_id"], "frames": box(video["frames"])}

    videos = stream.enumerate().skip(start_example).map(
        parsed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    first = {"example": tf.zeros([tries], tf.int64), "label": tf.zeros([tries], tf.int32),
             "video_id": tf.fill([tries], ""), "frames": (box(tf.zeros([0], tf.string)),) * tries}

    def slide(window, video):
        window = {key: window[key][1:] + (video[key],) if key == "frames" else
                  tf.concat([window[key][1:], [video[key]]], 0) for key in window}
        return window, {**window, "frames": tf.stack(window["frames"])}

    return videos.scan(first, slide).skip(tries - 1)
