"""TFDS builders (manual download) for the datasets of the paper and for any folder of videos.

Prepared with `python -m input_pipeline.prepare_tfds` (or `build`).

Each example: 'video' (the frames as JPEG, shorter side 256 for decoded videos; Something-
Something V1 frames are stored as distributed), 'label' (a ClassLabel whose names are the
class names) and 'video_id'. Videos PyAV cannot decode, and videos a list names but the
folder lacks, are logged by name and left out.

Layouts expected under the manual dir. Each annotation file is looked for under each of its
names (the releases differ) in each of the folders listed, and the first found is read;
video folders are always at the manual dir's root:

- something_something_v1: frames `20bn-something-something-v1/<id>/00001.jpg ...`; in the
  manual dir, `labels/` or `annotations/` (MMAction2's place):
  `something-something-v1-labels.csv` (a class name per line),
  `something-something-v1-{train,validation}.csv` (`<id>;<class name>` lines).
- something_something_v2: videos `20bn-something-something-v2/<id>.webm`; in the manual dir,
  `labels/` (the Qualcomm zip's folder) or `annotations/`:
  `something-something-v2-{labels,train,validation}.json` (20BN names) or
  `{labels,train,validation}.json` (Qualcomm names); labels: {class name: "index"}, train and
  validation: [{"id", "template", ...}] (the class is the template without brackets).
- kinetics400: in `annotations/` (CVDF release) or the manual dir (DeepMind's release):
  `train.csv`, `val.csv` (DeepMind: `validate.csv`; MMAction2: `kinetics_{train,val}.csv`),
  `label,youtube_id,time_start,time_end,split` with a header; videos
  `{train,val}/<youtube_id>_<start:06d>_<end:06d>.mp4`; class names: the sorted train labels.
  A video of the same name in `replacement/replacement_for_corrupted_k400/` (CVDF's
  replacements for about 1400 corrupted clips) is read instead of the original.
- moments_in_time: in the manual dir (Moments_in_Time_Raw) or `annotations/` (MMAction2's
  place): `moments_categories.txt` (`<name>,<index>` lines), `{trainingSet,validationSet}.csv`
  (`<path>,<class name>,...` lines); videos `training/<path>` and `validation/<path>`.
- video_folder: `<split>/<class name>/<video>` for splits among train, validation and test;
  class names are the sorted sub-folders of train.

Decoded videos keep every frame, as the official frame extraction does; `max_fps` > 0 (the
builder config `max_fps_<F>`, `prepare_tfds --max_fps`, `config.data.tfds_max_fps`) keeps at
most F frames a second, so that long, high-rate videos are not read whole for each clip.

Generation runs in one process; for a large dataset the parallel, resumable
`python -m input_pipeline.prepare` (the `records` source) is faster.
"""
import csv
import dataclasses
import json
import logging
import os

import tensorflow_datasets as tfds

from input_pipeline import video_files

SHORT_SIDE = 256
JPEG_QUALITY = 90
LAYOUTS_DOC = "the layouts in input_pipeline/tfds_builders.py"


@dataclasses.dataclass(eq=False)
class FrameRateConfig(tfds.core.BuilderConfig):
    """The builder config that keeps at most `max_fps` frames a second of each decoded video."""

    max_fps: float = 0


def frame_rate_config(max_fps):
    """None (the default: every frame) for `max_fps` 0, else the config 'max_fps_<max_fps>'."""
    if max_fps < 0:
        raise ValueError(f"max_fps={max_fps}: use 0 (every frame) or a positive frame rate.")
    if not max_fps:
        return None
    return FrameRateConfig(name=f"max_fps_{max_fps:g}", max_fps=max_fps,
                           description=f"At most {max_fps:g} frames a second of each video.")


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and example generation; subclasses list the videos of each split."""

    VERSION = tfds.core.Version("1.0.0")
    # False for datasets distributed as frames, which have no timestamps to cap the rate with.
    DECODES_VIDEOS = True
    # Our split name -> the names of the file (or folder) that may describe it; a split none of them
    # is found for is left out.
    SPLITS = {}
    # The folders of the manual dir ('' for itself) annotation files are looked for in, in order.
    ANNOTATION_FOLDERS = ("",)
    # Where the class names come from, for error messages.
    CLASS_NAMES_SOURCE = ""

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(),
            "video_id": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        names = self.class_names(root)
        self.info.features["label"].names = names
        videos = {split: self.labeled_videos(root, split, names) for split in self.SPLITS
                  if self.annotation_file(root, split)}
        if not videos:
            expected = [name for names_of_split in self.SPLITS.values() for name in names_of_split]
            raise _not_found(root, f"split of {self.name}", expected, self.ANNOTATION_FOLDERS)
        return {split: self._generate_examples(split, split_videos) for split, split_videos in videos.items()}

    def annotation_file(self, root, split):
        """The path of the file (or folder) describing `split`; None if the manual dir has none."""
        return _find_file(root, self.SPLITS[split], self.ANNOTATION_FOLDERS)

    def required_file(self, root, what, names):
        """The path of the first of `names` found in ANNOTATION_FOLDERS; an error naming `what` if none is."""
        path = _find_file(root, names, self.ANNOTATION_FOLDERS)
        if path is None:
            raise _not_found(root, what, names, self.ANNOTATION_FOLDERS)
        return path

    def class_names(self, root):
        """The class names, index = label."""
        raise NotImplementedError

    def videos(self, root, split):
        """[(video id, path of a video file or of a folder of JPEG frames, class name)] as listed."""
        raise NotImplementedError

    def labeled_videos(self, root, split, names):
        """[(video id, path, label)] of the listed videos whose file exists."""
        labels = _index(names)
        videos = []
        for video_id, path, name in self.videos(root, split):
            if name not in labels:
                raise ValueError(f"{self.annotation_file(root, split)}: video {video_id} is of class {name!r}, "
                                 f"which is not among the {len(names)} class names of {self.name} (from "
                                 f"{self.CLASS_NAMES_SOURCE}); are both from the same release?")
            videos.append((video_id, path, labels[name]))
        return _existing(videos, self.name)

    def _generate_examples(self, split, videos):
        skipped = 0
        max_fps = self.builder_config.max_fps if self.builder_config else 0
        for video_id, path, label in videos:
            try:
                frames = _jpeg_frames(path, max_fps)
            except video_files.DECODE_ERRORS as e:
                skipped += 1
                logging.warning("Left out video %s (%s): %s", video_id, path, e)
                continue
            yield video_id, {"video": frames, "label": label, "video_id": video_id}
        if skipped:
            logging.warning("%s %s: %d videos left out.", self.name, split, skipped)


def _jpeg_frames(path, max_fps):
    """JPEG bytes of the frames: a frame folder's files as they are, or a decoded video's (at
    most `max_fps` a second if > 0)."""
    if not os.path.isdir(path):
        return video_files.decode_video(path, SHORT_SIDE, JPEG_QUALITY, max_fps)
    names = sorted(name for name in os.listdir(path) if name.lower().endswith(".jpg"))
    if not names:
        raise ValueError("no .jpg frame in the folder")
    frames = []
    for name in names:
        with open(os.path.join(path, name), "rb") as f:
            frames.append(f.read())
    return frames


def _index(names):
    return {name: label for label, name in enumerate(names)}


def _find_file(root, names, folders):
    """The path of the first of `names` in the first of `folders` (relative to `root`, '' for
    `root` itself) that holds one; None if none does."""
    for folder in folders:
        for name in names:
            path = os.path.join(root, folder, name)
            if os.path.exists(path):
                return path
    return None


def _not_found(root, what, names, folders):
    """The one-line error for `what` missing: where it was looked for and what to do."""
    where = ", ".join(f"{folder}/" if folder else "./" for folder in folders)
    return FileNotFoundError(f"{root}: no {what} found; looked for {', '.join(names)} in {where} of the "
                             f"manual dir; put it in one of those folders under one of those names (see "
                             f"{LAYOUTS_DOC}).")


def _existing(videos, dataset):
    """The videos whose file exists; the missing ones are logged by name and counted."""
    present = [video for video in videos if os.path.exists(video[1])]
    for video_id, path, _ in videos:
        if not os.path.exists(path):
            logging.warning("%s: video %s is listed but missing (%s).", dataset, video_id, path)
    if len(present) < len(videos):
        logging.warning("%s: %d listed videos are missing.", dataset, len(videos) - len(present))
    return present


class _SomethingSomething(_VideoBuilder, skip_registration=True):
    """Both versions: a class-names file and, per split, a file of (video id, class name)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract the 20BN release into the manual dir (see module doc)."
    ANNOTATION_FOLDERS = ("", "labels", "annotations")
    # The names of the class-names file.
    CLASS_NAMES_FILES = ()
    VIDEO_FOLDER = ""
    # Appended to a video id to name its video: '' for frame folders.
    VIDEO_SUFFIX = ""

    def class_names(self, root):
        return self.read_class_names(
            self.required_file(root, f"class names of {self.name}", self.CLASS_NAMES_FILES))

    def videos(self, root, split):
        folder = os.path.join(root, self.VIDEO_FOLDER)
        return [(video_id, os.path.join(folder, video_id + self.VIDEO_SUFFIX), name)
                for video_id, name in self.read_split(self.annotation_file(root, split))]

    def read_class_names(self, path):
        """The class names of a class-names file, index = label."""
        raise NotImplementedError

    def read_split(self, path):
        """[(video id, class name)] of a split file."""
        raise NotImplementedError


class SomethingSomethingV1(_SomethingSomething):
    """Something-Something V1: JPEG frame folders (12 fps, 100 pixels high), 174 classes."""

    DECODES_VIDEOS = False
    SPLITS = {"train": ("something-something-v1-train.csv",),
              "validation": ("something-something-v1-validation.csv",)}
    CLASS_NAMES_FILES = ("something-something-v1-labels.csv",)
    CLASS_NAMES_SOURCE = "something-something-v1-labels.csv"
    VIDEO_FOLDER = "20bn-something-something-v1"

    def read_class_names(self, path):
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]

    def read_split(self, path):
        with open(path) as f:
            return [line.strip().split(";") for line in f if line.strip()]


class SomethingSomethingV2(_SomethingSomething):
    """Something-Something V2: webm videos (12 fps), 174 classes."""

    SPLITS = {"train": ("something-something-v2-train.json", "train.json"),
              "validation": ("something-something-v2-validation.json", "validation.json")}
    CLASS_NAMES_FILES = ("something-something-v2-labels.json", "labels.json")
    CLASS_NAMES_SOURCE = "the labels json"
    VIDEO_FOLDER = "20bn-something-something-v2"
    VIDEO_SUFFIX = ".webm"

    def read_class_names(self, path):
        with open(path) as f:
            index = json.load(f)
        return sorted(index, key=lambda name: int(index[name]))

    def read_split(self, path):
        with open(path) as f:
            return [(entry["id"], entry["template"].replace("[", "").replace("]", "")) for entry in json.load(f)]


class Kinetics400(_VideoBuilder):
    """Kinetics-400: mp4 clips of about 10 s cut from YouTube, 400 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the annotations and the videos in the manual dir."
    SPLITS = {"train": ("train.csv", "kinetics_train.csv"),
              "validation": ("val.csv", "validate.csv", "kinetics_val.csv")}
    ANNOTATION_FOLDERS = ("annotations", "")
    CLASS_NAMES_SOURCE = "the train annotations"
    VIDEO_FOLDERS = {"train": "train", "validation": "val"}
    REPLACEMENTS = "replacement/replacement_for_corrupted_k400"

    def _rows(self, root, split):
        with open(self.required_file(root, f"{split} annotations of {self.name}", self.SPLITS[split])) as f:
            return list(csv.DictReader(f))

    def class_names(self, root):
        return sorted({row["label"] for row in self._rows(root, "train")})

    def videos(self, root, split):
        replacements = os.path.join(root, self.REPLACEMENTS)
        replaced = set(os.listdir(replacements)) if os.path.isdir(replacements) else set()
        videos = []
        for row in self._rows(root, split):
            video_id = (f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                        f"{int(float(row['time_end'])):06d}")
            file_name = video_id + ".mp4"
            folder = replacements if file_name in replaced else os.path.join(
                root, self.VIDEO_FOLDERS[split])
            videos.append((video_id, os.path.join(folder, file_name), row["label"]))
        return videos


class MomentsInTime(_VideoBuilder):
    """Moments in Time: 3-second mp4 videos, 339 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract Moments_in_Time_Raw into the manual dir."
    SPLITS = {"train": ("trainingSet.csv",), "validation": ("validationSet.csv",)}
    ANNOTATION_FOLDERS = ("", "annotations")
    CLASS_NAMES_SOURCE = "moments_categories.txt"
    VIDEO_FOLDERS = {"train": "training", "validation": "validation"}

    def class_names(self, root):
        with open(self.required_file(root, f"class names of {self.name}", ("moments_categories.txt",))) as f:
            rows = [line.strip().rsplit(",", 1) for line in f if line.strip()]
        return [name for name, _ in sorted(rows, key=lambda row: int(row[1]))]

    def videos(self, root, split):
        with open(self.annotation_file(root, split)) as f:
            rows = [row for row in csv.reader(f) if row]
        folder = os.path.join(root, self.VIDEO_FOLDERS[split])
        return [(path, os.path.join(folder, path), name) for path, name, *_ in rows]


class VideoFolder(_VideoBuilder):
    """Any videos PyAV decodes, one sub-folder per class: `<split>/<class name>/<video>`."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put `<split>/<class name>/<video>` folders in the manual dir."
    SPLITS = {"train": ("train",), "validation": ("validation",), "test": ("test",)}
    CLASS_NAMES_SOURCE = "the sub-folders of train"

    def class_names(self, root):
        train = os.path.join(root, "train")
        if not os.path.isdir(train):
            raise FileNotFoundError(f"{train} does not exist: video_folder takes its class names "
                                    "from the sub-folders of `train` in the manual dir.")
        return sorted(name for name in os.listdir(train)
                      if os.path.isdir(os.path.join(train, name)))

    def videos(self, root, split):
        folder = os.path.join(root, split)
        videos = []
        for name in sorted(os.listdir(folder)):
            if not os.path.isdir(os.path.join(folder, name)):
                continue
            for file_name in sorted(os.listdir(os.path.join(folder, name))):
                videos.append((f"{name}/{file_name}", os.path.join(folder, name, file_name), name))
        return videos


BUILDERS = {builder.name: builder for builder in (
    SomethingSomethingV1, SomethingSomethingV2, Kinetics400, MomentsInTime, VideoFolder)}


def dataset_builder(dataset, data_dir, max_fps=0):
    """The builder of `dataset` (a key of BUILDERS) in `data_dir`: every frame, or at most
    `max_fps` a second of each video."""
    builder_class = BUILDERS[dataset]
    if max_fps and not builder_class.DECODES_VIDEOS:
        raise ValueError(f"{dataset} is distributed as frames, stored as they are: max_fps="
                         f"{max_fps:g} applies only to datasets of video files; use 0.")
    return builder_class(config=frame_rate_config(max_fps), data_dir=data_dir)


def build(dataset, manual_dir, data_dir, max_fps=0):
    """Prepares `dataset` (a key of BUILDERS) from `manual_dir` into `data_dir`, keeping every
    frame or at most `max_fps` a second of each video."""
    builder = dataset_builder(dataset, data_dir, max_fps)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
