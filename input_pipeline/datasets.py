"""Training and evaluation pipelines: iterators of numpy batches of uint8 clips.

Training is a pure function of (seed, step) (`train_clips` says how), so a resumed run sees
exactly the batches of an uninterrupted one. Frame folders: host p reads slots
[p * local, (p + 1) * local) of every global batch. Records and TFDS: host p reads its own shard
files, or every P-th video when there are fewer files than hosts. An unreadable training video
is replaced by the next one, an unreadable evaluation video is masked out; either is counted,
by kind of fault, in `iterator.stats` with list line and video in the examples (an error in
strict mode, as is a bad list line).
"""
import collections
import dataclasses
import logging

import numpy as np
import tensorflow as tf

from input_pipeline import encoded
from input_pipeline import sampling
from input_pipeline import skipping
from input_pipeline import sources
from input_pipeline import train_clips
from input_pipeline import transforms
from input_pipeline import video_list

tf.config.set_visible_devices([], "GPU")

_MAX_EXAMPLES = 20
_EXAMPLES_PER_KIND = 3
# Every kind of fault the pipeline counts, list lines first.
FAULT_KINDS = (video_list.MALFORMED, video_list.LABEL_OUT_OF_RANGE, sources.EMPTY_VIDEO,
               sources.TRUNCATED_VIDEO, sources.MISSING_FRAME, sources.CORRUPT_FRAME,
               sources.UNREADABLE_VIDEO)


def fault_metric(kind):
    """The metric name under which faults of `kind` are logged: 'faults_corrupt_frame', ..."""
    return "faults_" + kind.replace(" ", "_")


@dataclasses.dataclass
class InputStats:
    """Faults of one split's input met so far.

    `unreadable`: videos that failed to load (a video met in two epochs counts twice). `kinds`:
    distinct faults per kind of `FAULT_KINDS` (a list line, or a video, counts once for each kind
    of fault it has). `examples`: the first messages, naming the list file and line and the
    video; `kind_examples`: the first few messages of each kind; `bad_list_lines`: the messages
    of the list lines left out.
    """
    split: str = "train"
    unreadable: int = 0
    kinds: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list = dataclasses.field(default_factory=list)
    kind_examples: dict = dataclasses.field(default_factory=dict)
    bad_list_lines: list = dataclasses.field(default_factory=list)
    _seen: set = dataclasses.field(default_factory=set, repr=False)
    _reported: dict = dataclasses.field(default_factory=dict, repr=False)

    def add_list_problems(self, problems):
        """Counts the `video_list.ListProblem`s of the lines left out of the split's list."""
        for problem in problems:
            self.bad_list_lines.append(problem.message)
            self._count(problem.kind, problem.message)

    def _count(self, kind, message):
        self.kinds[kind] += 1
        examples = self.kind_examples.setdefault(kind, [])
        if len(examples) < _EXAMPLES_PER_KIND:
            examples.append(message)

    def record(self, message, strict, kinds=(sources.UNREADABLE_VIDEO,), video=None):
        """Counts one unreadable video, and each of its `kinds` of fault the first time `video`
        (a hashable id; None: the message) is met; raises instead in strict mode."""
        if strict:
            raise ValueError(message + "\n(config.data.strict is on: fix the data, or turn it "
                             "off to skip and count unreadable videos.)")
        self.unreadable += 1
        for kind in kinds:
            key = (kind, message if video is None else video)
            if key not in self._seen:
                self._seen.add(key)
                self._count(kind, message)
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(message)
        logging.warning("Skipped an unreadable video (%d so far): %s", self.unreadable, message)

    def scalars(self):
        """{'unreadable_videos': n, 'faults_<kind>': count} with the kinds met, for the metrics."""
        return {"unreadable_videos": self.unreadable, **{
            fault_metric(kind): self.kinds[kind] for kind in FAULT_KINDS
            if self.kinds[kind]}}

    def report(self):
        """Logs the fault counts per kind, with a few examples, if they changed since the last
        report; returns `scalars()`."""
        if self.kinds != self._reported:
            self._reported = collections.Counter(self.kinds)
            lines = [f"{self.kinds[kind]} x {kind}, e.g. " + " | ".join(self.kind_examples[kind])
                     for kind in FAULT_KINDS if self.kinds[kind]]
            logging.warning("Faults in the %s input so far (%d unreadable-video reads):\n%s",
                            self.split, self.unreadable, "\n".join(lines))
        return self.scalars()


class BatchIterator:
    """Numpy batches of a tf.data pipeline; unreadable videos are counted in `stats`, whose
    counts are logged when the batches run out.

    `describe_failures(batch)` yields (video id, kinds, message) of each unreadable video.
    """

    def __init__(self, dataset, describe_failures, keys, strict, stats):
        self._batches = dataset.as_numpy_iterator()
        self._describe_failures = describe_failures
        self._keys = keys
        self._strict = strict
        self.stats = stats

    def __iter__(self):
        return self

    def __next__(self):
        try:
            batch = next(self._batches)
        except StopIteration:
            self.stats.report()
            raise
        for video, kinds, message in self._describe_failures(batch):
            self.stats.record(message, self._strict, kinds, video)
        return {key: batch[key] for key in self._keys}


def _options():
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def _eval_clip_fn(config, num_frames):
    """jpegs (num_clips * n,) -> uint8 (views, n, crop, crop, 3), views clip-major."""
    resize_side = transforms.eval_resize_side(config.crop_size, config.eval_resize_to_crop)

    def eval_clip(jpegs):
        crops = transforms.eval_views(transforms.decode_frames(jpegs), config.crop_size,
                                      resize_side, config.num_crops)
        crops = tf.reshape(crops, [config.num_crops, config.num_clips, num_frames,
                                   config.crop_size, config.crop_size, 3])
        return tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4, 5]),
                          [-1, num_frames, config.crop_size, config.crop_size, 3])

    return eval_clip


def create_train_dataset(data_config, *, num_frames, global_batch_size, seed, process_index=0,
                         process_count=1, start_step=0):
    """An endless iterator of training batches of local_batch = global_batch_size //
    process_count clips: {'video': uint8 (local_batch, num_frames, crop, crop, 3), 'label': int32
    (local_batch,)}, or with `resize_on_device` the windows to resize (`train_clips.train_batch_shapes`).

    Batches from `start_step` on equal those an uninterrupted run sees from that step. An
    unreadable video is replaced by the next candidate and counted in `iterator.stats`.
    """
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} does not divide over "
                         f"{process_count} processes.")
    config = sources.resolve_synthetic(data_config)
    local_batch = global_batch_size // process_count
    tries = 1 if config.strict else config.max_substitutes
    if config.source in ("records", "tfds"):
        dataset = train_clips.encoded_train_clips(
            config, num_frames=num_frames, seed=seed, start_step=start_step,
            process_index=process_index, process_count=process_count, local_batch=local_batch,
            tries=tries)
        failed_videos = lambda batch, i: [(
            video_id, (sources.UNREADABLE_VIDEO,),
            f"{config.source} video {video_id.decode()!r}: a frame does not decode, it has no "
            "frame, or its label is outside [0, num_classes)") for video_id in
            batch["ids"][i][:batch["attempt"][i]]]
        stats = InputStats("train")
    else:
        folders = sources.frame_folders(config, "train")
        dataset, order = train_clips.frames_train_clips(
            config, folders, num_frames=num_frames, seed=seed, start_step=start_step,
            global_batch_size=global_batch_size, process_index=process_index,
            local_batch=local_batch, tries=tries)
        failed_videos = lambda batch, i: [(video, *folders.describe(video)) for video in
                                          order.candidates(batch["slot"][i], batch["attempt"][i])]
        stats = InputStats("train")
        stats.add_list_problems(folders.problems)

    def describe_failures(batch):
        for i, (slot, attempt) in enumerate(zip(batch["slot"], batch["attempt"])):
            yield from failed_videos(batch, i)
            if attempt == tries:
                raise RuntimeError(f"{tries} videos in a row were unreadable at example {slot}; "
                                   "the dataset looks broken: run python -m "
                                   "input_pipeline.check_data.")

    dataset = dataset.batch(local_batch, drop_remainder=True).prefetch(config.prefetch)
    return BatchIterator(dataset.with_options(_options()), describe_failures,
                         tuple(train_clips.train_batch_shapes(config, num_frames, local_batch)),
                         config.strict, stats)


def num_videos(data_config, split):
    """Number of videos of split 'train' or 'val', for any source (records: reads the shards)."""
    config = sources.resolve_synthetic(data_config)
    if config.source in ("records", "tfds"):
        return encoded.source_module(config).count_videos(config, split)
    return len(sources.frame_folders(config, split).entries)


def eval_batch_count(num_videos, batch_size, process_count):
    """Batches per host: every host runs the same number, the last ones padded."""
    per_host = -(-num_videos // process_count)
    return -(-per_host // batch_size)


def _frames_eval_videos(config, folders, num_frames, my_videos):
    """Dataset of (video index, (num_clips * num_frames,) frame paths, label) of `my_videos`."""
    labels = np.array([entry.label for entry in folders.entries], np.int32)

    def frame_paths(video):
        indices = sampling.eval_indices(config, folders.entries[video].num_frames, num_frames)
        return np.array([p.encode() for p in folders.frame_paths(video, indices.reshape(-1))])

    def video_element(video):
        paths = tf.numpy_function(frame_paths, [video], tf.string, stateful=False)
        return (video, tf.ensure_shape(paths, [config.num_clips * num_frames]),
                tf.gather(labels, video))

    videos = tf.data.Dataset.from_tensor_slices(np.asarray(my_videos, np.int64))
    return videos.map(video_element)


def create_eval_dataset(data_config, *, num_frames, batch_size, process_index=0,
                        process_count=1):
    """A finite iterator of {'video': uint8 (batch, views, num_frames, crop, crop, 3),
    'label': int32 (batch,), 'video_index': int64 (batch,), 'mask': bool (batch,)}.

    views = num_crops * num_clips, clip-major. Host p reads videos p, p + P, ...; padding
    examples (video_index -1) and unreadable videos have mask False, so summing over the mask on
    all hosts counts every readable video exactly once.
    """
    config = sources.resolve_synthetic(data_config)
    eval_clip = _eval_clip_fn(config, num_frames)
    if config.source in ("records", "tfds"):
        source = encoded.source_module(config)
        video_count = source.count_videos(config, "val")
        num_classes = sources.num_classes(config)
        videos = source.split_stream(config, "val", process_index=process_index,
                                     process_count=process_count)

        def load(video_index, item):
            video = source.parse(item)
            jpegs = encoded.sampled_frames(video, lambda length: sampling.eval_indices(
                config, length, num_frames), config.num_clips * num_frames)
            return eval_clip(jpegs), encoded.checked_label(video["label"], num_classes)

        folders, stats = None, InputStats("val")
    else:
        folders = sources.frame_folders(config, "val")
        video_count = len(folders.entries)
        videos = _frames_eval_videos(config, folders, num_frames,
                                     np.arange(process_index, video_count, process_count))
        load = lambda video_index, paths, label: (eval_clip(sources.read_files(paths)), label)
        stats = InputStats("val")
        stats.add_list_problems(folders.problems)
    my_count = len(range(process_index, video_count, process_count))
    num_padding = eval_batch_count(video_count, batch_size, process_count) * batch_size - my_count
    views = config.num_crops * config.num_clips
    empty = tf.zeros([views, num_frames, config.crop_size, config.crop_size, 3], tf.uint8)
    missing = lambda video_index: {"video": empty, "label": tf.constant(0),
                                   "video_index": video_index, "mask": tf.constant(False)}

    def example(video_index, *inputs):
        def load_view(unused):
            video, label = load(video_index, *inputs)
            return {"video": video, "label": label, "video_index": video_index,
                    "mask": tf.constant(True)}

        return skipping.first_readable(tf.data.Dataset.from_tensors(0), load_view,
                                       lambda: missing(video_index))

    dataset = skipping.map_examples(videos, example, config.num_parallel_calls)
    padding = tf.data.Dataset.from_tensors(missing(tf.constant(-1, tf.int64)))
    dataset = dataset.concatenate(padding.repeat(num_padding))
    dataset = dataset.batch(batch_size).prefetch(config.prefetch)

    def describe_failures(batch):
        for video, mask in zip(batch["video_index"], batch["mask"]):
            if video >= 0 and not mask:
                yield (video, *folders.describe(video)) if folders else (
                    video, (sources.UNREADABLE_VIDEO,),
                    f"{config.source} video number {video} of the 'val' split")

    return BatchIterator(dataset.with_options(_options()), describe_failures,
                         ("video", "label", "video_index", "mask"), config.strict, stats)
