"""Where videos are read from: a data config resolved to frame paths, labels and class names."""
import dataclasses
import logging
import os

from PIL import Image
import tensorflow as tf

from input_pipeline import records
from input_pipeline import synthetic
from input_pipeline import tfds_source
from input_pipeline import video_list

# Kinds of unreadable videos: found by opening a video's frames, or 'unreadable video' when the
# kind is unknown (records, TFDS, or frames that PIL reads but TensorFlow does not).
EMPTY_VIDEO = "empty video"
TRUNCATED_VIDEO = "truncated video"
MISSING_FRAME = "missing frame"
CORRUPT_FRAME = "corrupt frame"
UNREADABLE_VIDEO = "unreadable video"
# What PIL raises for a file that is not a decodable image.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)


@dataclasses.dataclass(frozen=True)
class FrameFolders:
    """The videos of one list file, as frame folders under `root`."""
    root: str
    image_template: str
    entries: list
    problems: list  # A `video_list.ListProblem` for each list line that was left out.

    def frame_paths(self, video_index, indices):
        """Paths of the frames at 0-based `indices` of video `video_index`."""
        entry = self.entries[video_index]
        return [entry.frame_path(self.root, self.image_template, int(i)) for i in indices]

    def describe(self, video_index):
        """(kinds, message) of an unreadable video: the sorted kinds of its faults (see
        `video_faults`; 'unreadable video' when none is found) and "list.txt:12 video 'dir': what
        is wrong with its frames"."""
        entry = self.entries[video_index]
        faults = self.video_faults(video_index) or [(UNREADABLE_VIDEO, "unreadable")]
        kinds = tuple(sorted({kind for kind, _ in faults}))
        return kinds, f"{entry.where} video {entry.video_dir!r}: " + "; ".join(
            message for _, message in faults)

    def video_faults(self, video_index):
        """(kind, message) of each fault of a video's frames, every frame opened and decoded.

        Kinds: 'empty video' (no listed frame on disk), 'truncated video' (the listed frames
        after some point are missing: one fault for the whole tail), 'missing frame' (one
        before the last frame on disk), 'corrupt frame' (a file that does not decode).
        """
        paths = self.frame_paths(video_index, range(self.entries[video_index].num_frames))
        on_disk = [os.path.isfile(path) for path in paths]
        if not any(on_disk):
            return [(EMPTY_VIDEO, f"empty video: none of its {len(paths)} frames is on disk "
                                  f"({paths[0]} ...)")]
        length = len(on_disk) - on_disk[::-1].index(True)  # Frames up to the last one on disk.
        faults = [frame_fault(path) for path in paths[:length]]
        faults = [fault for fault in faults if fault]
        if length < len(paths):
            faults.append((TRUNCATED_VIDEO, f"truncated video: frames {length + 1}-{len(paths)} of "
                                            f"{len(paths)} are missing ({paths[length]} ...)"))
        return faults


def read_files(paths):
    """(n,) string paths -> (n,) string file contents, in TensorFlow; n is static."""
    return tf.stack([tf.io.read_file(paths[i]) for i in range(paths.shape[0])])


def image_problem(file):
    """'' when `file` (a path or a file object) is a decodable image, else what is wrong."""
    try:
        with Image.open(file) as image:
            image.load()
    except IMAGE_ERRORS as e:
        return str(e)
    return ""


def frame_fault(path):
    """None when the file at `path` is a readable image, else (kind, what is wrong with it)."""
    if not os.path.isfile(path):
        return MISSING_FRAME, f"missing frame {path}"
    problem = image_problem(path)
    return (CORRUPT_FRAME, f"corrupt frame {path} ({problem})") if problem else None


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
