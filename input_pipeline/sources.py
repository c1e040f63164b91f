"""Where videos are read from: a data config resolved to frame paths, labels and class names."""
import dataclasses
import logging
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from input_pipeline import faults
from input_pipeline import records
from input_pipeline import synthetic
from input_pipeline import tfds_source
from input_pipeline import video_list

# What PIL raises for a file that is not a decodable image.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)


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


def read_files(paths):
    """(n,) string paths -> (n,) string file contents, in TensorFlow; n is static."""
    return tf.stack([tf.io.read_file(paths[i]) for i in range(paths.shape[0])])


def image_problem(file, quick=False):
    """'' when `file` (a path or a file object) is a decodable image, else what is wrong.

    `quick` decodes JPEGs at 1/8 scale (libjpeg's DCT scaling: every byte is still read and
    checked, in a fraction of the time).
    """
    try:
        with Image.open(file) as image:
            if quick:
                image.draft("RGB", (1, 1))
            image.load()
    except IMAGE_ERRORS as e:
        return str(e)
    return ""


def frame_fault(path, quick=False):
    """None when the file at `path` is a readable image, else (kind, what is wrong with it):
    'missing frame' or 'corrupt frame'. `quick`: see `image_problem`."""
    if not os.path.isfile(path):
        return faults.MISSING_FRAME, f"missing frame {path}"
    problem = image_problem(path, quick)
    return (faults.CORRUPT_FRAME, f"corrupt frame {path} ({problem})") if problem else None


def resolve_synthetic(data_config):
    """For source 'synthetic': writes the dataset if needed and returns a 'frames' config copy."""
    config = data_config.copy_and_resolve_references()
    if config.source != "synthetic":
        return config
    out_dir = config.root or synthetic.default_cache_dir(config.synthetic)
    paths = synthetic.ensure_synthetic_dataset(out_dir, config.synthetic)
    config.source = "frames"
    config.root = paths["root"]
    config.train_list = paths["train_list"]
    config.val_list = paths["val_list"]
    config.class_names_file = paths["class_names_file"]
    config.num_classes = config.synthetic.num_classes
    return config


def class_names(data_config):
    """The list of class names of a data config, or None when it has no class-name file."""
    config = resolve_synthetic(data_config)
    if config.source == "tfds":
        return tfds_source.class_names(config)
    path = class_names_path(config)
    return video_list.read_class_names(path) if path else None


def class_names_path(config):
    """The class-name file of a resolved data config: `class_names_file` (under `root` when
    relative), else for records the classes.txt `prepare` wrote beside the shards, if any; ''
    when there is none. (blvnet_jax.config_check.data_class_count reads it the same way.)"""
    if config.class_names_file:
        return _under_root(config, config.class_names_file)
    written = os.path.join(config.root, records.CLASSES_FILE)
    return written if config.source == "records" and os.path.isfile(written) else ""


def num_classes(data_config):
    """config.data.num_classes, else the number of class names, else 0 (labels unchecked)."""
    if data_config.num_classes:
        return data_config.num_classes
    names = class_names(data_config)
    return len(names) if names else 0


def _under_root(config, path):
    return path if os.path.isabs(path) else os.path.join(config.root, path)


def frame_folders(data_config, split):
    """The `FrameFolders` of split 'train' or 'val'.

    List lines that do not parse are logged and left out, or raise in strict mode.
    """
    config = resolve_synthetic(data_config)
    if config.source != "frames":
        raise ValueError(f"config.data.source={config.source!r} has no frame folders; use 'frames' "
                         "or 'synthetic'.")
    list_file = {"train": config.train_list, "val": config.val_list}[split]
    if not list_file:
        raise ValueError(f"config.data.{split}_list is empty: give the list file of the {split} "
                         "videos.")
    entries, problems = video_list.read_video_list(
        _under_root(config, list_file), config.list_separator, num_classes(config))
    if problems:
        lines = "\n".join(problem.message for problem in problems[:20])
        if config.strict:
            raise ValueError(f"{len(problems)} bad list lines:\n{lines}\n(config.data.strict is "
                             "on; fix the list or turn it off to leave them out and count them)")
        logging.warning("%d bad list lines, left out:\n%s", len(problems), lines)
    if not entries:
        raise ValueError(f"No usable video in list file {list_file!r}.")
    return FrameFolders(config.root, config.image_template, entries, problems)
