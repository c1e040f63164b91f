"""TFDS builders (manual download) for the datasets of the paper and for any folder of videos.

Prepared with `python -m input_pipeline.prepare_tfds` (or `build`).

Each example: 'video' (the frames as JPEG, shorter side 256 for decoded videos; Something-
Something V1 frames are stored as distributed), 'label' (a ClassLabel whose names are the
class names) and 'video_id'. Videos PyAV cannot decode, and videos a list names but the
folder lacks, are logged by name and left out. Layouts expected under the manual dir:

- something_something_v1: `20bn-something-something-v1/<id>/00001.jpg ...`,
  `something-something-v1-labels.csv` (a class name per line),
  `something-something-v1-{train,validation}.csv` (`<id>;<class name>` lines).
- something_something_v2: `20bn-something-something-v2/<id>.webm`,
  `something-something-v2-labels.json` ({class name: "index"}),
  `something-something-v2-{train,validation}.json` ([{"id", "template", ...}]; the class is
  the template without brackets).
- kinetics400: `annotations/{train,validate}.csv` (`label,youtube_id,time_start,time_end,...`
  with a header), videos `{train,val}/<youtube_id>_<start:06d>_<end:06d>.mp4`.
- moments_in_time: `moments_categories.txt` (`<name>,<index>` lines),
  `{trainingSet,validationSet}.csv` (`<path>,<class name>,...` lines), videos under
  `training/` and `validation/`.
- video_folder: `<split>/<class name>/<video>` for splits among train, validation and test;
  class names are the sorted sub-folders of train.

Generation runs in one process; for a large dataset the parallel, resumable
`python -m input_pipeline.prepare` (the `records` source) is faster.
"""
import csv
import json
import logging
import os

import tensorflow_datasets as tfds

from input_pipeline import video_files

SHORT_SIDE = 256
JPEG_QUALITY = 90


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and example generation; subclasses list the videos of each split."""

    VERSION = tfds.core.Version("1.0.0")
    # Our split name -> the name of the files that describe it, per dataset.
    SPLITS = {}

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(),
            "video_id": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        self.info.features["label"].names = self.class_names(root)
        return {split: self._generate_examples(root, split) for split in self.SPLITS
                if self.split_exists(root, split)}

    def split_exists(self, root, split):
        return os.path.exists(os.path.join(root, self.SPLITS[split]))

    def class_names(self, root):
        """The class names, index = label."""
        raise NotImplementedError

    def videos(self, root, split):
        """[(video id, path of a video file or of a folder of JPEG frames, label)]."""
        raise NotImplementedError

    def _generate_examples(self, root, split):
        skipped = 0
        for video_id, path, label in self.videos(root, split):
            try:
                frames = _jpeg_frames(path)
            except video_files.DECODE_ERRORS as e:
                skipped += 1
                logging.warning("Left out video %s (%s): %s", video_id, path, e)
                continue
            yield video_id, {"video": frames, "label": label, "video_id": video_id}
        if skipped:
            logging.warning("%s %s: %d videos left out.", self.name, split, skipped)


def _jpeg_frames(path):
    """JPEG bytes of every frame: a frame folder's files as they are, or a decoded video."""
    if not os.path.isdir(path):
        return video_files.decode_video(path, SHORT_SIDE, JPEG_QUALITY)
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


class SomethingSomethingV1(_VideoBuilder):
    """Something-Something V1: JPEG frame folders (12 fps, 100 pixels high), 174 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract the 20BN release into the manual dir (see module doc)."
    SPLITS = {"train": "something-something-v1-train.csv",
              "validation": "something-something-v1-validation.csv"}

    def class_names(self, root):
        with open(os.path.join(root, "something-something-v1-labels.csv")) as f:
            return [line.strip() for line in f if line.strip()]

    def videos(self, root, split):
        labels = _index(self.class_names(root))
        with open(os.path.join(root, self.SPLITS[split])) as f:
            rows = [line.strip().split(";") for line in f if line.strip()]
        return [(video_id, os.path.join(root, "20bn-something-something-v1", video_id),
                 labels[name]) for video_id, name in rows]


class SomethingSomethingV2(_VideoBuilder):
    """Something-Something V2: webm videos (12 fps), 174 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract the 20BN release into the manual dir (see module doc)."
    SPLITS = {"train": "something-something-v2-train.json",
              "validation": "something-something-v2-validation.json"}

    def class_names(self, root):
        with open(os.path.join(root, "something-something-v2-labels.json")) as f:
            index = json.load(f)
        return sorted(index, key=lambda name: int(index[name]))

    def videos(self, root, split):
        labels = _index(self.class_names(root))
        with open(os.path.join(root, self.SPLITS[split])) as f:
            entries = json.load(f)
        folder = os.path.join(root, "20bn-something-something-v2")
        return [(entry["id"], os.path.join(folder, entry["id"] + ".webm"),
                 labels[entry["template"].replace("[", "").replace("]", "")])
                for entry in entries]


def _existing(videos, dataset):
    """The videos whose file exists; the missing ones are logged by name and counted."""
    present = [video for video in videos if os.path.exists(video[1])]
    for video_id, path, _ in videos:
        if not os.path.exists(path):
            logging.warning("%s: video %s is listed but missing (%s).", dataset, video_id, path)
    if len(present) < len(videos):
        logging.warning("%s: %d listed videos are missing.", dataset, len(videos) - len(present))
    return present


class Kinetics400(_VideoBuilder):
    """Kinetics-400: mp4 clips of about 10 s cut from YouTube, 400 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the annotations and the videos in the manual dir."
    SPLITS = {"train": "annotations/train.csv", "validation": "annotations/validate.csv"}
    VIDEO_FOLDERS = {"train": "train", "validation": "val"}

    def _rows(self, root, split):
        with open(os.path.join(root, self.SPLITS[split])) as f:
            return list(csv.DictReader(f))

    def class_names(self, root):
        return sorted({row["label"] for row in self._rows(root, "train")})

    def videos(self, root, split):
        labels = _index(self.class_names(root))
        videos = []
        for row in self._rows(root, split):
            video_id = (f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
                        f"{int(float(row['time_end'])):06d}")
            path = os.path.join(root, self.VIDEO_FOLDERS[split], video_id + ".mp4")
            videos.append((video_id, path, labels[row["label"]]))
        return _existing(videos, self.name)


class MomentsInTime(_VideoBuilder):
    """Moments in Time: 3-second mp4 videos, 339 classes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Extract Moments_in_Time_Raw into the manual dir."
    SPLITS = {"train": "trainingSet.csv", "validation": "validationSet.csv"}
    VIDEO_FOLDERS = {"train": "training", "validation": "validation"}

    def class_names(self, root):
        with open(os.path.join(root, "moments_categories.txt")) as f:
            rows = [line.strip().rsplit(",", 1) for line in f if line.strip()]
        return [name for name, _ in sorted(rows, key=lambda row: int(row[1]))]

    def videos(self, root, split):
        labels = _index(self.class_names(root))
        with open(os.path.join(root, self.SPLITS[split])) as f:
            rows = [row for row in csv.reader(f) if row]
        return _existing([(path, os.path.join(root, self.VIDEO_FOLDERS[split], path),
                           labels[name]) for path, name, *_ in rows], self.name)


class VideoFolder(_VideoBuilder):
    """Any videos PyAV decodes, one sub-folder per class: `<split>/<class name>/<video>`."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put `<split>/<class name>/<video>` folders in the manual dir."
    SPLITS = {"train": "train", "validation": "validation", "test": "test"}

    def class_names(self, root):
        train = os.path.join(root, "train")
        if not os.path.isdir(train):
            raise FileNotFoundError(f"{train} does not exist: video_folder takes its class names "
                                    "from the sub-folders of `train` in the manual dir.")
        return sorted(name for name in os.listdir(train)
                      if os.path.isdir(os.path.join(train, name)))

    def videos(self, root, split):
        labels = _index(self.class_names(root))
        folder = os.path.join(root, split)
        videos = []
        for name in sorted(os.listdir(folder)):
            if name not in labels:
                raise ValueError(f"{os.path.join(folder, name)}: class {name!r} is not a "
                                 "sub-folder of train.")
            for file_name in sorted(os.listdir(os.path.join(folder, name))):
                videos.append((f"{name}/{file_name}", os.path.join(folder, name, file_name),
                               labels[name]))
        return videos


BUILDERS = {builder.name: builder for builder in (
    SomethingSomethingV1, SomethingSomethingV2, Kinetics400, MomentsInTime, VideoFolder)}


def build(dataset, manual_dir, data_dir):
    """Prepares `dataset` (a key of BUILDERS) from `manual_dir` into `data_dir`."""
    builder = BUILDERS[dataset](data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
