"""Where videos come from: one `Source` per dataset, built once from `config.data` by `create_source`.

A source answers how many videos a split has, the class names, the training examples of a host
(a pure function of seed and step, so a resumed run sees the examples of an uninterrupted one),
the evaluation inputs of a host, the ids of a split's videos, every problem of a split, and the
name of a video in messages. Two kinds:
- `FrameFolderSource` ('frames'): list files of frame folders, the official layout. The
  'synthetic' dataset is written once as frame folders (`create_source`) and read as such.
- `StoredSource` ('records', 'tfds'): videos stored whole as lists of JPEG frames, in record
  shards (`records`) or a TFDS dataset (`tfds_source`); `encoded` picks their frames.
`create_source` is the only code that reads `config.data.source`.
"""
import abc
import concurrent.futures
import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow as tf
import tqdm

from input_pipeline import encoded
from input_pipeline import faults
from input_pipeline import records
from input_pipeline import sampling
from input_pipeline import synthetic
from input_pipeline import tfds_source
from input_pipeline import train_clips
from input_pipeline import video_list


@dataclasses.dataclass(frozen=True)
class EvalInputs:
    """What a source gives the evaluation pipeline of one host (`datasets.create_eval_dataset`).

    `dataset`: (video index, *inputs) of the host's videos p, p + P, ... of the split, in order.
    `load(video_index, *inputs, substitute)` -> (JPEGs (count,), int32 label, sampled and used
    int64 frame indices (count,), {extra key: tensor}), failing when the video cannot be read;
    `identify(*inputs)`: the extra keys of a video that could not be read; `padding`: those of a
    padding example; `ref(batch, i)`: example i's video as `videos` names it.
    """
    count: int
    videos: object
    dataset: tf.data.Dataset
    load: object
    identify: object
    padding: dict
    ref: object


class Source(abc.ABC):
    """A dataset: the videos, labels and class names of its splits 'train' and 'val'."""

    def __init__(self, data_config):
        self.config = data_config

    def num_classes(self):
        """`config.data.num_classes`, else the number of class names, else 0 (labels unchecked)."""
        if self.config.num_classes:
            return self.config.num_classes
        names = self.class_names()
        return len(names) if names else 0

    @abc.abstractmethod
    def num_videos(self, split):
        """Number of videos of split 'train' or 'val'."""

    @abc.abstractmethod
    def class_names(self):
        """The class names, index = label; None when the dataset names none."""

    @abc.abstractmethod
    def videos(self, split):
        """What names the videos of a split in faults (`faults.InputStats.add_example`): `name`,
        `frame_name`, `skip_faults`, `frame_faults`."""

    @abc.abstractmethod
    def list_problems(self, split):
        """The `faults.Fault`s of the split's index that left videos out (bad list lines)."""

    @abc.abstractmethod
    def video_ids(self, split):
        """The id of each video of a split, by video index (the evaluation order)."""

    @abc.abstractmethod
    def train_examples(self, train_clip, *, num_frames, seed, start_step, global_batch_size, process_index,
                       process_count, tries, substitute):
        """(dataset, refs): a host's training examples from `start_step` on, and who they are.

        Per example {'video': `train_clip`'s clip, 'label', 'attempt' (candidate videos that
        failed before), 'slot', 'sampled' and 'used' (num_frames,) frame indices}: the first
        readable of its `tries` candidate videos, with `substitute` its unreadable frames replaced
        (`faults`). `refs(batch, i)` -> (videos skipped, video read or None) of example i, named
        by `videos('train')`.
        """

    @abc.abstractmethod
    def eval_inputs(self, split, *, num_frames, process_index, process_count):
        """The `EvalInputs` of a host."""

    @abc.abstractmethod
    def check_split(self, split, workers):
        """Every problem of a split, every frame opened and decoded: (kind, message) pairs."""


# The stored formats: config.data.source -> the module that reads it.
STORES = {"records": records, "tfds": tfds_source}


def create_source(data_config):
    """The `Source` of `config.data`; for 'synthetic' the dataset is written first if needed."""
    config = data_config.copy_and_resolve_references()
    if config.source == "synthetic":
        paths = synthetic.ensure_synthetic_dataset(config.root or synthetic.default_cache_dir(config.synthetic),
                                                   config.synthetic)
        config.update(source="frames", num_classes=config.synthetic.num_classes, **paths)
    if config.source == "frames":
        return FrameFolderSource(config)
    if config.source in STORES:
        return StoredSource(config, STORES[config.source])
    raise ValueError(f"config.data.source={config.source!r}: use 'frames', 'synthetic', 'records' or 'tfds'.")


def _under_root(config, path):
    return path if os.path.isabs(path) else os.path.join(config.root, path)


def read_files(paths):
    """(n,) string paths -> (n,) string file contents, in TensorFlow; n is static."""
    return tf.stack([tf.io.read_file(paths[i]) for i in range(paths.shape[0])])


def frame_fault(path, quick=False):
    """None when the file at `path` is a readable image, else (kind, what is wrong with it):
    'missing frame' or 'corrupt frame'. `quick`: see `faults.image_problem`."""
    if not os.path.isfile(path):
        return faults.MISSING_FRAME, f"missing frame {path}"
    problem = faults.image_problem(path, quick)
    return (faults.CORRUPT_FRAME, f"corrupt frame {path} ({problem})") if problem else None


@dataclasses.dataclass(frozen=True)
class FrameFolders:
    """The videos of one list file, as frame folders under `root`.

    Videos are named by their list line ("list.txt:12 video 'dir'") in every fault they have
    (`faults.InputStats.add_example` takes this object for `videos`: `name`, `frame_name`,
    `skip_faults`, `frame_faults`).
    """
    root: str
    image_template: str
    entries: list
    problems: list  # A `faults.Fault` for each list line that was left out.
    _lengths: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def frame_paths(self, video_index, indices):
        """Paths of the frames at 0-based `indices` of video `video_index`."""
        entry = self.entries[video_index]
        return [entry.frame_path(self.root, self.image_template, int(i)) for i in indices]

    def name(self, video_index):
        """"list.txt:12 video 'dir'"."""
        entry = self.entries[video_index]
        return f"{entry.where} video {entry.video_dir!r}"

    def frame_name(self, video_index, index):
        """The path of frame `index` (0-based)."""
        return self.frame_paths(video_index, [index])[0]

    def substituted_paths(self, video_index, indices):
        """(paths, int64 indices): the frames to read for the frames at `indices`, each
        unreadable one replaced by its nearest readable neighbour (`faults.substitutes`). When
        none is readable or none needs replacing, empty paths, which fail to read (an exception
        here would print its traceback). Numpy, for tf.numpy_function."""
        paths = lambda frames: self.frame_paths(video_index, frames)
        try:
            used = faults.substitutes(indices, self.entries[video_index].num_frames,
                                      lambda i: frame_fault(paths([i])[0], quick=True) is None)
        except faults.NoSubstitute:
            return np.full(len(indices), b""), np.asarray(indices, np.int64)
        return np.array([path.encode() for path in paths(used)]), used

    def skip_faults(self, video_index):
        """The `faults.Fault`s of a skipped video (`video_faults`; 'unreadable video' when none is
        found: its frames decode in PIL, not in TensorFlow)."""
        return self.video_faults(video_index) or [faults.Fault(
            faults.UNREADABLE_VIDEO, self.entries[video_index].video_dir,
            f"{self.name(video_index)}: unreadable video: its frames decode in PIL, not in TensorFlow")]

    def frame_faults(self, video_index, index):
        """The `faults.Fault`s of frame `index` of a video: 'missing frame', 'corrupt frame', or
        'truncated video' (missing, and no later frame on disk); [] when it reads."""
        path = self.frame_name(video_index, index)
        fault = frame_fault(path)
        if fault is None:
            return []
        kind, message = fault
        if kind == faults.MISSING_FRAME and index >= self._length_on_disk(video_index):
            return [self._truncated(video_index, self._length_on_disk(video_index))]
        return [faults.Fault(kind, path, f"{self.name(video_index)}: {message}")]

    def _length_on_disk(self, video_index):
        """Frames up to the last one on disk (0: none), found once per video."""
        if video_index not in self._lengths:
            on_disk = [os.path.isfile(path) for path in self.frame_paths(
                video_index, range(self.entries[video_index].num_frames))]
            self._lengths[video_index] = len(on_disk) - on_disk[::-1].index(True) if any(on_disk) else 0
        return self._lengths[video_index]

    def _truncated(self, video_index, length):
        entry = self.entries[video_index]
        first = self.frame_name(video_index, length)
        return faults.Fault(faults.TRUNCATED_VIDEO, entry.video_dir, (
            f"{self.name(video_index)}: truncated video: frames {length + 1}-{entry.num_frames} of "
            f"{entry.num_frames} are missing ({first} ...)"))

    def video_faults(self, video_index):
        """A `faults.Fault` for each fault of a video's frames, every frame opened and decoded.

        Kinds: 'empty video' (no listed frame on disk, or no folder), 'truncated video' (the
        listed frames after some point are missing: one fault for the whole tail), 'missing
        frame' (one before the last frame on disk), 'corrupt frame' (a file that does not decode).
        """
        entry, name = self.entries[video_index], self.name(video_index)
        paths = self.frame_paths(video_index, range(entry.num_frames))
        length = self._length_on_disk(video_index)
        if not length:
            folder = os.path.join(self.root, entry.video_dir)
            what = (f"its folder {folder} does not exist" if not os.path.isdir(folder) else
                    f"none of its {len(paths)} frames is on disk ({paths[0]} ...)")
            return [faults.Fault(faults.EMPTY_VIDEO, entry.video_dir, f"{name}: empty video: {what}")]
        found = [(path, frame_fault(path)) for path in paths[:length]]
        found = [faults.Fault(fault[0], path, f"{name}: {fault[1]}") for path, fault in found if fault]
        return found + ([self._truncated(video_index, length)] if length < len(paths) else [])


class FrameFolderSource(Source):
    """'frames': a list file per split (`config.data.train_list`, `val_list`) of frame folders
    under `config.data.root`, class names in `config.data.class_names_file`.

    Training example slot k holds a video of a seeded per-epoch permutation (`TrainOrder`); its
    substitutes are the videos after it in that permutation; host p reads slots
    [p * local, (p + 1) * local) of every global batch. Frame indices of slot k, attempt a come
    from a numpy generator seeded by (seed, k, a).
    """

    def __init__(self, data_config):
        super().__init__(data_config)
        self._folders = {}

    def folders(self, split):
        """The `FrameFolders` of a split, its list read once. List lines that do not parse are
        logged and left out, or raise in strict mode."""
        if split not in self._folders:
            self._folders[split] = self._read_list(split)
        return self._folders[split]

    def _read_list(self, split):
        config = self.config
        list_file = {"train": config.train_list, "val": config.val_list}[split]
        if not list_file:
            raise ValueError(f"config.data.{split}_list is empty: give the list file of the {split} videos.")
        entries, problems = video_list.read_video_list(
            _under_root(config, list_file), config.list_separator, self.num_classes())
        if problems:
            lines = "\n".join(problem.message for problem in problems[:20])
            if config.strict:
                raise ValueError(f"{len(problems)} bad list lines:\n{lines}\n(config.data.strict is on; fix the "
                                 "list or turn it off to leave them out and count them)")
            logging.warning("%d bad list lines, left out:\n%s", len(problems), lines)
        if not entries:
            raise ValueError(f"No usable video in list file {list_file!r}.")
        return FrameFolders(config.root, config.image_template, entries, problems)

    def num_videos(self, split):
        return len(self.folders(split).entries)

    def class_names(self):
        path = self.config.class_names_file
        return video_list.read_class_names(_under_root(self.config, path)) if path else None

    def videos(self, split):
        return self.folders(split)

    def list_problems(self, split):
        return self.folders(split).problems

    def video_ids(self, split):
        return [entry.video_dir for entry in self.folders(split).entries]

    def train_examples(self, train_clip, *, num_frames, seed, start_step, global_batch_size, process_index,
                       process_count, tries, substitute):
        folders = self.folders("train")
        order = TrainOrder(len(folders.entries), seed)
        local_batch = global_batch_size // process_count
        offset = start_step * global_batch_size + process_index * local_batch
        first_slots = lambda step: offset + step * global_batch_size + np.arange(local_batch)
        candidates = self._train_candidates(folders, order, num_frames=num_frames, seed=seed, tries=tries,
                                            first_slots=first_slots)

        def example(element):
            slot = element["slot"]

            def load(candidate):
                paths, used = tf.cond(candidate["substitute"], lambda: tuple(tf.numpy_function(
                    folders.substituted_paths, [candidate["video"], candidate["indices"]],
                    (tf.string, tf.int64), stateful=False)), lambda: (candidate["paths"], candidate["indices"]))
                clip, label = train_clip(read_files(tf.ensure_shape(paths, [num_frames])), candidate["label"], slot)
                return {"video": clip, "label": label, "attempt": candidate["attempt"], "slot": slot,
                        "sampled": candidate["indices"], "used": tf.ensure_shape(used, [num_frames])}

            videos = {key: element[key] for key in ("video", "indices", "paths", "label")}
            return faults.first_readable(faults.attempts(videos, substitute), load,
                                         lambda: train_clips.gave_up(self.config, num_frames, tries, slot))

        def refs(batch, i):
            attempt = batch["attempt"][i]
            candidates = [int(video) for video in order.candidates(batch["slot"][i], tries)]
            return candidates[:attempt], candidates[attempt] if attempt < tries else None

        return faults.map_examples(candidates, example, self.config.num_parallel_calls), refs

    def _train_candidates(self, folders, order, *, num_frames, seed, tries, first_slots):
        """Dataset of {'video': (tries,) int64, 'indices': (tries, num_frames) int64, 'paths':
        (tries, num_frames) string, 'label': (tries,) int32, 'slot'}: per example slot its video,
        sampled frame indices and their paths, then those of its substitutes. `first_slots` maps a
        step to this host's int64 (local_batch,) slots of that step."""
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
                    indices[i, attempt] = sampling.train_indices(self.config, length, num_frames, rng)
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

    def eval_inputs(self, split, *, num_frames, process_index, process_count):
        config, folders = self.config, self.folders(split)
        labels = np.array([entry.label for entry in folders.entries], np.int32)
        count = config.num_clips * num_frames

        def frames(video):
            indices = sampling.eval_indices(config, folders.entries[video].num_frames, num_frames).reshape(-1)
            return indices.astype(np.int64), np.array([p.encode() for p in folders.frame_paths(video, indices)])

        def video_element(video):
            indices, paths = tf.numpy_function(frames, [video], (tf.int64, tf.string), stateful=False)
            return (video, tf.ensure_shape(indices, [count]), tf.ensure_shape(paths, [count]),
                    tf.gather(labels, video))

        def load(video_index, indices, paths, label, substitute):
            paths, used = tf.cond(substitute, lambda: tuple(tf.numpy_function(
                folders.substituted_paths, [video_index, indices], (tf.string, tf.int64), stateful=False)),
                lambda: (paths, indices))
            return read_files(tf.ensure_shape(paths, [count])), label, indices, used, {}

        mine = np.arange(process_index, len(folders.entries), process_count, dtype=np.int64)
        return EvalInputs(count=len(folders.entries), videos=folders,
                          dataset=tf.data.Dataset.from_tensor_slices(mine).map(video_element), load=load,
                          identify=lambda *unused: {}, padding={}, ref=lambda batch, i: int(batch["video_index"][i]))

    def check_split(self, split, workers):
        folders = self.folders(split)
        problems = [(problem.kind, problem.message) for problem in folders.problems]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = pool.map(folders.video_faults, range(len(folders.entries)))
            for video_faults in tqdm.tqdm(results, total=len(folders.entries), desc=f"checking {split}",
                                          disable=None):
                problems += [(fault.kind, fault.message) for fault in video_faults]
        return problems




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


class StoredVideos:
    """Names the videos of a stored split in faults, as `FrameFolders` does those of a list file. A
    video is `ref` = (number in the split or -1 when unknown, video id): "records val #3 video 'id'"."""

    def __init__(self, source, split):
        self.source, self.split = source, split

    def name(self, ref):
        number, video = ref
        where = f"{self.source} {self.split}" + (f" #{number}" if number >= 0 else "")
        return f"{where} video {video!r}"

    def frame_name(self, ref, index):
        return f"frame {index}"

    def skip_faults(self, ref):
        return [faults.Fault(faults.UNREADABLE_VIDEO, ref[1], f"{self.name(ref)}: unreadable video: no "
                             "frame, no readable frame, or a label outside [0, num_classes)")]

    def frame_faults(self, ref, index):
        return [faults.Fault(faults.CORRUPT_FRAME, (ref[1], index),
                             f"{self.name(ref)}: corrupt frame {index} (does not decode)")]


class StoredSource(Source):
    """'records' and 'tfds': videos stored whole, each a list of JPEG frames with its label and id.

    The store (`records` or `tfds_source`) gives a host's endless, reshuffled stream of items, a
    split's items in order, the class names, a `parse` of an item into {'frames': (n,) JPEG
    strings, 'label': int32, 'video_id'} and a `parse_video_id` that leaves the frames unparsed.
    Training example k of host p is the k-th video of its stream; its substitutes are the videos
    after it. Its frame indices come from a numpy generator seeded by (seed, k * P + p).
    """

    def __init__(self, data_config, store):
        super().__init__(data_config)
        self.store = store

    def num_videos(self, split):
        return self.store.count_videos(self.config, split)

    def class_names(self):
        return self.store.class_names(self.config)

    def videos(self, split):
        return StoredVideos(self.config.source, split)

    def list_problems(self, split):
        return []

    def _split_items(self, split, process_index=0, process_count=1):
        return self.store.split_stream(self.config, split, process_index=process_index, process_count=process_count)

    def video_ids(self, split):
        ids = self._split_items(split).map(lambda index, item: self.store.parse(item)["video_id"])
        return [video_id.decode() for video_id in ids.as_numpy_iterator()]

    def train_examples(self, train_clip, *, num_frames, seed, start_step, global_batch_size, process_index,
                       process_count, tries, substitute):
        config, parse = self.config, self.store.parse
        local_batch = global_batch_size // process_count
        stream = self.store.train_stream(config, seed=seed, process_index=process_index, process_count=process_count)
        windows = encoded.train_windows(stream, parse, tries=tries, start_example=start_step * local_batch,
                                        process_index=process_index, process_count=process_count)
        indices_fn = lambda length, example: sampling.train_indices(
            config, length, num_frames, np.random.default_rng([seed, example]))
        num_classes = self.num_classes()

        def example(window):
            slot = window["example"][0]

            def load(candidate):
                video = {"frames": encoded.unbox(candidate["frames"])}
                indices = encoded.sampled_indices(video, indices_fn, num_frames, candidate["example"])
                jpegs, used = encoded.clip_frames(video, indices, candidate["substitute"])
                clip, label = train_clip(jpegs, encoded.checked_label(candidate["label"], num_classes), slot)
                return {"video": clip, "label": label, "attempt": candidate["attempt"], "slot": slot,
                        "ids": window["video_id"], "sampled": indices, "used": used}

            return faults.first_readable(faults.attempts(window, substitute), load, lambda: train_clips.gave_up(
                config, num_frames, tries, slot, ids=window["video_id"]))

        def refs(batch, i):
            attempt, ids = batch["attempt"][i], [(-1, name.decode()) for name in batch["ids"][i]]
            return ids[:attempt], ids[attempt] if attempt < tries else None

        return faults.map_examples(windows, example, config.num_parallel_calls), refs

    def eval_inputs(self, split, *, num_frames, process_index, process_count):
        config, parse = self.config, self.store.parse
        count = config.num_clips * num_frames
        num_classes = self.num_classes()

        def load(video_index, item, substitute):
            video = parse(item)
            indices = encoded.sampled_indices(video, lambda length: sampling.eval_indices(
                config, length, num_frames), count)
            jpegs, used = encoded.clip_frames(video, indices, substitute)
            return jpegs, encoded.checked_label(video["label"], num_classes), indices, used, {"id": video["video_id"]}

        return EvalInputs(count=self.num_videos(split), videos=self.videos(split),
                          dataset=self._split_items(split, process_index, process_count), load=load,
                          identify=lambda item: {"id": self.store.parse_video_id(item)},
                          padding={"id": tf.constant("")},
                          ref=lambda batch, i: (int(batch["video_index"][i]), batch["id"][i].decode()))

    def check_split(self, split, workers):
        """Stored videos must also have a frame and a label in [0, num_classes); `workers` videos
        are checked at once, in tf.data (PIL decodes without the GIL)."""
        num_classes = self.num_classes()

        def video_problems(index, item):
            video = self.store.parse(item)
            text = tf.numpy_function(lambda frames, label: "\n".join(
                f"{kind}\t{message}" for kind, message in stored_video_problems(frames, label, num_classes)).encode(),
                [video["frames"], video["label"]], tf.string, stateful=False)
            return index, video["video_id"], text

        results = self._split_items(split).map(video_problems, num_parallel_calls=workers, deterministic=True)
        videos, problems = self.videos(split), []
        try:
            for index, video_id, text in tqdm.tqdm(results.as_numpy_iterator(), desc=f"checking {split}",
                                                   disable=None):
                name = videos.name((int(index), video_id.decode()))
                for line in text.decode().splitlines():
                    kind, message = line.split("\t", 1)
                    problems.append((kind, f"{name}: {message}"))
        except tf.errors.OpError as e:
            problems.append((faults.UNREADABLE_FILE, f"{self.config.source} {split}: stopped reading: {e.message}"))
        return problems


def stored_video_problems(frames, label, num_classes):
    """What is wrong with a stored video (JPEG bytes per frame, int label): (kind, message) pairs."""
    problems = [] if len(frames) else [(faults.EMPTY_VIDEO, "no frame")]
    if label < 0 or (num_classes and label >= num_classes):
        problems.append((faults.LABEL_OUT_OF_RANGE, f"label {label} outside [0, {num_classes or 'inf'})"))
    for number, jpeg in enumerate(frames):
        problem = faults.image_problem(io.BytesIO(jpeg))
        if problem:
            problems.append((faults.CORRUPT_FRAME, f"corrupt frame {number} ({problem})"))
    return problems
