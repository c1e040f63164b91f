"""TFDS builders (manual download): the one stored format, for the datasets of the paper and for
any folder of videos.

Prepared with `python -m input_pipeline.prepare_tfds` (or `build`), read by `tfds_source`.

Layout: ArrayRecord files (random access) of one record per frame, so that a clip reads only its
sampled frames, whatever the video's length. Each record has 'video_id', 'label' (a ClassLabel
whose names are the class names), 'num_frames', 'frame' and 'jpeg'. A split holds first one
header record per video (frame -1, no jpeg), in the order of its annotations, then every video's
frames (frame 0, 1, ...) in the same order: the reader finds a video's frames from the headers
alone. Frames are JPEG: a decoded video's upright (turned by its display rotation, as ffmpeg
does), with the shorter side resized to 256 (quality 90),
Something-Something V1's stored as distributed. Videos PyAV cannot decode, and videos a list
names but the manual dir lacks, are logged by name and left out; a video listed again is stored
once, one listed with several classes is left out (both logged, with an example).

Preparation decodes the videos in parallel worker processes (`workers`), with a progress bar of
videos. The data dir may be a bucket (gs://): each shard is written to a local temporary file,
then copied there (`_ShardWriter`). Each decoded video is kept in a cache under the data dir until
the dataset is written, so a preparation that was stopped decodes only the videos it had not
reached. The inputs (each
video's id, label, size and modification time, and the class names) are kept in the dataset's
metadata: preparing again with the same inputs does nothing, with other inputs it stops saying
what changed, unless `overwrite`; then the frames of the video files it holds unchanged are put in
the cache from the dataset, so that only new and changed videos are decoded (`reuse_decoded`).

A dataset one machine cannot prepare in reasonable time is prepared on Apache Beam (`pip install -r
requirements-beam.txt`; `prepare_tfds --beam_runner=DirectRunner|DataflowRunner|SparkRunner|FlinkRunner
--beam_options=...`, `build(download_config=...)`): the driver lists the videos and keeps the metadata, the
pipeline's workers decode the videos (cache included) and write the shards, the same records as without
Beam. The manual dir and the data dir must then be paths every worker reads (a shared filesystem).

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
- video_folder: `<split>/<class name>/.../<video>` for splits among train, validation (or val)
  and test (another folder is an error); a video, at any depth of its class folder, is a file of a
  video extension or a folder of frames (.jpg, .jpeg or .png: `video_files.find_videos`, the rule
  prediction follows too), other files are left out and named;
  class names are the lines of `classes_file` (`prepare_tfds --classes`) or else the sorted
  sub-folders of train. Every split is labelled by that one list: a class folder it lacks is an
  error naming it; a split may lack classes. Hidden files and folders (`.DS_Store`,
  `.ipynb_checkpoints`) are ignored.

Text files (annotations, class lists) are read as UTF-8 with or without a byte-order mark (as
Windows editors save them); a file that is not UTF-8 stops naming its line
(`video_files.text_lines`).

Decoded videos keep every frame, as the official frame extraction does; `max_fps` > 0 (the
builder config `max_fps_<F>`, `prepare_tfds --max_fps`, `config.data.tfds_max_fps`) keeps at
most F frames a second (fewer frames to store; a clip reads only its own either way).
"""
import csv
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core import writer as tfds_writer
import tqdm

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


class PrepareError(ValueError):
    """A dataset that cannot be prepared as asked; the message says what to do."""


class _ShardWriter(tfds_writer.ExampleWriter):
    """TFDS's writer of a shard, which also writes to gs:// and other remote paths: ArrayRecord's
    writer opens local files only (tensorflow/datasets#10981), so a remote shard is written to a
    local temporary file, then copied."""

    def write(self, path, examples):
        if "://" not in os.fspath(path):
            return super().write(path, examples)
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, "shard")
            positions = super().write(local, examples)
            with open(local, "rb") as shard, epath.Path(path).open("wb") as remote:
                shutil.copyfileobj(shard, remote, 1 << 24)
        return positions


class _VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and example generation; subclasses list the videos of each split."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"2.0.0": "One record per frame, after one header record per video (ArrayRecord)."}
    # False for datasets distributed as frames, which have no timestamps to cap the rate with.
    DECODES_VIDEOS = True
    # Our split name -> the names of the file (or folder) that may describe it; a split none of them
    # is found for is left out.
    SPLITS = {}
    # The folders of the manual dir ('' for itself) annotation files are looked for in, in order.
    ANNOTATION_FOLDERS = ("",)
    # Where the class names come from, and what to do about a video of another class, for error messages.
    CLASS_NAMES_SOURCE = ""
    UNKNOWN_CLASS_HINT = "are both from the same release?"

    def __init__(self, *, workers=1, beam=False, **kwargs):
        super().__init__(**kwargs)
        self.workers = workers
        # Whether `_generate_examples` returns Beam transforms (decoding in the pipeline's workers)
        # rather than decoding in `workers` local processes.
        self.beam = beam

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "video_id": tfds.features.Text(),
            "label": tfds.features.ClassLabel(),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "frame": tfds.features.Scalar(dtype=np.int32),
            "jpeg": tfds.features.Tensor(shape=(), dtype=np.object_),
        }), disable_shuffling=True, metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        names, videos = self.inputs(root)
        self.info.features["label"].names = names
        self.info.metadata["inputs"] = inputs_manifest(names, videos)
        return {split: self._generate_examples(split, split_videos, self.decode_cache)
                for split, split_videos in videos.items()}

    def _example_writer(self):
        return _ShardWriter(file_format=self.info.file_format)

    @property
    def decode_cache(self):
        """Where decoded videos are kept until the dataset is written: under the data dir."""
        config = self.builder_config.name if self.builder_config else "every_frame"
        return self.data_dir_root / "downloads" / "decoded" / self.name / config

    def inputs(self, root):
        """(class names, {split: [(video id, path, label)]}) of the manual dir `root`."""
        names = self.class_names(root)
        videos = {split: self.labeled_videos(root, split, names) for split in self.SPLITS
                  if self.annotation_file(root, split)}
        if not videos:
            expected = [name for names_of_split in self.SPLITS.values() for name in names_of_split]
            raise _not_found(root, f"split of {self.name}", expected, self.ANNOTATION_FOLDERS)
        return names, videos

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
        """[(video id, path, label)] of the listed videos whose file exists, each once
        (`video_files.one_line_per_video`; the videos left out or read once logged)."""
        labels = _index(names)
        videos = []
        for video_id, path, name in self.videos(root, split):
            if name not in labels:
                raise PrepareError(f"{self.annotation_file(root, split)}: video {video_id} is of class {name!r}, "
                                   f"which is not among the {len(names)} class names of {self.name} (from "
                                   f"{self.CLASS_NAMES_SOURCE}); {self.UNKNOWN_CLASS_HINT}")
            videos.append((video_id, path, labels[name]))
        return _existing(_listed_once(videos, names, self.annotation_file(root, split)), self.name)

    def _generate_examples(self, split, videos, cache):
        """The header of each readable video, then its frames, keyed in that order (`record_key`).

        Videos are decoded by `workers` processes, kept in `cache` until the split is written; with
        `beam`, a Beam transform decoding them in the pipeline's workers, making the same records. Its
        workers read the list of videos from a file in `cache`: a list in the pipeline itself goes into
        the job's description (13 MB for Kinetics-400's train split; Dataflow refuses one over 20 MB)."""
        max_fps = self.builder_config.max_fps if self.builder_config else 0
        if self.beam:
            beam = tfds.core.lazy_imports.apache_beam
            listing = epath.Path(cache) / f"{split}_videos.jsonl"
            listing.parent.mkdir(parents=True, exist_ok=True)
            listing.write_text("".join(json.dumps([number, *video]) + "\n" for number, video in enumerate(videos)))
            return ("ReadVideoList" >> beam.io.ReadFromText(str(listing))
                    | "DecodeVideos" >> beam.FlatMap(_beam_video_examples, cache=cache, max_fps=max_fps,
                                                     num_videos=len(videos), left_out=f"{self.name} {split}"))
        return self._local_examples(split, videos, cache, max_fps)

    def _process_pipeline_result(self, pipeline_result):
        """With Beam, the number of videos each split left out (counted by the workers), logged and
        kept in the metadata's 'left_out'."""
        beam = tfds.core.lazy_imports.apache_beam
        counters = pipeline_result.metrics().query(beam.metrics.MetricsFilter().with_name(_LEFT_OUT))["counters"]
        for counter in sorted(counters, key=lambda counter: counter.key.metric.namespace):
            if counter.result:
                self._left_out(counter.key.metric.namespace.rsplit(" ", 1)[1], counter.result)

    def _left_out(self, split, count):
        """Logs and keeps in the metadata ('left_out': {split: count}) the videos a split left out."""
        logging.warning("%s %s: videos left out: %d.", self.name, split, count)
        self.info.metadata.setdefault("left_out", {})[split] = count

    def _local_examples(self, split, videos, cache, max_fps):
        """`_generate_examples` without Beam: decoded by `workers` local processes, in order."""
        tasks = [(path, cache, max_fps) for _, path, _ in videos]
        skipped = 0
        # Ctrl-C stops the main process alone, which then ends the workers (a worker it stopped would
        # leave `terminate` waiting for its results forever).
        pool = (multiprocessing.get_context("spawn").Pool(self.workers, initializer=signal.signal,
                                                          initargs=(signal.SIGINT, signal.SIG_IGN))
                if self.workers > 1 else None)
        try:
            results = pool.imap(decoded_frames, tasks) if pool else map(decoded_frames, tasks)
            for number, (video, frames) in enumerate(zip(
                    videos, tqdm.tqdm(results, total=len(videos), desc=f"{self.name} {split} videos", unit="video",
                                      disable=None))):
                skipped += isinstance(frames, str)
                yield from video_examples(number, video, frames, len(videos))
        finally:
            if pool:
                pool.terminate()
        if skipped:
            self._left_out(split, skipped)


def video_examples(number, video, frames, num_videos):
    """The (key, example) pairs of video `number` of a split's `num_videos`: its header, then its
    frames. `video` = (video id, path, label); `frames` as `decoded_frames` returns them (a message:
    the video is logged and left out, no pair)."""
    video_id, path, label = video
    if isinstance(frames, str):
        logging.warning("Left out video %s (%s): %s", video_id, path, frames)
        return []
    record = {"video_id": video_id, "label": label, "num_frames": len(frames)}
    return [(record_key(number, -1, num_videos), {**record, "frame": -1, "jpeg": b""})] + [
        (record_key(number, frame, num_videos), {**record, "frame": frame, "jpeg": jpeg})
        for frame, jpeg in enumerate(frames)]


_LEFT_OUT = "videos left out"


def _beam_video_examples(line, cache, max_fps, num_videos, left_out):
    """`video_examples` of one line `[number, video id, path, label]` of a split's video list,
    decoded in a Beam worker; a video left out counts in the counter `_LEFT_OUT` of namespace `left_out`."""
    number, *video = json.loads(line)
    frames = decoded_frames((video[1], cache, max_fps))
    if isinstance(frames, str):
        tfds.core.lazy_imports.apache_beam.metrics.Metrics.counter(left_out, _LEFT_OUT).inc()
    return video_examples(number, video, frames, num_videos)


def record_key(number, frame, num_videos):
    """The key that sorts video `number`'s header (frame -1) among the headers, before every frame,
    and its frames after those of the videos before it. Headers take keys [0, num_videos); frames
    spread over the rest of [0, 2**128), so that TFDS sorts a large split in many buckets and Beam,
    which shards by key range, gives each shard about as many frames."""
    if frame < 0:
        return number
    return num_videos + number * (((1 << 128) - num_videos) // num_videos) + frame


def decoded_frames(task):
    """JPEG bytes of each frame of a video, or a message saying why it cannot be read.

    `task` = (path, cache dir, max_fps): a frame folder's files as they are; a video file decoded
    (`video_files.decode_video`), kept in the cache under the hash of its path, size, modification
    time and the settings, and read from there when it is already.
    """
    path, cache, max_fps = task
    try:
        if os.path.isdir(path):
            return _folder_frames(path)
        cached = _cache_file(cache, path, max_fps)
        if cached.exists():
            with cached.open("rb") as f, np.load(f) as stored:
                return [part.tobytes() for part in np.split(stored["data"], stored["ends"][:-1])]
        frames = video_files.decode_video(path, SHORT_SIDE, JPEG_QUALITY, max_fps)
        _write_cache_file(cached, frames)
        return frames
    except video_files.DECODE_ERRORS as e:
        return str(e) or type(e).__name__


def _cache_file(cache, path, max_fps):
    """Where the decoded frames of the video file at `path` are kept in `cache`: named by the hash
    of its path, size, modification time and the settings."""
    stat = os.stat(path)
    key = json.dumps([os.path.abspath(path), stat.st_size, stat.st_mtime_ns, SHORT_SIDE, JPEG_QUALITY, max_fps,
                      "upright"])
    return epath.Path(cache) / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


def _write_cache_file(cached, frames):
    """Keeps the JPEG bytes `frames` in the cache file `cached`, whole or not at all."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    with partial.open("wb") as f:
        np.savez(f, data=np.frombuffer(b"".join(frames), np.uint8), ends=np.cumsum([len(j) for j in frames]))
    partial.rename(cached)


def _folder_frames(path):
    """JPEG bytes of a frame folder's image files (`video_files.frame_files`), in name order: JPEG
    files as they are, others encoded as JPEG."""
    frames = []
    for file in video_files.frame_files(path):
        if file.lower().endswith((".jpg", ".jpeg")):
            with open(file, "rb") as f:
                frames.append(f.read())
        else:
            with Image.open(file) as image:
                frames.append(video_files.jpeg_bytes(image.convert("RGB"), JPEG_QUALITY))
    if not frames:
        raise ValueError(f"no frame file ({', '.join(video_files.FRAME_EXTENSIONS)}) in the folder")
    return frames


def _stamp(path):
    """[size, modification time in ns] of a file; of a frame folder, the total size of its files and
    the newest time."""
    if os.path.isdir(path):
        stats = [entry.stat() for entry in os.scandir(path) if entry.is_file()]
        return [sum(stat.st_size for stat in stats), max((stat.st_mtime_ns for stat in stats), default=0)]
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def inputs_manifest(names, videos):
    """What a dataset is made from, JSON-ready: the class names and, per split, each video's
    [id, label, *`_stamp`] (a frame folder changes with any of its frames)."""
    return {"class_names": list(names),
            "videos": {split: [[video_id, label, *_stamp(path)] for video_id, path, label in split_videos]
                       for split, split_videos in videos.items()}}


def reuse_decoded(builder, videos, manifest):
    """Puts the stored frames of each video file of the prepared `builder` that `videos` ({split:
    [(video id, path, label)]}, their `inputs_manifest` `manifest`) lists unchanged (split, id, size
    and modification time) in its decode cache, where preparing again reads them instead of
    decoding the video; returns how many."""
    from array_record.python import array_record_data_source
    from input_pipeline import faults, tfds_source  # The reader of the stored records, with TensorFlow.

    stored = builder.info.metadata["inputs"]["videos"]
    max_fps = builder.builder_config.max_fps if builder.builder_config else 0
    reused = 0
    for split, split_videos in videos.items():
        before = {video_id: stamp for video_id, _, *stamp in stored.get(split, [])}
        unchanged = {video_id: path for (video_id, path, _), (_, _, *stamp) in zip(split_videos,
                                                                                  manifest["videos"][split])
                     if before.get(video_id) == stamp and not os.path.isdir(path)}
        if not unchanged:
            continue
        shards = builder.info.splits[split].file_instructions
        records = array_record_data_source.ArrayRecordDataSource(shards)
        try:
            headers = tfds_source.headers(records, shards, f"{builder.name} {split} ({builder.data_dir})")
        except faults.DataError as error:
            logging.warning("No stored video reused, every one decoded again: %s", error)
            continue
        first = tfds_source.first_frames(headers)
        for number, header in enumerate(tqdm.tqdm(headers, desc=f"{builder.name} {split} videos kept", unit="video",
                                                  disable=None)):
            path = unchanged.get(header["video_id"].decode())
            try:
                frames = [tfds_source.frame_jpeg(records[int(first[number]) + frame])
                          for frame in range(header["num_frames"])] if path else None
            except tfds_source.READ_ERRORS:  # A damaged stored frame: the video is decoded again.
                frames = None
            if frames:
                _write_cache_file(_cache_file(builder.decode_cache, path, max_fps), frames)
                reused += 1
    return reused


def describe_changes(old, new):
    """What differs between two `inputs_manifest`s, in a few words, each with an example."""
    changes = []
    if old["class_names"] != new["class_names"]:
        changes.append(f"the class names ({len(old['class_names'])} -> {len(new['class_names'])} classes)")
    for split in sorted(set(old["videos"]) | set(new["videos"])):
        before = {video_id: rest for video_id, *rest in old["videos"].get(split, [])}
        after = {video_id: rest for video_id, *rest in new["videos"].get(split, [])}
        kinds = {"added": [v for v in after if v not in before],
                 "removed": [v for v in before if v not in after],
                 "relabelled": [v for v in after if v in before and after[v][0] != before[v][0]],
                 "changed on disk": [v for v in after if v in before and after[v][0] == before[v][0]
                                     and after[v] != before[v]]}
        changes += [f"{split}: {len(ids)} video{'s' if len(ids) > 1 else ''} {kind} (e.g. {ids[0]})"
                    for kind, ids in kinds.items() if ids]
    return ", ".join(changes) or "the order of the videos"


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


def _listed_once(videos, names, where):
    """`videos` [(video id, path, label)] of the annotation file `where`, each once
    (`video_files.one_line_per_video`); a video listed again and one listed with several classes
    (left out) are logged, with an example."""
    kept, repeated = video_files.one_line_per_video([(video_id, label) for video_id, _, label in videos])
    labels_of = {video_id: sorted({videos[i][2] for i in indices}) for video_id, indices in repeated.items()}
    again = [video_id for video_id, labels in labels_of.items() if len(labels) == 1]
    if again:
        logging.warning("%s: %d video%s listed more than once, read once (e.g. %s).", where, len(again),
                        "s" * (len(again) > 1), again[0])
    several = [video_id for video_id, labels in labels_of.items() if len(labels) > 1]
    if several:
        logging.warning("%s: %d video%s listed with several classes, left out (e.g. %s: %s).", where, len(several),
                        "s" * (len(several) > 1), several[0],
                        ", ".join(names[label] for label in labels_of[several[0]]))
    return [videos[index] for index in kept]


def _existing(videos, dataset):
    """The videos whose file exists; the missing ones are logged by name and counted."""
    present = [video for video in videos if os.path.exists(video[1])]
    for video_id, path, _ in videos:
        if not os.path.exists(path):
            logging.warning("%s: video %s is listed but missing (%s).", dataset, video_id, path)
    if len(present) < len(videos):
        logging.warning("%s: listed videos missing: %d.", dataset, len(videos) - len(present))
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
        return [line.strip() for line in video_files.text_lines(path) if line.strip()]

    def read_split(self, path):
        return [line.strip().split(";") for line in video_files.text_lines(path) if line.strip()]


class SomethingSomethingV2(_SomethingSomething):
    """Something-Something V2: webm videos (12 fps), 174 classes."""

    SPLITS = {"train": ("something-something-v2-train.json", "train.json"),
              "validation": ("something-something-v2-validation.json", "validation.json")}
    CLASS_NAMES_FILES = ("something-something-v2-labels.json", "labels.json")
    CLASS_NAMES_SOURCE = "the labels json"
    VIDEO_FOLDER = "20bn-something-something-v2"
    VIDEO_SUFFIX = ".webm"

    def read_class_names(self, path):
        index = json.loads("".join(video_files.text_lines(path)))
        return sorted(index, key=lambda name: int(index[name]))

    def read_split(self, path):
        return [(entry["id"], entry["template"].replace("[", "").replace("]", ""))
                for entry in json.loads("".join(video_files.text_lines(path)))]


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
        path = self.required_file(root, f"{split} annotations of {self.name}", self.SPLITS[split])
        return list(csv.DictReader(video_files.text_lines(path)))

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
        path = self.required_file(root, f"class names of {self.name}", ("moments_categories.txt",))
        rows = [line.strip().rsplit(",", 1) for line in video_files.text_lines(path) if line.strip()]
        return [name for name, _ in sorted(rows, key=lambda row: int(row[1]))]

    def videos(self, root, split):
        rows = [row for row in csv.reader(video_files.text_lines(self.annotation_file(root, split))) if row]
        folder = os.path.join(root, self.VIDEO_FOLDERS[split])
        return [(path, os.path.join(folder, path), name) for path, name, *_ in rows]


class VideoFolder(_VideoBuilder):
    """Any videos PyAV decodes, one sub-folder per class: `<split>/<class name>/<video>`."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put `<split>/<class name>/<video>` folders in the manual dir."
    SPLITS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}

    def __init__(self, *, classes_file=None, **kwargs):
        super().__init__(**kwargs)
        self.classes_file = classes_file
        self.CLASS_NAMES_SOURCE = f"--classes={classes_file}" if classes_file else "the sub-folders of train"
        self.UNKNOWN_CLASS_HINT = (f"add the class to {classes_file}" if classes_file else
                                   "give train a folder of that class too, or list the classes with --classes=FILE")

    def class_names(self, root):
        if self.classes_file:
            if not os.path.isfile(self.classes_file):
                raise PrepareError(f"--classes={self.classes_file} does not exist: give a file of class names, one a "
                                   "line.")
            names = [line.strip() for line in video_files.text_lines(self.classes_file) if line.strip()]
            if len(set(names)) != len(names):
                raise PrepareError(f"--classes={self.classes_file} names a class twice; give each name once.")
            return names
        train = os.path.join(root, "train")
        if not os.path.isdir(train):
            raise PrepareError(f"{train} does not exist: video_folder takes its class names from the "
                               "sub-folders of `train` in the manual dir (or from --classes=FILE).")
        return [name for name in video_files.visible(train) if os.path.isdir(os.path.join(train, name))]

    def inputs(self, root):
        """Also an error for a folder of the manual dir that is no split; a warning for a class
        without a training video."""
        splits = [name for names in self.SPLITS.values() for name in names]
        others = [name for name in video_files.visible(root)
                  if name not in splits and os.path.isdir(os.path.join(root, name))]
        if others:
            raise PrepareError(f"{os.path.join(root, others[0])} is not a split: video_folder reads the folders "
                               f"{', '.join(splits)} of the manual dir; rename it or move it out.")
        names, videos = super().inputs(root)
        without = sorted(set(names) - {names[label] for _, _, label in videos.get("train", [])})
        if without:
            logging.warning("video_folder: classes without a training video: %s.", ", ".join(without))
        return names, videos

    def videos(self, root, split):
        """The videos of each class folder at any depth (`video_files.find_videos`); other files are
        left out and named."""
        folder = self.annotation_file(root, split)
        videos, others = [], []
        for name in video_files.visible(folder):
            if not os.path.isdir(os.path.join(folder, name)):
                others.append(name)
                continue
            found, not_videos = video_files.find_videos(os.path.join(folder, name))
            videos += [(os.path.relpath(path, folder), path, name) for path in found]
            others += [os.path.relpath(path, folder) for path in not_videos]
        if others:
            logging.warning("video_folder %s, left out as no video in a class folder (videos end in %s, frame folders "
                            "hold %s files): %s%s", split, " ".join(video_files.VIDEO_EXTENSIONS),
                            " ".join(video_files.FRAME_EXTENSIONS), ", ".join(others[:5]),
                            f", ... ({len(others)} in all)" if len(others) > 5 else "")
        return videos


BUILDERS = {builder.name: builder for builder in (
    SomethingSomethingV1, SomethingSomethingV2, Kinetics400, MomentsInTime, VideoFolder)}


def dataset_builder(dataset, data_dir, max_fps=0, **kwargs):
    """The builder of `dataset` (a key of BUILDERS) in `data_dir`: every frame, or at most
    `max_fps` a second of each video. `kwargs`: `workers` (or `beam`), and for video_folder `classes_file`."""
    builder_class = BUILDERS[dataset]
    if max_fps and not builder_class.DECODES_VIDEOS:
        raise PrepareError(f"{dataset} is distributed as frames, stored as they are: max_fps="
                           f"{max_fps:g} applies only to datasets of video files; use 0.")
    return builder_class(config=frame_rate_config(max_fps), data_dir=data_dir, file_format="array_record", **kwargs)


def build(dataset, manual_dir, data_dir, max_fps=0, overwrite=False, download_config=None, **kwargs):
    """Prepares `dataset` (a key of BUILDERS) from `manual_dir` into `data_dir`, keeping every
    frame or at most `max_fps` a second of each video; returns (builder, whether it wrote anything).

    A dataset prepared before from the same inputs is left as it is; from other inputs it is a
    PrepareError saying what changed, unless `overwrite`, which prepares it again, decoding only the
    video files it does not hold unchanged (`reuse_decoded`).
    `download_config`: a `tfds.download.DownloadConfig` (its manual_dir is `manual_dir`); with a
    `beam_runner` or `beam_options`, the videos are decoded in that Beam pipeline, not by `workers`.
    """
    if not epath.Path(manual_dir).is_dir() or not any(epath.Path(manual_dir).iterdir()):
        raise PrepareError(f"the manual dir {manual_dir} does not exist or is empty: put the {dataset} download "
                           f"there (see {LAYOUTS_DOC}).")
    download_config = dataclasses.replace(download_config or tfds.download.DownloadConfig(), manual_dir=manual_dir)
    kwargs.setdefault("beam", download_config.beam_runner is not None or download_config.beam_options is not None)
    builder = dataset_builder(dataset, data_dir, max_fps, **kwargs)
    if builder.is_prepared():
        names, videos = builder.inputs(manual_dir)
        wanted, stored = inputs_manifest(names, videos), builder.info.metadata.get("inputs")
        if stored == wanted:
            return builder, False
        if not overwrite:
            what = describe_changes(stored, wanted) if stored else "it records no inputs"
            raise PrepareError(f"{builder.data_dir} was prepared from other inputs: {what}. Pass --overwrite "
                               "to prepare it again (videos it holds unchanged are not decoded again).")
        if stored:
            logging.info("%d unchanged videos kept from %s.", reuse_decoded(builder, videos, wanted),
                         builder.data_dir)
        epath.Path(builder.data_dir).rmtree()
        builder = dataset_builder(dataset, data_dir, max_fps, **kwargs)
    builder.download_and_prepare(download_config=download_config)
    if builder.decode_cache.exists():
        builder.decode_cache.rmtree()
    return builder, True
