"""Training and evaluation pipelines: iterators of numpy batches of uint8 clips.

Training is a pure function of (seed, step) (`train_clips` says how), so a resumed run sees
exactly the batches of an uninterrupted one. Frame folders: host p reads slots
[p * local, (p + 1) * local) of every global batch. Records and TFDS: host p reads its own shard
files, or every P-th video when there are fewer files than hosts. Bad input is handled as
`faults` says (unreadable frames substituted, unreadable videos replaced in training and masked
in evaluation, the stop rule, strict mode) and counted in `iterator.stats`.
"""
import numpy as np
import tensorflow as tf

from input_pipeline import encoded
from input_pipeline import faults
from input_pipeline import sampling
from input_pipeline import sources
from input_pipeline import train_clips
from input_pipeline import transforms

tf.config.set_visible_devices([], "GPU")


class BatchIterator:
    """Numpy batches of a tf.data pipeline, the faults of each example counted in `stats`
    (`faults.InputStats.add_example`) as it is handed over; the counts are logged when the
    batches run out.

    `skipped(batch)` tells (bool per example) which examples had a video skipped, and only for
    those or those with substituted frames `refs(batch, i)` gives (videos skipped, video read or
    None) of example i, named by `videos`. With `fill_holes`, an example none of whose videos
    could be read takes a copy of another (`faults.fill_holes`).
    """

    def __init__(self, dataset, keys, stats, videos, skipped, refs, fill_holes=False):
        self._batches = dataset.as_numpy_iterator()
        self._keys = keys
        self.stats = stats
        self._videos = videos
        self._skipped = skipped
        self._refs = refs
        self._fill_holes = fill_holes

    def __iter__(self):
        return self

    def __next__(self):
        try:
            batch = next(self._batches)
        except StopIteration:
            self.stats.report()
            raise
        holes = []
        faulty = self._skipped(batch) | np.any(batch["sampled"] != batch["used"], axis=1)
        for i in range(len(faulty)):
            if not faulty[i]:
                self.stats.add_example(self._videos)
                continue
            skipped, video = self._refs(batch, i)
            self.stats.add_example(self._videos, skipped, video, batch["sampled"][i], batch["used"][i])
            if video is None and self._fill_holes:
                holes.append(i)
        batch = {key: batch[key] for key in self._keys}
        if holes:
            batch = {key: np.array(value) for key, value in batch.items()}
            faults.fill_holes(batch, holes, self._keys)
        return batch


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
    (local_batch,)} (`train_clips.train_batch_shapes`).

    Batches from `start_step` on equal those an uninterrupted run sees from that step. Unreadable
    frames are substituted, unreadable videos replaced by the next candidate, and both counted
    in `iterator.stats`; training stops as `faults` says.
    """
    if global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} does not divide over "
                         f"{process_count} processes.")
    config = sources.resolve_synthetic(data_config)
    local_batch = global_batch_size // process_count
    tries = 1 if config.strict else config.max_substitutes
    stats = faults.InputStats("train", config.strict, config.max_fault_fraction)
    if config.source in ("records", "tfds"):
        dataset = train_clips.encoded_train_clips(
            config, num_frames=num_frames, seed=seed, start_step=start_step,
            process_index=process_index, process_count=process_count, local_batch=local_batch,
            tries=tries, substitute=not config.strict)
        videos = encoded.StoredVideos(config.source, "train")

        def refs(batch, i):
            attempt, ids = batch["attempt"][i], [(-1, name.decode()) for name in batch["ids"][i]]
            return ids[:attempt], ids[attempt] if attempt < tries else None
    else:
        videos = sources.frame_folders(config, "train")
        dataset, order = train_clips.frames_train_clips(
            config, videos, num_frames=num_frames, seed=seed, start_step=start_step,
            global_batch_size=global_batch_size, process_index=process_index,
            local_batch=local_batch, tries=tries, substitute=not config.strict)
        stats.add_list_problems(videos.problems)

        def refs(batch, i):
            attempt = batch["attempt"][i]
            candidates = [int(video) for video in order.candidates(batch["slot"][i], tries)]
            return candidates[:attempt], candidates[attempt] if attempt < tries else None

    dataset = dataset.batch(local_batch, drop_remainder=True).prefetch(config.prefetch)
    return BatchIterator(dataset.with_options(_options()),
                         ("video", "label"),
                         stats, videos, lambda batch: batch["attempt"] > 0, refs, fill_holes=True)


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
    """Dataset of (video index, (count,) frame indices, (count,) frame paths, label) of
    `my_videos`, count = num_clips * num_frames."""
    labels = np.array([entry.label for entry in folders.entries], np.int32)
    count = config.num_clips * num_frames

    def frames(video):
        indices = sampling.eval_indices(config, folders.entries[video].num_frames, num_frames).reshape(-1)
        return indices.astype(np.int64), np.array([p.encode() for p in folders.frame_paths(video, indices)])

    def video_element(video):
        indices, paths = tf.numpy_function(frames, [video], (tf.int64, tf.string), stateful=False)
        return (video, tf.ensure_shape(indices, [count]), tf.ensure_shape(paths, [count]),
                tf.gather(labels, video))

    videos = tf.data.Dataset.from_tensor_slices(np.asarray(my_videos, np.int64))
    return videos.map(video_element)


def create_eval_dataset(data_config, *, num_frames, batch_size, process_index=0,
                        process_count=1):
    """A finite iterator of {'video': uint8 (batch, views, num_frames, crop, crop, 3),
    'label': int32 (batch,), 'video_index': int64 (batch,), 'mask': bool (batch,)}.

    views = num_crops * num_clips, clip-major. Host p reads videos p, p + P, ...; unreadable
    frames are substituted (`faults`); padding examples (video_index -1) and unreadable videos
    have mask False, so summing over the mask on all hosts counts every readable video exactly
    once.
    """
    config = sources.resolve_synthetic(data_config)
    eval_clip = _eval_clip_fn(config, num_frames)
    count = config.num_clips * num_frames
    stats = faults.InputStats("val", config.strict)
    if config.source in ("records", "tfds"):
        source = encoded.source_module(config)
        video_count = source.count_videos(config, "val")
        num_classes = sources.num_classes(config)
        inputs = source.split_stream(config, "val", process_index=process_index,
                                     process_count=process_count)
        videos = encoded.StoredVideos(config.source, "val")
        ref = lambda batch, i: (int(batch["video_index"][i]), batch["id"][i].decode())

        def load(video_index, item, substitute):
            video = source.parse(item)
            indices = encoded.sampled_indices(video, lambda length: sampling.eval_indices(
                config, length, num_frames), count)
            jpegs, used = encoded.clip_frames(video, indices, substitute)
            return (eval_clip(jpegs), encoded.checked_label(video["label"], num_classes), indices, used,
                    {"id": video["video_id"]})

        identify = lambda item: {"id": encoded.video_id(config, item)}
    else:
        videos = sources.frame_folders(config, "val")
        video_count = len(videos.entries)
        inputs = _frames_eval_videos(config, videos, num_frames,
                                     np.arange(process_index, video_count, process_count))
        ref = lambda batch, i: int(batch["video_index"][i])

        def load(video_index, indices, paths, label, substitute):
            paths, used = tf.cond(substitute, lambda: tuple(tf.numpy_function(
                videos.substituted_paths, [video_index, indices], (tf.string, tf.int64), stateful=False)),
                lambda: (paths, indices))
            return eval_clip(sources.read_files(tf.ensure_shape(paths, [count]))), label, indices, used, {}

        identify = lambda *unused: {}
        stats.add_list_problems(videos.problems)
    my_count = len(range(process_index, video_count, process_count))
    num_padding = eval_batch_count(video_count, batch_size, process_count) * batch_size - my_count
    views = config.num_crops * config.num_clips
    empty = tf.zeros([views, num_frames, config.crop_size, config.crop_size, 3], tf.uint8)
    no_frames = tf.zeros([count], tf.int64)
    missing = lambda video_index, extra: {"video": empty, "label": tf.constant(0), "video_index": video_index,
                                          "mask": tf.constant(False), "sampled": no_frames, "used": no_frames,
                                          **extra}

    def example(video_index, *inputs):
        def load_view(attempt):
            video, label, indices, used, extra = load(video_index, *inputs, attempt["substitute"])
            return {"video": video, "label": label, "video_index": video_index, "mask": tf.constant(True),
                    "sampled": indices, "used": tf.ensure_shape(used, [count]), **extra}

        attempts = faults.attempts({"video_index": video_index[None]}, substitute=not config.strict)
        return faults.first_readable(attempts, load_view,
                                     lambda: missing(video_index, identify(*inputs)))

    dataset = faults.map_examples(inputs, example, config.num_parallel_calls)
    padding = tf.data.Dataset.from_tensors(missing(tf.constant(-1, tf.int64), {
        "id": tf.constant("")} if config.source in ("records", "tfds") else {}))
    dataset = dataset.concatenate(padding.repeat(num_padding))
    dataset = dataset.batch(batch_size).prefetch(config.prefetch)

    def refs(batch, i):
        return ([], ref(batch, i)) if batch["mask"][i] else ([ref(batch, i)], None)

    skipped = lambda batch: ~batch["mask"] & (batch["video_index"] >= 0)
    return BatchIterator(dataset.with_options(_options()), ("video", "label", "video_index", "mask"),
                         stats, videos, skipped, refs)
