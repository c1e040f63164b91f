"""Training and evaluation pipelines: iterators of numpy batches of uint8 clips.

Both are built over a `sources.Source`, which says which videos a host reads. Training is a pure
function of (seed, step), so a resumed run sees exactly the batches of an uninterrupted one: a
clip's frame indices come from a numpy generator seeded by (seed, example) (`sources`), its crop
window and flip from a stateless TF seed (seed, example). Bad input is handled as `faults` says
(unreadable frames substituted, unreadable videos replaced in training and masked in evaluation,
the stop rule, strict mode) and counted in `iterator.stats`. With several processes the first
`faults.DataError` waits in `iterator.error` for the caller to raise it on all of them together.
"""
import concurrent.futures
import os

import numpy as np

from input_pipeline import faults
from input_pipeline import transforms
from input_pipeline.tensorflow_cpu import tf


class BatchIterator:
    """Numpy batches of a tf.data pipeline, the faults of each example counted in `stats`
    (`faults.InputStats.add_example`) as it is handed over; the counts are logged when the
    batches run out.

    The pipeline's examples are {'video', 'label', 'key', 'loaded'} (`sources.Source.read_examples`);
    a batch is handed over as {name: its field `fields[name]`}. An example that failed in the
    pipeline ('loaded' False; key -1: padding) is loaded on the host by `late_example(key)`, those of
    a batch in parallel threads: a dict of the example's fields, plus 'candidates', the videos that
    may fill it, 'attempt', the first that could be read (past the last: none), and, when it was
    read, 'sampled' and 'used' frame indices. With `retries_other_videos` (training) an example
    none of whose candidates could be read stops the run (`faults.InputStats.give_up`). With
    `hold_errors` (a run of several processes) a `faults.DataError` does not raise: the first is
    kept in `error`, batches go on, and the caller raises it on every process together
    (`blvnet_jax.hosts.raise_together`).

    `close()` (or leaving a `with` block) stops the pipeline's threads. Close an iterator that an
    error leaves behind: kept alive by the error's traceback to the interpreter's exit, a pipeline
    with batches in flight can wait there forever for threads Python no longer runs.
    """

    def __init__(self, dataset, fields, stats, videos, late_example, retries_other_videos, hold_errors=False):
        self._batches = dataset.as_numpy_iterator()
        self._fields = fields
        self.stats = stats
        self._videos = videos
        self._late_example = late_example
        self._late_loads = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
        self._retries_other_videos = retries_other_videos
        self._hold_errors = hold_errors
        self.error = None

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def close(self):
        """Stops the pipeline now; the iterator then raises StopIteration."""
        self._batches = iter(())
        self._late_loads.shutdown(wait=False)

    def __next__(self):
        try:
            batch = next(self._batches)
        except StopIteration:
            self.stats.report()
            raise
        try:
            return self._counted(batch)
        except faults.DataError as error:
            if not self._hold_errors:
                raise
            self.error = self.error or error
            return {name: batch[field] for name, field in self._fields.items()}

    def _counted(self, batch):
        """The batch's `fields`, its failed examples loaded on the host and its faults counted."""
        failed = np.flatnonzero(~batch["loaded"] & (batch["key"] >= 0))
        late = dict(zip(failed, self._late_loads.map(self._late_example, batch["key"][failed].tolist())))
        for i in range(len(batch["loaded"])):
            if i not in late:
                self.stats.add_example(self._videos)
                continue
            example = late[i]
            candidates, attempt = example["candidates"], example["attempt"]
            video = int(candidates[attempt]) if attempt < len(candidates) else None
            self.stats.add_example(self._videos, candidates[:attempt], video, example.get("sampled"),
                                   example.get("used"))
            if video is None and self._retries_other_videos:
                self.stats.give_up(len(candidates), len(self._videos.labels))
        batch = {name: np.array(batch[field]) if late else batch[field] for name, field in self._fields.items()}
        for i, example in late.items():
            for name, field in self._fields.items():
                if field in example:
                    batch[name][i] = example[field]
        return batch


def _options():
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def _eval_clip_fn(config, num_frames, jpeg):
    """frames (num_clips * n,) -> uint8 (views, n, crop, crop, 3), views clip-major; JPEG unless `jpeg` is False."""
    resize_side = transforms.eval_resize_side(config.crop_size, config.eval_resize_to_crop)

    def eval_clip(frames):
        crops = transforms.eval_views(transforms.decode_frames(frames, jpeg), config.crop_size,
                                      resize_side, config.num_crops)
        crops = tf.reshape(crops, [config.num_crops, config.num_clips, num_frames,
                                   config.crop_size, config.crop_size, 3])
        return tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                          [-1, num_frames, config.crop_size, config.crop_size, 3])

    return eval_clip


def _flip_label_table(config):
    """int32 (n,): the label of each class after a horizontal flip, for the labels < n it names."""
    size = 1 + max([label for pair in config.flip_label_map for label in pair], default=0)
    table = np.arange(size, dtype=np.int32)
    for a, b in config.flip_label_map:
        table[a], table[b] = b, a
    return tf.constant(table)


def train_clip_fn(config, seed, jpeg):
    """(frames (n,), label, example index) -> (uint8 (n, crop, crop, 3), label after the flip); frames
    are JPEG unless `jpeg` is False."""
    flip_table = _flip_label_table(config)
    scales = tuple(config.train_scales)

    def train_clip(frames, label, index):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), index]), 2))
        flip = tf.logical_and(config.flip, tf.random.stateless_uniform([], flip_seed) < 0.5)
        clip = transforms.decode_train_clip(frames, config.crop_size, scales, config.max_distort, crop_seed, flip, jpeg)
        size = flip_table.shape[0]
        flipped = tf.where(label < size, tf.gather(flip_table, tf.minimum(label, size - 1)), label)
        return clip, tf.where(flip, flipped, label)

    return train_clip


def train_batch_shapes(data_config, num_frames, batch_size):
    """{key: (shape, numpy dtype)} of a training batch of `batch_size` clips: 'video' uint8
    (batch, num_frames, crop, crop, 3) and 'label' int32 (batch,)."""
    crop = data_config.crop_size
    return {"video": ((batch_size, num_frames, crop, crop, 3), np.uint8), "label": ((batch_size,), np.int32)}


def create_train_dataset(source, *, num_frames, global_batch_size, seed, process_index=0, process_count=1,
                         start_step=0):
    """An endless iterator of training batches of local_batch = global_batch_size //
    process_count clips of a `sources.Source`: {'video': uint8 (local_batch, num_frames, crop,
    crop, 3), 'label': int32 (local_batch,)} (`train_batch_shapes`).

    Batches from `start_step` on equal those an uninterrupted run sees from that step. Unreadable
    frames are substituted, unreadable videos replaced by the next candidate, and both counted
    in `iterator.stats`; training stops as `faults` says.
    """
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} does not divide over "
                         f"{process_count} processes.")
    config = source.config
    local_batch = global_batch_size // process_count
    stats = faults.InputStats("train", config.strict, config.max_fault_fraction)
    videos = source.videos("train")
    stats.add_list_problems(videos.problems)
    dataset, late_example = source.train_examples(
        train_clip_fn(config, seed, videos.jpeg), num_frames=num_frames, seed=seed, start_step=start_step,
        global_batch_size=global_batch_size, process_index=process_index, process_count=process_count,
        substitute=not config.strict)
    dataset = dataset.batch(local_batch, drop_remainder=True).prefetch(config.prefetch)
    return BatchIterator(dataset.with_options(_options()), {"video": "video", "label": "label"}, stats, videos,
                         late_example, retries_other_videos=True, hold_errors=process_count > 1)


def eval_batch_count(num_videos, batch_size, process_count):
    """Batches per host: every host runs the same number, the last ones padded."""
    per_host = -(-num_videos // process_count)
    return -(-per_host // batch_size)


def create_eval_dataset(source, *, num_frames, batch_size, process_index=0, process_count=1):
    """A finite iterator of {'video': uint8 (batch, views, num_frames, crop, crop, 3),
    'label': int32 (batch,), 'video_index': int64 (batch,), 'mask': bool (batch,)} of the 'val'
    split of a `sources.Source`.

    views = num_crops * num_clips, clip-major. Host p reads videos p, p + P, ...; unreadable
    frames are substituted (`faults`); padding examples (video_index -1) and unreadable videos
    have mask False, so summing over the mask on all hosts counts every readable video exactly
    once.
    """
    config = source.config
    videos = source.videos("val")
    stats = faults.InputStats("val", config.strict)
    stats.add_list_problems(videos.problems)
    count = len(videos.labels)
    my_count = len(range(process_index, count, process_count))
    num_padding = eval_batch_count(count, batch_size, process_count) * batch_size - my_count
    dataset, late_example = source.eval_examples(
        _eval_clip_fn(config, num_frames, videos.jpeg), num_frames=num_frames, batch_size=batch_size,
        process_index=process_index, process_count=process_count, substitute=not config.strict)
    padding = {**{name: tf.zeros(spec.shape, spec.dtype) for name, spec in dataset.element_spec.items()},
               "key": tf.constant(-1, tf.int64)}
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
    dataset = dataset.batch(batch_size).prefetch(config.prefetch)
    fields = {"video": "video", "label": "label", "video_index": "key", "mask": "loaded"}
    return BatchIterator(dataset.with_options(_options()), fields, stats, videos, late_example,
                         retries_other_videos=False, hold_errors=process_count > 1)
