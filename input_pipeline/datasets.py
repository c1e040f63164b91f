"""Training and evaluation pipelines: iterators of numpy batches of uint8 clips.

Training is a pure function of (seed, step): example slot k = step * global_batch + i holds a
video of a seeded per-epoch permutation, its frame indices come from a generator seeded by
(seed, k) and its crop and flip from a stateless TF seed (seed, k). A resumed run therefore sees
exactly the batches of an uninterrupted one. Host p reads slots [p * local, (p + 1) * local) of
every global batch. An unreadable video is replaced by the next video of the permutation and
counted in `iterator.stats` (an error in strict mode).
"""
import dataclasses
import logging
import os

import numpy as np
import tensorflow as tf

from input_pipeline import records
from input_pipeline import sampling
from input_pipeline import sources
from input_pipeline import transforms

tf.config.set_visible_devices([], "GPU")

_MAX_EXAMPLES = 20


@dataclasses.dataclass
class InputStats:
    """Videos found unreadable so far: their count and the first messages naming them."""
    unreadable: int = 0
    examples: list = dataclasses.field(default_factory=list)
    bad_list_lines: list = dataclasses.field(default_factory=list)

    def record(self, message, strict):
        """Counts one unreadable video; raises instead in strict mode."""
        if strict:
            raise ValueError(message + "\n(config.data.strict is on: fix the data, or turn it off to "
                             "skip and count unreadable videos.)")
        self.unreadable += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(message)
        logging.warning("Skipped an unreadable video (%d so far): %s", self.unreadable, message)


class TrainOrder:
    """Which videos may fill example slot k: a seeded permutation of all videos per epoch."""

    def __init__(self, num_videos, seed):
        self.num_videos = num_videos
        self.seed = seed
        self._epoch, self._permutation = None, None

    def candidates(self, slot, count):
        """int64 (count,): the video of slot `slot`, then the ones that replace it if unreadable."""
        epoch, position = divmod(int(slot), self.num_videos)
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)
        return self._permutation[(position + np.arange(count)) % self.num_videos]


class BatchIterator:
    """Numpy batches of a tf.data pipeline; unreadable videos are counted in `stats`."""

    def __init__(self, dataset, describe_failures, keys, strict, stats):
        self._batches = dataset.as_numpy_iterator()
        self._describe_failures = describe_failures
        self._keys = keys
        self._strict = strict
        self.stats = stats

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._batches)
        for message in self._describe_failures(batch):
            self.stats.record(message, self._strict)
        return {key: batch[key] for key in self._keys}


def _parallel_calls(config):
    return tf.data.AUTOTUNE if config.num_parallel_calls < 0 else config.num_parallel_calls


def _options():
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def _read_files(paths):
    """(n,) string paths -> (n,) string file contents; n is static."""
    return tf.stack([tf.io.read_file(paths[i]) for i in range(paths.shape[0])])


def _flip_label_table(config):
    """int32 (n,): the label of each class after a horizontal flip, for the labels < n it names."""
    size = 1 + max([label for pair in config.flip_label_map for label in pair], default=0)
    table = np.arange(size, dtype=np.int32)
    for a, b in config.flip_label_map:
        table[a], table[b] = b, a
    return tf.constant(table)


def _train_clip_fn(config, seed):
    """(jpegs (n,), label, example index) -> (uint8 (n, crop, crop, 3), label after flip)."""
    flip_table = _flip_label_table(config)

    def train_clip(jpegs, label, index):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), index]), 2))
        flip = tf.logical_and(config.flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
        video = transforms.decode_train_clip(jpegs, config.crop_size, tuple(config.train_scales),
                                             config.max_distort, crop_seed, flip)
        size = flip_table.shape[0]
        flipped = tf.where(label < size, tf.gather(flip_table, tf.minimum(label, size - 1)), label)
        return video, tf.where(flip, flipped, label)

    return train_clip


def _eval_clip_fn(config, num_frames):
    """jpegs (num_clips * n,) -> uint8 (views, n, crop, crop, 3), views clip-major."""
    resize_side = transforms.eval_resize_side(config.crop_size, config.eval_resize_to_crop)

    def eval_clip(jpegs):
        frames = tf.stack([tf.io.decode_jpeg(jpegs[i], channels=3) for i in range(jpegs.shape[0])])
        crops = transforms.eval_views(frames, config.crop_size, resize_side, config.num_crops)
        crops = tf.reshape(crops, [config.num_crops, config.num_clips, num_frames,
                                   config.crop_size, config.crop_size, 3])
        return tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                          [-1, num_frames, config.crop_size, config.crop_size, 3])

    return eval_clip


def _slots(start_step, global_batch_size, process_index, local_batch):
    """This host's example slots from `start_step` on, forever."""
    first = start_step * global_batch_size + process_index * local_batch
    for step_start in range(first, np.iinfo(np.int64).max, global_batch_size):
        yield from range(step_start, step_start + local_batch)


def _describe(folders, video_index):
    entry = folders.entries[video_index]
    problems = folders.video_problems(video_index)
    return f"{entry.where} video {entry.video_dir!r}: " + "; ".join(problems or ["unreadable"])


def _frames_train_clips(config, folders, *, num_frames, seed, slots, tries, order):
    """Dataset of {'video', 'label', 'attempt', 'slot'}: the first readable of `tries` videos."""
    labels = np.array([entry.label for entry in folders.entries], np.int32)
    train_clip = _train_clip_fn(config, seed)

    def candidates():
        for slot in slots:
            videos = order.candidates(slot, tries)
            paths = []
            for attempt, video in enumerate(videos):
                rng = np.random.default_rng([seed, slot, attempt])
                length = folders.entries[video].num_frames
                indices = sampling.train_indices(config, length, num_frames, rng)
                paths.append(folders.frame_paths(video, indices))
            yield {"paths": paths, "label": labels[videos], "slot": slot}

    def load(paths, label, attempt, slot):
        video, label = train_clip(_read_files(paths), label, slot)
        return {"video": video, "label": label, "attempt": attempt, "slot": slot}

    def first_readable(element):
        tried = tf.data.Dataset.from_tensor_slices(
            (element["paths"], element["label"], tf.range(tries)))
        loaded = tried.map(lambda p, l, a: load(p, l, a, element["slot"])).ignore_errors()
        gave_up = {"video": tf.zeros([num_frames, config.crop_size, config.crop_size, 3], tf.uint8),
                   "label": tf.constant(-1), "attempt": tf.constant(tries), "slot": element["slot"]}
        return loaded.concatenate(tf.data.Dataset.from_tensors(gave_up)).take(1)

    signature = {"paths": tf.TensorSpec([tries, num_frames], tf.string),
                 "label": tf.TensorSpec([tries], tf.int32), "slot": tf.TensorSpec([], tf.int64)}
    dataset = tf.data.Dataset.from_generator(candidates, output_signature=signature)
    return dataset.interleave(first_readable, cycle_length=max(4, os.cpu_count()), block_length=1,
                              num_parallel_calls=_parallel_calls(config), deterministic=True)


def create_train_dataset(data_config, *, num_frames, global_batch_size, seed, process_index=0,
                         process_count=1, start_step=0):
    """An endless iterator of {'video': uint8 (local_batch, num_frames, crop, crop, 3),
    'label': int32 (local_batch,)} with local_batch = global_batch_size // process_count.

    Batches from `start_step` on equal those an uninterrupted run sees from that step.
    """
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} does not divide over "
                         f"{process_count} processes.")
    config = sources.resolve_synthetic(data_config)
    local_batch = global_batch_size // process_count
    if config.source == "records":
        train_clip = _train_clip_fn(config, seed)
        examples = records.train_examples(
            config, num_frames=num_frames, seed=seed, process_index=process_index,
            process_count=process_count, start_example=start_step * local_batch)
        dataset = examples.map(lambda e: dict(zip(("video", "label"), train_clip(
            e["frames"], e["label"], e["example"]))), num_parallel_calls=_parallel_calls(config),
                               deterministic=True)
        describe_failures, stats = lambda batch: (), InputStats()
    else:
        folders = sources.frame_folders(config, "train")
        tries = 1 if config.strict else config.max_substitutes
        order = TrainOrder(len(folders.entries), seed)
        slots = _slots(start_step, global_batch_size, process_index, local_batch)
        dataset = _frames_train_clips(config, folders, num_frames=num_frames, seed=seed,
                                      slots=slots, tries=tries, order=order)

        def describe_failures(batch):
            for slot, attempt in zip(batch["slot"], batch["attempt"]):
                for video in order.candidates(slot, attempt):
                    yield _describe(folders, video)
                if attempt == tries:
                    raise RuntimeError(f"{tries} videos in a row were unreadable at example {slot}; the "
                                       "dataset looks broken: run python -m input_pipeline.check_data.")

        stats = InputStats(bad_list_lines=folders.problems)
    dataset = dataset.batch(local_batch, drop_remainder=True).prefetch(config.prefetch)
    return BatchIterator(dataset.with_options(_options()), describe_failures, ("video", "label"),
                         config.strict, stats)


def eval_batch_count(num_videos, batch_size, process_count):
    """Batches per host: every host runs the same number, the last ones padded."""
    per_host = -(-num_videos // process_count)
    return -(-per_host // batch_size)


def _frames_eval_elements(folders, config, num_frames, my_videos):
    """Dataset of {'frames': paths (num_clips * num_frames,), 'label', 'video_index'}."""

    def videos():
        for video in my_videos:
            indices = sampling.eval_indices(config, folders.entries[video].num_frames, num_frames)
            yield {"frames": folders.frame_paths(video, indices.reshape(-1)),
                   "label": folders.entries[video].label, "video_index": video}

    signature = {"frames": tf.TensorSpec([config.num_clips * num_frames], tf.string),
                 "label": tf.TensorSpec([], tf.int32), "video_index": tf.TensorSpec([], tf.int64)}
    return tf.data.Dataset.from_generator(videos, output_signature=signature)


def create_eval_dataset(data_config, *, num_frames, batch_size, process_index=0,
                        process_count=1):
    """A finite iterator of {'video': uint8 (batch, views, num_frames, crop, crop, 3),
    'label': int32 (batch,), 'video_index': int64 (batch,), 'mask': bool (batch,)}.

    views = num_crops * num_clips, clip-major. Host p reads videos p, p + P, ...; padding
    examples (video_index -1) and unreadable videos have mask False, so summing over the mask on
    all hosts counts every readable video exactly once.
    """
    config = sources.resolve_synthetic(data_config)
    if config.source == "records":
        num_videos = records.count_videos(config.root, "val")
        elements = records.eval_examples(config, num_frames=num_frames,
                                         process_index=process_index, process_count=process_count)
        read = lambda element: element["frames"]
        folders, stats = None, InputStats()
    else:
        folders = sources.frame_folders(config, "val")
        num_videos = len(folders.entries)
        elements = _frames_eval_elements(folders, config, num_frames,
                                         np.arange(process_index, num_videos, process_count))
        read = lambda element: _read_files(element["frames"])
        stats = InputStats(bad_list_lines=folders.problems)
    my_count = len(range(process_index, num_videos, process_count))
    num_padding = eval_batch_count(num_videos, batch_size, process_count) * batch_size - my_count
    eval_clip = _eval_clip_fn(config, num_frames)
    views = config.num_crops * config.num_clips
    empty = tf.zeros([views, num_frames, config.crop_size, config.crop_size, 3], tf.uint8)

    def load(element, readable):
        video = eval_clip(read(element)) if readable else empty
        return {"video": video, "label": element["label"], "video_index": element["video_index"],
                "mask": tf.constant(readable)}

    def first_readable(element):
        single = tf.data.Dataset.from_tensors(element)
        return single.map(lambda e: load(e, True)).ignore_errors().concatenate(
            single.map(lambda e: load(e, False))).take(1)

    dataset = elements.interleave(first_readable, cycle_length=max(4, os.cpu_count()),
                                  block_length=1, num_parallel_calls=_parallel_calls(config),
                                  deterministic=True)
    padding = {"video": empty, "label": tf.constant(0), "video_index": tf.constant(-1, tf.int64),
               "mask": tf.constant(False)}
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
    dataset = dataset.batch(batch_size).prefetch(config.prefetch)

    def describe_failures(batch):
        for video, mask in zip(batch["video_index"], batch["mask"]):
            if video >= 0 and not mask:
                yield _describe(folders, video) if folders else f"record video number {video}"

    return BatchIterator(dataset.with_options(_options()), describe_failures,
                         ("video", "label", "video_index", "mask"), config.strict, stats)
