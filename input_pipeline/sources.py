"""Where videos come from: one `Source` per dataset, built once from `config.data` by `create_source`.

A source opens each split once as `Videos`: every video's number of frames, label and id, and a
reader of any of its frames by index. On that, one implementation here (`Source.read_examples`)
makes the training examples of a host (a pure function of seed and step, so a resumed run sees the
examples of an uninterrupted one) and its evaluation examples, and checks a split offline. The sources:
- 'frames' (`FrameFolderSource`): list files of frame folders, the official layout (below).
- 'synthetic' (`SyntheticSource`): the generated dataset of `synthetic`, written once as frame
  folders and read as such.
- 'tfds' (`tfds_source.TfdsSource`): a dataset written by the TFDS builders of `tfds_builders`,
  one record per frame.
`create_source` and `preflight` are the only code that reads `config.data.source`.

A list line of the 'frames' layout is `<video dir> <start frame> <end frame> <label>` (the official
code's), or `<video dir> <frames> <label>` (TSN's, TSM's and MMAction2's: frames 1 to <frames>)
with `config.data.list_format='tsn'`; frames are numbered from 1 and named by an `image_template`
such as '{:05d}.jpg'. A line that does not parse is a 'malformed list line', one whose label is
outside [0, num_classes) a 'label out of range', a video listed again a 'repeated video'.
"""
import abc
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import os
import re

import numpy as np
import tqdm

from input_pipeline import faults
from input_pipeline import sampling
from input_pipeline import synthetic
from input_pipeline import video_files
from input_pipeline.tensorflow_cpu import tf


class Videos(abc.ABC):
    """The videos of one split, by video index: `num_frames` int64 (n,), `labels` int32 (n,),
    `ids` [str] and `problems` (a `faults.Fault` for each listed video that was left out); `jpeg`:
    whether their frames are JPEG, else PNG, BMP or GIF (`transforms`).

    Faults name a video by its index (`faults.InputStats.add_example` takes this object: `name`,
    `frame_name`, `skip_faults`, `frame_faults`).
    """
    num_frames: np.ndarray
    labels: np.ndarray
    ids: list
    problems: list
    jpeg = True

    @abc.abstractmethod
    def read(self, video, indices):
        """[bytes]: the frames at 0-based `indices` of a video, b'' for one that cannot be read."""

    def readable(self, video, index):
        """Whether frame `index` of a video reads and decodes (a quick check: `faults.image_problem`)."""
        return not faults.image_problem(io.BytesIO(self.read(video, [index])[0]), quick=True)

    @abc.abstractmethod
    def name(self, video):
        """The video in messages, e.g. "list.txt:12 video 'dir'"."""

    @abc.abstractmethod
    def frame_name(self, video, index):
        """Frame `index` (0-based) of a video in messages."""

    def skip_faults(self, video):
        """The `faults.Fault`s of a video that was skipped: its `video_faults`, or 'unreadable
        video' when it has none (frames PIL decodes, TensorFlow does not)."""
        formats = "JPEG" if self.jpeg else "PNG, BMP or GIF"
        return self.video_faults(video) or [faults.Fault(
            faults.UNREADABLE_VIDEO, self.ids[video],
            f"{self.name(video)}: unreadable video: its frames decode in PIL, not in TensorFlow as {formats} files")]

    @abc.abstractmethod
    def frame_faults(self, video, index):
        """The `faults.Fault`s of frame `index` of a video; [] when it reads."""

    @abc.abstractmethod
    def video_faults(self, video):
        """A `faults.Fault` for each fault of a video, every frame read and decoded."""

    def clip_frames(self, video, indices, substitute):
        """(JPEGs, int64 indices read), both (count,), of a video at `indices`; when `substitute`
        each unreadable frame is replaced by its nearest readable neighbour (`faults.substitutes`).
        When none is readable or none needs replacing, empty strings, which fail to decode (an
        exception here would print its traceback). Numpy, for tf.numpy_function."""
        used = np.asarray(indices, np.int64)
        if substitute:
            try:
                used = faults.substitutes(used, int(self.num_frames[video]), lambda i: self.readable(video, i))
            except faults.NoSubstitute:
                return np.full(len(used), b"", object), used
        return np.array(self.read(video, used), object), used


class Source(abc.ABC):
    """A dataset: the videos, labels and class names of its splits 'train' and 'val'.

    Training example slot k holds a video of a seeded per-epoch permutation (`TrainOrder`); when
    it is unreadable, the next readable video of that permutation; host p reads slots
    [p * local, (p + 1) * local) of every global batch. Frame indices of slot k, attempt a come
    from a numpy generator seeded by (seed, k, a). Evaluation: host p reads videos p, p + P, ...
    """

    def __init__(self, data_config):
        self.config = data_config
        self._splits = {}

    @classmethod
    def preflight(cls, data_config, splits):
        """(number of classes, where that number comes from) of the data, (0, '') when it names
        none, once the files of `splits` are found: what `num_classes` will be, without reading a
        video or writing anything (`blvnet_jax.config_check` runs it before anything compiles).
        Raises FileNotFoundError or ValueError saying which field to fix."""
        if data_config.num_classes:
            return data_config.num_classes, "config.data.num_classes"
        return 0, ""

    def num_classes(self):
        """`config.data.num_classes`, else the number of class names, else 0 (labels unchecked)."""
        if self.config.num_classes:
            return self.config.num_classes
        names = self.class_names()
        return len(names) if names else 0

    @abc.abstractmethod
    def class_names(self):
        """The class names, index = label; None when the dataset names none."""

    @abc.abstractmethod
    def open_split(self, split):
        """The `Videos` of split 'train' or 'val'."""

    def videos(self, split):
        """The `Videos` of a split, opened once. Listed videos left out (bad list lines, labels out
        of range) are logged, or raise in strict mode."""
        if split not in self._splits:
            videos = self.open_split(split)
            if videos.problems:
                left_out = f"{_left_out(videos.problems)}:\n" + "\n".join(
                    problem.message for problem in videos.problems[:20])
                if self.config.strict:
                    raise faults.DataError(f"{left_out}\n(config.data.strict is on; fix the list or turn it off to "
                                           "leave them out and count them)")
                logging.warning("%s", left_out)
            if not len(videos.labels):
                raise no_usable_video(split, videos.problems)
            self._splits[split] = videos
        return self._splits[split]

    def num_videos(self, split):
        return len(self.videos(split).labels)

    def video_ids(self, split):
        """The id of each video of a split, by video index (the evaluation order)."""
        return self.videos(split).ids

    def split_digest(self, split):
        """{'videos': count, 'sha256': hex} of a split's videos: what its training examples depend on
        (each video's id, label and number of frames, in order), to tell whether a resume sees the
        examples of an uninterrupted run."""
        videos = self.videos(split)
        listing = json.dumps([videos.ids, videos.labels.tolist(), videos.num_frames.tolist()])
        return {"videos": len(videos.ids), "sha256": hashlib.sha256(listing.encode()).hexdigest()}

    def train_examples(self, train_clip, *, num_frames, seed, start_step, global_batch_size, process_index,
                       process_count, substitute):
        """(dataset, late_example) of a host's training examples from `start_step` on (`read_examples`):
        example slot k is filled by the k-th video of a seeded per-epoch permutation (`TrainOrder`),
        then, if that fails, by the next ones (at most `faults.videos_to_try`)."""
        videos = self.videos("train")
        order = TrainOrder(len(videos.labels), seed)
        local_batch = global_batch_size // process_count
        offset = start_step * global_batch_size + process_index * local_batch

        def attempt(slot, number):
            video = order.candidates(slot, number + 1)[number]
            rng = np.random.default_rng([seed, slot, number])
            return video, sampling.train_indices(self.config, int(videos.num_frames[video]), num_frames, rng)

        steps = tf.data.Dataset.range(np.iinfo(np.int64).max)
        slots = steps.map(lambda step: offset + step * global_batch_size + tf.range(local_batch, dtype=tf.int64))
        limit = faults.videos_to_try(len(videos.labels), self.config.max_fault_fraction) if substitute else 1
        crop = self.config.crop_size
        return self.read_examples(videos, slots, attempt, num_frames, train_clip, [num_frames, crop, crop, 3], limit,
                                  substitute)

    def eval_examples(self, eval_clip, *, num_frames, batch_size, process_index, process_count, substitute):
        """(dataset, late_example) of a host's evaluation examples (`read_examples`), videos p, p + P, ...
        of the 'val' split in order, 'video' `eval_clip`'s views of `num_clips` clips."""
        config, videos = self.config, self.videos("val")

        def attempt(video, number):
            return video, sampling.eval_indices(config, int(videos.num_frames[video]), num_frames).reshape(-1)

        mine = np.arange(process_index, len(videos.labels), process_count, dtype=np.int64)
        keys = tf.data.Dataset.from_tensor_slices(mine).batch(batch_size)
        clip = lambda frames, label, key: (eval_clip(frames), label)
        shape = [config.num_crops * config.num_clips, num_frames, config.crop_size, config.crop_size, 3]
        return self.read_examples(videos, keys, attempt, config.num_clips * num_frames, clip, shape, 1, substitute)

    def read_examples(self, videos, key_groups, attempt, count, clip, clip_shape, limit, substitute):
        """(dataset, late_example): examples {'video', 'label', 'key', 'loaded'}, one per key of
        `key_groups` (a dataset of int64 (n,) keys), in order.

        `attempt(key, number)` -> (video, `count` frame indices): the `number`-th video that may fill
        example `key`, and its frames; `clip(frames (count,), label, key)` -> (uint8 `clip_shape`,
        label). An example is its first attempt, read in the parallel pipeline; where that fails, a
        placeholder (zeros, label 0) with 'loaded' False. `late_example(key)` is that example read
        on the host: with `substitute`, its unreadable frames replaced (`faults`), then the next
        attempts, at most `limit`; with 'candidates' the videos tried, 'attempt' the one read (past
        the last: none) and, when read, 'loaded' True, 'sampled' and 'used' (count,) its frame
        indices.
        """
        def first_frames(key):
            video, indices = attempt(key, 0)
            return np.array(videos.read(video, indices), object), videos.labels[video]

        def load_first(key):
            # One call to Python a clip. An error drawing the attempt (a bug) fails this load alone:
            # reading the example again on the host raises it.
            frames, label = tf.numpy_function(first_frames, [key], (tf.string, tf.int32), stateful=False)
            loaded, label = clip(tf.ensure_shape(frames, [count]), tf.ensure_shape(label, []), key)
            return {"video": tf.ensure_shape(loaded, clip_shape), "label": label}

        def load(key, video, indices, label, substitute):
            frames, used = tf.numpy_function(videos.clip_frames, [video, indices, substitute], (tf.string, tf.int64),
                                             stateful=False)
            loaded, label = clip(tf.ensure_shape(frames, [count]), label, key)
            return {"video": tf.ensure_shape(loaded, clip_shape), "label": label,
                    "used": tf.ensure_shape(used, [count])}

        load_on_host = tf.function(load, input_signature=[
            tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64), tf.TensorSpec([count], tf.int64),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.bool)])
        no_clip = tf.zeros(clip_shape, tf.uint8)
        placeholder = lambda key: {"video": no_clip, "label": tf.constant(0)}
        examples = faults.load_in_order(key_groups, load_first, placeholder, self.config.num_parallel_calls)

        def late_example(key):
            tried = []
            for number in range(limit):
                video, indices = attempt(key, number)
                tried.append(video)
                for substitute_frames in (False, True)[number == 0:1 + substitute]:  # The first as sampled failed.
                    try:
                        loaded = load_on_host(key, video, indices, videos.labels[video], substitute_frames)
                    except tf.errors.OpError:
                        continue
                    return {"candidates": tried, "attempt": number, "sampled": indices, "loaded": True,
                            **{name: value.numpy() for name, value in loaded.items()}}
            return {"candidates": tried, "attempt": limit}

        return examples, late_example

    def check_split(self, split, workers):
        """(number of videos, every problem) of a split, every frame read and decoded; problems are
        (kind, message) pairs."""
        videos = self.open_split(split)  # Not `videos`, whose log of the lines left out repeats them.
        if not len(videos.labels):
            raise no_usable_video(split, videos.problems)
        problems = [(problem.kind, problem.message) for problem in videos.problems]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            results = pool.map(videos.video_faults, range(len(videos.labels)))
            for video_faults in tqdm.tqdm(results, total=len(videos.labels), desc=f"checking {split}", disable=None):
                problems += [(fault.kind, fault.message) for fault in video_faults]
        return len(videos.labels), problems


def _source_class(data_config):
    if data_config.source == "tfds":
        from input_pipeline import tfds_source  # It builds on this module, and imports TFDS.
        return tfds_source.TfdsSource
    classes = {"frames": FrameFolderSource, "synthetic": SyntheticSource}
    if data_config.source not in classes:
        raise ValueError(f"config.data.source={data_config.source!r}: use 'frames', 'synthetic' or 'tfds'.")
    return classes[data_config.source]


def create_source(data_config):
    """The `Source` of `config.data`."""
    config = data_config.copy_and_resolve_references()
    return _source_class(config)(config)


def no_usable_video(split, problems):
    """The `faults.DataError` of a split that lists no usable video, its `problems` the videos left out."""
    why = f"{_left_out(problems)} (e.g. {problems[0].message})" if problems else "it lists none"
    return faults.DataError(f"No usable video in the {split} split: {why}; give config.data a {split} split with "
                            "videos.")


def _left_out(problems):
    """'3 listed videos left out' for the `problems` of a list."""
    return f"{len(problems)} listed video{'s' * (len(problems) != 1)} left out"


def preflight(data_config, splits=("train", "val")):
    """`Source.preflight` of `config.data`'s source: (number of classes, where it comes from)."""
    return _source_class(data_config).preflight(data_config, splits)


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video of a list file: its frames are `start_frame .. start_frame + num_frames - 1`."""
    video_dir: str
    start_frame: int
    num_frames: int
    label: int
    where: str  # 'list.txt:12', names the video in messages.

    def frame_path(self, root, image_template, index):
        """Path of the frame at 0-based `index` within the video."""
        return os.path.join(root, self.video_dir, image_template.format(self.start_frame + index))


class _BadLine(ValueError):
    """What is wrong with a list line, and its `kind`."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


# The fields of a list line, by `config.data.list_format`.
LIST_FORMATS = {"official": "<video dir> <start frame> <end frame> <label>", "tsn": "<video dir> <frames> <label>"}


def _parse_line(line, separator, num_classes, list_format):
    """Returns (video_dir, first frame, number of frames, label) or raises _BadLine saying what is wrong."""
    fields, expected = line.strip().split(separator), LIST_FORMATS[list_format]
    if len(fields) != expected.count("<"):
        other = next(name for name in LIST_FORMATS if name != list_format)
        raise _BadLine(faults.MALFORMED, f"expected {expected.count('<')} fields {expected!r} separated by "
                       f"{separator!r}, got {len(fields)}; set config.data.list_separator, or "
                       f"config.data.list_format={other!r} for {LIST_FORMATS[other]!r} lines")
    video_dir, *numbers = fields
    try:
        numbers = [int(number) for number in numbers]
    except ValueError:
        raise _BadLine(faults.MALFORMED, "the frame numbers and the label must be integers") from None
    if list_format == "official":
        start, end, label = numbers
        if end < start:
            raise _BadLine(faults.MALFORMED, f"end frame {end} is before start frame {start}: an empty video")
    else:
        (end, label), start = numbers, 1
        if end < start:
            raise _BadLine(faults.MALFORMED, f"{end} frames: an empty video")
    if label < 0 or (num_classes and label >= num_classes):
        raise _BadLine(faults.LABEL_OUT_OF_RANGE, f"label {label} is outside [0, {num_classes or 'inf'})")
    return video_dir, start, end - start + 1, label


def read_video_list(list_path, separator=" ", num_classes=0, list_format="official"):
    """Parses a list file into (entries, problems): `VideoEntry`s, and a `faults.Fault` per line
    left out (kind 'malformed list line', 'label out of range' or 'repeated video', message
    'file:line: what is wrong').

    Lines are `LIST_FORMATS[list_format]`; blank lines are skipped. `num_classes` > 0 makes a label
    outside [0, num_classes) a problem. A video listed again ('repeated video') is kept at its
    first line when its lines agree on its label, else left out at each.
    """
    if list_format not in LIST_FORMATS:
        raise ValueError(f"config.data.list_format={list_format!r}: use " + " or ".join(
            f"{name!r} ({fields!r} lines)" for name, fields in LIST_FORMATS.items()))
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"List file {list_path!r} does not exist; set "
                                "config.data.train_list / val_list (relative paths are taken "
                                "under config.data.root).")
    entries, problems = [], []
    for number, line in enumerate(video_files.text_lines(list_path), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{number}"
        try:
            video_dir, start, num_frames, label = _parse_line(line, separator, num_classes, list_format)
        except _BadLine as e:
            problems.append(faults.Fault(e.kind, where, f"{where}: {e}: {line.strip()!r}"))
            continue
        entries.append(VideoEntry(video_dir, start, num_frames, label, where))
    kept, repeated = video_files.one_line_per_video([(entry.video_dir, entry.label) for entry in entries])
    left_out = sorted(set(range(len(entries))) - set(kept)) if repeated else []  # Lines of a 'repeated video'.
    for index in left_out:
        entry, lines = entries[index], [entries[i] for i in repeated[entries[index].video_dir]]
        labels = sorted({line.label for line in lines})
        numbers = ", ".join(line.where.rsplit(":", 1)[1] for line in lines)
        what = (f"is listed with labels {labels} (lines {numbers}); give each video one line" if len(labels) > 1 else
                f"is listed before (lines {numbers})")
        problems.append(faults.Fault(faults.REPEATED_VIDEO, entry.where, f"{entry.where}: video {entry.video_dir!r} "
                                     f"{what}"))
    return [entries[index] for index in kept], problems


def read_class_names(path):
    """The class names of a file with one name per line (line i = label i)."""
    return [line.strip() for line in video_files.text_lines(path) if line.strip()]


def _not_found(field, value, path):
    """The error of `config.data.<field>` = `value`, whose `path` does not exist; for a URL (gs://...),
    that frame folders and lists are read from local or mounted paths."""
    if "://" in (value or ""):
        return ValueError(f"config.data.{field}={value!r}: frame folders and their lists are read from a local or "
                          "mounted file system; mount the bucket (e.g. with gcsfuse) and give the local path, or "
                          "prepare the stored format (python -m input_pipeline.prepare_tfds), whose "
                          "config.data.tfds_data_dir may be a gs:// path")
    return FileNotFoundError(f"config.data.{field}={value!r}: {path or 'it'} does not exist; set it to your dataset "
                             "(see input_pipeline/README.md)")


def _check_frames_found(data_config, list_path, entries):
    """Raises, saying what to set, when none of `entries` (the first videos of `list_path`) has its
    first frame where `config.data.root` and `image_template` say: every video would be skipped."""
    root, template = data_config.root, data_config.image_template
    if any(os.path.isfile(entry.frame_path(root, template, 0)) for entry in entries):
        return
    folders = [os.path.join(root, entry.video_dir) for entry in entries]
    found = [folder for folder in folders if os.path.isdir(folder) and os.listdir(folder)]
    if not found:
        raise FileNotFoundError(f"none of the first {len(entries)} videos of {list_path} has a folder of frames under "
                                f"config.data.root={root!r} (e.g. {folders[0]}): set config.data.root to the folder "
                                "the list's video paths start from")
    names = sorted(os.listdir(found[0]))
    numbers = re.findall(r"\d+", names[0])
    guess = re.sub(r"\d+", "{:0%dd}" % len(numbers[0]), names[0]) if len(numbers) == 1 else None
    hint = f"set --config.data.image_template={guess!r}" if guess else "set config.data.image_template to their names"
    raise ValueError(f"config.data.image_template={template!r} names no frame of the first {len(entries)} videos of "
                     f"{list_path}: {entries[0].frame_path(root, template, 0)} does not exist, but {found[0]} holds "
                     f"{', '.join(names[:3])}, ...: {hint}")


def _under_root(config, path):
    return path if os.path.isabs(path) else os.path.join(config.root, path)


def frame_fault(path):
    """None when the file at `path` is a readable image, else (kind, what is wrong with it):
    'missing frame' or 'corrupt frame'."""
    if not os.path.isfile(path):
        return faults.MISSING_FRAME, f"missing frame {path}"
    problem = faults.image_problem(path)
    return (faults.CORRUPT_FRAME, f"corrupt frame {path} ({problem})") if problem else None


def _file_bytes(path):
    """The bytes of the file at `path`, b'' when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class FrameFolders(Videos):
    """The videos of one list file, as frame folders under `root`; named by their list line
    ("list.txt:12 video 'dir'") in every fault they have. Their frames are JPEG when
    `image_template` ends in .jpg or .jpeg."""

    def __init__(self, root, image_template, entries, problems):
        self.root, self.image_template, self.entries, self.problems = root, image_template, entries, problems
        self.jpeg = image_template.lower().endswith((".jpg", ".jpeg"))
        self.num_frames = np.array([entry.num_frames for entry in entries], np.int64)
        self.labels = np.array([entry.label for entry in entries], np.int32)
        self.ids = [entry.video_dir for entry in entries]
        self._lengths = {}

    def frame_paths(self, video, indices):
        """Paths of the frames at 0-based `indices` of a video."""
        entry = self.entries[video]
        return [entry.frame_path(self.root, self.image_template, int(i)) for i in indices]

    def read(self, video, indices):
        return [_file_bytes(path) for path in self.frame_paths(video, indices)]

    def name(self, video):
        entry = self.entries[video]
        return f"{entry.where} video {entry.video_dir!r}"

    def frame_name(self, video, index):
        """The path of frame `index` (0-based)."""
        return self.frame_paths(video, [index])[0]

    def frame_faults(self, video, index):
        """'missing frame', 'corrupt frame', or 'truncated video' (missing, and no later frame on
        disk)."""
        path = self.frame_name(video, index)
        fault = frame_fault(path)
        if fault is None:
            return []
        kind, message = fault
        if kind == faults.MISSING_FRAME and index >= self._length_on_disk(video):
            return [self._truncated(video, self._length_on_disk(video))]
        return [faults.Fault(kind, path, f"{self.name(video)}: {message}")]

    def _length_on_disk(self, video):
        """Frames up to the last one on disk (0: none), found once per video."""
        if video not in self._lengths:
            on_disk = [os.path.isfile(path) for path in self.frame_paths(video, range(self.entries[video].num_frames))]
            self._lengths[video] = len(on_disk) - on_disk[::-1].index(True) if any(on_disk) else 0
        return self._lengths[video]

    def _truncated(self, video, length):
        entry = self.entries[video]
        first = self.frame_name(video, length)
        return faults.Fault(faults.TRUNCATED_VIDEO, entry.video_dir, (
            f"{self.name(video)}: truncated video: frames {length + 1}-{entry.num_frames} of "
            f"{entry.num_frames} are missing ({first} ...)"))

    def video_faults(self, video):
        """Kinds: 'empty video' (no listed frame on disk, or no folder), 'truncated video' (the
        listed frames after some point are missing: one fault for the whole tail), 'missing
        frame' (one before the last frame on disk), 'corrupt frame' (a file that does not decode).
        """
        entry, name = self.entries[video], self.name(video)
        paths = self.frame_paths(video, range(entry.num_frames))
        length = self._length_on_disk(video)
        if not length:
            folder = os.path.join(self.root, entry.video_dir)
            what = (f"its folder {folder} does not exist" if not os.path.isdir(folder) else
                    f"none of its {len(paths)} frames is on disk ({paths[0]} ...)")
            return [faults.Fault(faults.EMPTY_VIDEO, entry.video_dir, f"{name}: empty video: {what}")]
        found = [(path, frame_fault(path)) for path in paths[:length]]
        found = [faults.Fault(fault[0], path, f"{name}: {fault[1]}") for path, fault in found if fault]
        return found + ([self._truncated(video, length)] if length < len(paths) else [])


class FrameFolderSource(Source):
    """'frames': a list file per split (`config.data.train_list`, `val_list`) of frame folders
    under `config.data.root`, class names in `config.data.class_names_file`."""

    @classmethod
    def preflight(cls, data_config, splits):
        """Checks the root and the class-name file, that the list file of each of `splits` lists a
        usable video, and that the first frames of its first videos are found (`_check_frames_found`);
        it parses the lists and reads no frame."""
        if not data_config.root or not os.path.exists(data_config.root):
            raise _not_found("root", data_config.root, data_config.root)
        count, where = super().preflight(data_config, splits)
        if not count and data_config.class_names_file:
            path = _under_root(data_config, data_config.class_names_file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config.data.class_names_file={data_config.class_names_file!r}: {path} does "
                                        "not exist; set it to the file of class names (one a line), or to '' for none")
            count = len(read_class_names(path))
            where = f"the {count} names of {path}"
        listed = {}
        for split in splits:
            field = f"{split}_list"
            path = _under_root(data_config, data_config[field]) if data_config[field] else ""
            if not path or not os.path.exists(path):
                raise _not_found(field, data_config[field], path)
            entries, problems = read_video_list(path, data_config.list_separator, count, data_config.list_format)
            if not entries:
                raise no_usable_video(split, problems)
            _check_frames_found(data_config, path, entries[:5])
            listed[split] = {entry.video_dir: entry.where for entry in entries}
        both = sorted(set(listed.get("train", ())) & set(listed.get("val", ())))
        if both:
            logging.warning("%d video%s of the val list %s in the train list too (e.g. %s, %s): validation counts "
                            "videos trained on.", len(both), "s" * (len(both) > 1), "are" if len(both) > 1 else "is",
                            listed["val"][both[0]], listed["train"][both[0]])
        return count, where

    def open_split(self, split):
        """The `FrameFolders` of a split's list file; lines that do not parse are its problems."""
        config = self.config
        list_file = {"train": config.train_list, "val": config.val_list}[split]
        if not list_file:
            raise ValueError(f"config.data.{split}_list is empty: give the list file of the {split} videos.")
        entries, problems = read_video_list(_under_root(config, list_file), config.list_separator, self.num_classes(),
                                            config.list_format)
        return FrameFolders(config.root, config.image_template, entries, problems)

    def class_names(self):
        path = self.config.class_names_file
        return read_class_names(_under_root(self.config, path)) if path else None


class SyntheticSource(FrameFolderSource):
    """'synthetic': the dataset of `config.data.synthetic`, written as frame folders under
    `config.data.root` (default: a folder of the system temp dir named after the settings) the
    first time it is needed, then read as 'frames'."""

    def __init__(self, data_config):
        paths = synthetic.ensure_synthetic_dataset(data_config.root or synthetic.default_cache_dir(
            data_config.synthetic), data_config.synthetic)
        data_config.update(num_classes=data_config.synthetic.num_classes, **paths)
        super().__init__(data_config)

    @classmethod
    def preflight(cls, data_config, splits):
        return data_config.synthetic.num_classes, "config.data.synthetic.num_classes"


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
