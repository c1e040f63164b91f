"""Training clips as tf.data datasets: candidates, substitutes for unreadable videos, decoding.

Frame folders: example slot k holds a video of a seeded per-epoch permutation (`TrainOrder`);
its substitutes are the videos after it in that permutation. Records and TFDS: example k is the
k-th video of the host's stream; its substitutes are the videos after it in the stream. Each
video is tried as sampled, then with its unreadable frames substituted (`faults`). Frame
indices are drawn by numpy generators seeded by the seed and the example, the crop and flip by a
stateless TF seed (seed, example).
"""
import numpy as np
import tensorflow as tf

from input_pipeline import encoded
from input_pipeline import faults
from input_pipeline import sampling
from input_pipeline import sources
from input_pipeline import transforms


class TrainOrder:
    """Which videos may fill example slot k: a seeded permutation of all videos per epoch."""

    def __init__(self, num_videos, seed):
        self.num_videos = num_videos
        self.seed = seed
        self._cached = (None, None)  # (epoch, permutation), replaced whole: thread-safe.

    def candidates(self, slot, count):
        """int64 (count,): the video of slot `slot`, then the ones that replace it if unreadable."""
        epoch, position = divmod(int(slot), self.num_videos)
        cached_epoch, permutation = self._cached
        if epoch != cached_epoch:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)
            self._cached = (epoch, permutation)
        return permutation[(position + np.arange(count)) % self.num_videos]


def _flip_label_table(config):
    """int32 (n,): the label of each class after a horizontal flip, for the labels < n it names."""
    size = 1 + max([label for pair in config.flip_label_map for label in pair], default=0)
    table = np.arange(size, dtype=np.int32)
    for a, b in config.flip_label_map:
        table[a], table[b] = b, a
    return tf.constant(table)


def _train_clip_fn(config, seed):
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


def _frames_train_candidates(config, folders, order, *, num_frames, seed, tries, first_slots):
    """Dataset of {'video': (tries,) int64, 'indices': (tries, num_frames) int64, 'paths':
    (tries, num_frames) string, 'label': (tries,) int32, 'slot'}: per example slot its video,
    sampled frame indices and their paths, then those of its substitutes.

    `first_slots` maps a step to this host's int64 (local_batch,) slots of that step; frame
    indices of slot k, attempt a come from a generator seeded by (seed, k, a).
    """
    labels = np.array([entry.label for entry in folders.entries], np.int32)

    def step_candidates(step):
        slots = first_slots(step)
        indices = np.empty((len(slots), tries, num_frames), np.int64)
        paths = np.empty((len(slots), tries, num_frames), object)
        videos = np.stack([order.candidates(slot, tries) for slot in slots])
        for i, slot in enumerate(slots):
            for attempt, video in enumerate(videos[i]):
                rng = np.random.default_rng([seed, slot, attempt])
                length = folders.entries[video].num_frames
                indices[i, attempt] = sampling.train_indices(config, length, num_frames, rng)
                paths[i, attempt] = [p.encode() for p in folders.frame_paths(video, indices[i, attempt])]
        return videos, indices, paths.astype(bytes), labels[videos], slots

    def step_elements(step):
        videos, indices, paths, label, slots = tf.numpy_function(
            step_candidates, [step], (tf.int64, tf.int64, tf.string, tf.int32, tf.int64), stateful=False)
        return {"video": tf.ensure_shape(videos, [None, tries]),
                "indices": tf.ensure_shape(indices, [None, tries, num_frames]),
                "paths": tf.ensure_shape(paths, [None, tries, num_frames]),
                "label": tf.ensure_shape(label, [None, tries]),
                "slot": tf.ensure_shape(slots, [None])}

    return tf.data.Dataset.range(np.iinfo(np.int64).max).map(step_elements).unbatch()


def _gave_up(config, num_frames, tries, slot, **extra):
    """The element of an example none of whose candidates could be read (label -1, attempt
    `tries`): filled on the host from another example of its batch (`faults.fill_holes`)."""
    crop = config.crop_size
    return {"video": tf.zeros([num_frames, crop, crop, 3], tf.uint8), "label": tf.constant(-1),
            "attempt": tf.constant(tries), "slot": slot, "sampled": tf.zeros([num_frames], tf.int64),
            "used": tf.zeros([num_frames], tf.int64), **extra}


def frames_train_clips(config, folders, *, num_frames, seed, start_step, global_batch_size,
                        process_index, local_batch, tries, substitute):
    """Dataset of {'video', 'label', 'attempt', 'slot', 'sampled', 'used'} from `start_step` on:
    per example slot the first readable of its `tries` candidate videos (attempt = how many
    failed before), with `substitute` its unreadable frames replaced (`faults`); 'sampled' and
    'used' (num_frames,) are the frame indices drawn and those read."""
    order = TrainOrder(len(folders.entries), seed)
    offset = start_step * global_batch_size + process_index * local_batch
    first_slots = lambda step: offset + step * global_batch_size + np.arange(local_batch)
    candidates = _frames_train_candidates(config, folders, order, num_frames=num_frames,
                                          seed=seed, tries=tries, first_slots=first_slots)
    train_clip = _train_clip_fn(config, seed)

    def example(element):
        slot = element["slot"]

        def load(candidate):
            paths, used = tf.cond(candidate["substitute"], lambda: tuple(tf.numpy_function(
                folders.substituted_paths, [candidate["video"], candidate["indices"]],
                (tf.string, tf.int64), stateful=False)), lambda: (candidate["paths"], candidate["indices"]))
            paths = tf.ensure_shape(paths, [num_frames])
            clip, label = train_clip(sources.read_files(paths), candidate["label"], slot)
            return {"video": clip, "label": label, "attempt": candidate["attempt"], "slot": slot,
                    "sampled": candidate["indices"], "used": tf.ensure_shape(used, [num_frames])}

        videos = {key: element[key] for key in ("video", "indices", "paths", "label")}
        return faults.first_readable(faults.attempts(videos, substitute), load,
                                     lambda: _gave_up(config, num_frames, tries, slot))

    clips = faults.map_examples(candidates, example, config.num_parallel_calls)
    return clips, order


def encoded_train_clips(config, *, num_frames, seed, start_step, process_index,
                         process_count, local_batch, tries, substitute):
    """Dataset of {'video', 'label', 'attempt', 'slot', 'ids', 'sampled', 'used'}: per example
    the first readable of its video and the next `tries - 1` of the host's stream, with
    `substitute` their unreadable frames replaced; 'ids' (tries,) names them."""
    source = encoded.source_module(config)
    stream = source.train_stream(config, seed=seed, process_index=process_index,
                                 process_count=process_count)
    windows = encoded.train_windows(stream, source.parse, tries=tries, start_example=start_step * local_batch,
                                    process_index=process_index, process_count=process_count)
    indices_fn = lambda length, example: sampling.train_indices(
        config, length, num_frames, np.random.default_rng([seed, example]))
    train_clip = _train_clip_fn(config, seed)
    num_classes = sources.num_classes(config)

    def example(window):
        slot = window["example"][0]

        def load(candidate):
            video = {"frames": encoded.unbox(candidate["frames"])}
            indices = encoded.sampled_indices(video, indices_fn, num_frames, candidate["example"])
            jpegs, used = encoded.clip_frames(video, indices, candidate["substitute"])
            clip, label = train_clip(jpegs, encoded.checked_label(candidate["label"], num_classes), slot)
            return {"video": clip, "label": label, "attempt": candidate["attempt"], "slot": slot,
                    "ids": window["video_id"], "sampled": indices, "used": used}

        return faults.first_readable(faults.attempts(window, substitute), load, lambda: _gave_up(
            config, num_frames, tries, slot, ids=window["video_id"]))

    return faults.map_examples(windows, example, config.num_parallel_calls)
