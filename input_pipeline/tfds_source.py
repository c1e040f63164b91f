"""The 'tfds' source: a split of a dataset written by `tfds_builders`, read frame by frame.

`config.data.tfds_name` names the builder (e.g. 'something_something_v2', 'video_folder'),
`config.data.tfds_data_dir` where it was prepared, `config.data.tfds_max_fps` the frame-rate
cap it was prepared with (0: every frame). The header records of a split give each video's id,
label and number of frames; a clip then reads only its frames' records (ArrayRecord, random
access). Our split 'val' is TFDS's 'validation'.
"""
import io
import os

from array_record.python import array_record_data_source
import numpy as np

from input_pipeline import faults
from input_pipeline import sources
from input_pipeline import tfds_builders
from input_pipeline.tensorflow_cpu import tf

SPLITS = {"train": "train", "val": "validation"}
_HEADER_CHUNK = 4096
# What the ArrayRecord reader raises for a shard it cannot open or a record it cannot read (a
# missing, incomplete or damaged file: its chunks carry hashes).
READ_ERRORS = (RuntimeError, OSError)


def prepared_builder(config):
    """The builder of `config.tfds_name` prepared in `config.tfds_data_dir`, its metadata read from
    disk; an error saying how to prepare it if it is not."""
    if config.tfds_name not in tfds_builders.BUILDERS:
        raise ValueError(f"config.data.tfds_name={config.tfds_name!r}: use one of "
                         f"{sorted(tfds_builders.BUILDERS)}.")
    found = tfds_builders.dataset_builder(config.tfds_name, config.tfds_data_dir or None, config.tfds_max_fps)
    if not found.is_prepared():
        cap = f" --max_fps={config.tfds_max_fps:g}" if config.tfds_max_fps else ""
        raise FileNotFoundError(
            f"TFDS dataset {config.tfds_name!r} is not prepared in {found.data_dir}: run python "
            f"-m input_pipeline.prepare_tfds --dataset={config.tfds_name}{cap} --manual_dir=... "
            "--data_dir=... and set config.data.tfds_data_dir (and config.data.tfds_max_fps to "
            "the --max_fps it was prepared with).")
    return found


def split_info(prepared, split):
    """The TFDS `SplitInfo` of our split 'train' or 'val' of a prepared builder."""
    if SPLITS[split] not in prepared.info.splits:
        raise ValueError(f"TFDS dataset {prepared.name!r} in {prepared.data_dir} has no split "
                         f"{SPLITS[split]!r} (it has {', '.join(prepared.info.splits)}).")
    return prepared.info.splits[SPLITS[split]]


def headers(records, shards, where):
    """The fields (`fields`) of the header records of a split (`records`, read from the TFDS file
    instructions `shards`), which come first: as many as make, with their frames, every record of
    the split. Raises `faults.DataError` naming `where` and the shard when one cannot be read."""
    found, frames, total = [], 0, len(records)
    while len(found) + frames < total:
        start = len(found)
        keys = range(start, min(start + _HEADER_CHUNK, total))
        try:
            chunk = [fields(record) for record in records.__getitems__(keys)]
        except READ_ERRORS:  # Then one record at a time, to read no frame: a damaged frame is no damaged header.
            chunk = None
        for key in keys:
            try:
                header = chunk[key - start] if chunk else fields(records[key])
            except READ_ERRORS as error:
                raise faults.DataError(f"{where}: the header of video #{key} in {shard_name(shards, key)} cannot be "
                                       f"read ({error}): {_DAMAGED}") from None
            if header["frame"] >= 0:
                raise faults.DataError(f"{where}: record {key} of {shard_name(shards, key)} is a frame where the "
                                       f"header of video #{key} was expected: {_DAMAGED}")
            found.append(header)
            frames += header["num_frames"]
            if len(found) + frames >= total:
                break
    return found


_DAMAGED = ("the dataset is damaged or incomplete; copy it again, or delete it and prepare it again (python -m "
            "input_pipeline.prepare_tfds)")


def shard_name(shards, key):
    """The file name of the TFDS file instructions `shards` holding record `key` of their split."""
    ends = np.cumsum([shard.take for shard in shards])
    return os.path.basename(shards[int(np.searchsorted(ends, key, "right"))].filename)


def first_frames(headers):
    """int64 (videos,): the record of each video's frame 0, from the `headers` of its split (every
    video's frames follow the headers, in their order)."""
    num_frames = np.array([header["num_frames"] for header in headers], np.int64)
    return len(headers) + np.concatenate([[0], np.cumsum(num_frames)[:-1]]).astype(np.int64)


def fields(record):
    """A serialized record -> {feature name: its value}."""
    features = tf.train.Example.FromString(record).features.feature
    return {name: (feature.bytes_list.value or feature.int64_list.value or [b""])[0]
            for name, feature in features.items()}


def frame_jpeg(record):
    """The 'jpeg' of a serialized frame record (the only field a clip needs: 1.4x faster than `fields`)."""
    return tf.train.Example.FromString(record).features.feature["jpeg"].bytes_list.value[0]


class StoredVideos(sources.Videos):
    """The videos of one split of a prepared TFDS dataset, named
    "tfds video_folder train #3 video 'falling/a.mp4'"."""

    def __init__(self, config, prepared, split, num_classes):
        """A split of the `prepared` builder; a video whose label is not below `num_classes` (when
        not 0) is left out, a problem."""
        self.where = f"tfds {config.tfds_name} {split}"
        self.shards = split_info(prepared, split).file_instructions
        self.records = array_record_data_source.ArrayRecordDataSource(self.shards)
        self.local = "://" not in (config.tfds_data_dir or "")
        stored = headers(self.records, self.shards, f"{self.where} ({prepared.data_dir})")
        num_frames, first = np.array([header["num_frames"] for header in stored], np.int64), first_frames(stored)
        kept = [number for number, header in enumerate(stored) if not num_classes or header["label"] < num_classes]
        self.ids = [stored[number]["video_id"].decode() for number in kept]
        self.labels = np.array([stored[number]["label"] for number in kept], np.int32)
        self.num_frames, self.first = num_frames[kept], first[kept]
        self.problems = [faults.Fault(faults.LABEL_OUT_OF_RANGE, header["video_id"].decode(), (
            f"{self.where} video {header['video_id'].decode()!r}: label out of range: {header['label']} is not in "
            f"[0, {num_classes}) (config.data.num_classes)")) for header in stored if header["label"] >= num_classes
            and num_classes]

    def read(self, video, indices):
        """Record by record from local files (2x faster than `__getitems__`' thread pool, which
        pays off only for remote files, whose requests it sends in parallel); b'' for a record that
        cannot be read (a missing, incomplete or damaged shard)."""
        keys = [int(self.first[video] + i) for i in indices]
        if not self.local:
            try:
                return [frame_jpeg(record) for record in self.records.__getitems__(keys)]
            except READ_ERRORS:
                pass  # Then one by one.
        return [frame_jpeg(record) if record else b"" for record in map(self._record, keys)]

    def _record(self, key):
        try:
            return self.records[key]
        except READ_ERRORS:
            return b""

    def name(self, video):
        return f"{self.where} #{video} video {self.ids[video]!r}"

    def frame_name(self, video, index):
        return f"frame {index}"

    def frame_faults(self, video, index):
        key = int(self.first[video] + index)
        try:
            problem = faults.image_problem(io.BytesIO(frame_jpeg(self.records[key])))
        except READ_ERRORS as error:
            problem = f"its record in {shard_name(self.shards, key)} cannot be read: {error}"
        return [faults.Fault(faults.CORRUPT_FRAME, (self.ids[video], index),
                             f"{self.name(video)}: corrupt frame {index} ({problem})")] if problem else []

    def video_faults(self, video):
        """'empty video' (no frame) or 'corrupt frame' (one that does not decode)."""
        if not self.num_frames[video]:
            return [faults.Fault(faults.EMPTY_VIDEO, self.ids[video], f"{self.name(video)}: empty video: no frame")]
        return [fault for index in range(int(self.num_frames[video])) for fault in self.frame_faults(video, index)]


class TfdsSource(sources.Source):
    """'tfds': a dataset prepared by `python -m input_pipeline.prepare_tfds`; its class names are
    kept in its metadata, index = label."""

    def __init__(self, data_config):
        super().__init__(data_config)
        self.prepared = prepared_builder(data_config)

    @classmethod
    def preflight(cls, data_config, splits):
        """Reads the prepared dataset's metadata: it must hold videos in each of `splits`."""
        prepared = prepared_builder(data_config)
        for split in splits:
            if not split_info(prepared, split).num_examples:
                raise sources.no_usable_video(split, [])
        if data_config.num_classes:
            return super().preflight(data_config, splits)
        return prepared.info.features["label"].num_classes, f"the class names of TFDS dataset {data_config.tfds_name!r}"

    def open_split(self, split):
        return StoredVideos(self.config, self.prepared, split, self.num_classes())

    def class_names(self):
        return self.prepared.info.features["label"].names

    def check_split(self, split, workers):
        """`Source.check_split`, and the videos the preparation left out (unreadable) as one problem."""
        num_videos, problems = super().check_split(split, workers)
        left_out = self.prepared.info.metadata.get("left_out", {}).get(SPLITS[split], 0)
        if left_out:
            problems.append((faults.UNREADABLE_VIDEO, (
                f"tfds {self.config.tfds_name} {split}: {left_out} video{'s' * (left_out > 1)} of the manual dir left "
                "out when it was prepared, unreadable (prepare_tfds logged each with the reason)")))
        return num_videos, problems
