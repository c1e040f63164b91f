"""Where videos are read from: a data config resolved to frame paths, labels and class names."""
import dataclasses
import logging
import os

from PIL import Image
import tensorflow as tf

from input_pipeline import synthetic
from input_pipeline import tfds_source
from input_pipeline import video_list


@dataclasses.dataclass(frozen=True)
class FrameFolders:
    """The videos of one list file, as frame folders under `root`."""
    root: str
    image_template: str
    entries: list
    problems: list  # 'file:line: what is wrong' for each list line that was left out.

    def frame_paths(self, video_index, indices):
        """Paths of the frames at 0-based `indices` of video `video_index`."""
        entry = self.entries[video_index]
        return [entry.frame_path(self.root, self.image_template, int(i)) for i in indices]

    def describe(self, video_index):
        """'list.txt:12 video 'dir': what is wrong with its frames', for messages."""
        entry = self.entries[video_index]
        problems = self.video_problems(video_index)
        return f"{entry.where} video {entry.video_dir!r}: " + "; ".join(problems or
                                                                        ["unreadable"])

    def video_problems(self, video_index):
        """What is wrong with each frame of a video (missing, not decodable), as strings."""
        paths = self.frame_paths(video_index, range(self.entries[video_index].num_frames))
        return [problem for problem in map(frame_problem, paths) if problem]


def read_files(paths):
    """(n,) string paths -> (n,) string file contents, in TensorFlow; n is static."""
    return tf.stack([tf.io.read_file(paths[i]) for i in range(paths.shape[0])])


def image_problem(file):
    """'' when `file` (a path or a file object) is a decodable image, else what is wrong."""
    try:
        with Image.open(file) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as e:
        return str(e)
    return ""


def frame_problem(path):
    """'' when the file at `path` is a readable image, else what is wrong with it."""
    if not os.path.isfile(path):
        return f"missing frame {path}"
    problem = image_problem(path)
    return f"corrupt frame {path} ({problem})" if problem else ""


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
    if not config.class_names_file:
        return None
    return video_list.read_class_names(_under_root(config, config.class_names_file))


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
        message = f"{len(problems)} bad list lines, left out:\n" + "\n".join(problems[:20])
        if config.strict:
            raise ValueError(message + "\n(config.data.strict is on; fix the list or turn it off)")
        logging.warning(message)
    if not entries:
        raise ValueError(f"No usable video in list file {list_file!r}.")
    return FrameFolders(config.root, config.image_template, entries, problems)
