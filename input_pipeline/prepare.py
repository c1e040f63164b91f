"""Writes the record shards of the `records` source from video files, decoded with PyAV.

  python -m input_pipeline.prepare --videos=DIR --output_dir=OUT --split=train [--shards=16]

`--videos` is a folder with one sub-folder per class holding anything PyAV decodes, or
`--video_list` a file of `<path> <label>` lines (paths relative to its folder). The class list
(OUT/classes.txt, line i = label i) is fixed once per OUT: by `--classes=FILE` (one name a line)
or by the sorted class folders of the first split prepared; every later split is labelled by it
(a class folder it does not list, or a label past its end, is an error; a split may lack
classes). Frames are resized to `--short_side` on the shorter side and stored as JPEG: every
frame, or at most `--max_fps` a second (long, high-rate videos such as Kinetics' are otherwise
read whole for every clip). Shards are written by parallel worker processes.
OUT/<split>-manifest.json records what they are made from (each video's path, label, size and
modification time, and the settings): a re-run with the same inputs writes only the shards
still missing (a stopped run resumes) or says the split is up to date; with changed inputs it
stops, saying what changed, unless `--overwrite`, which deletes the split's shards and prepares
it again. Unreadable videos are reported by name, listed in OUT/<split>-unreadable.txt, and
left out.
"""
import json
import multiprocessing
import os
import re

from absl import app
from absl import flags
import tensorflow as tf
import tqdm

from input_pipeline import records
from input_pipeline import video_files
from input_pipeline import video_list

FLAGS = flags.FLAGS


class PrepareError(ValueError):
    """Inputs that disagree with what the output folder holds; the message says what to do."""


def class_folders(folder):
    """Sorted names of the sub-folders of `folder`."""
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def videos_by_class_folder(folder, classes=None):
    """[(path, label)] and class names of a folder with one sub-folder per class; labels index
    `classes` (default: the sorted sub-folders), which must name every sub-folder."""
    folders = class_folders(folder)
    classes = folders if classes is None else classes
    labels = {name: label for label, name in enumerate(classes)}
    unknown = [name for name in folders if name not in labels]
    if unknown:
        raise ValueError(f"class folder {unknown[0]!r} of {folder} is not among the {len(classes)} "
                         "classes given.")
    videos = [(os.path.join(folder, name, f), labels[name]) for name in folders
              for f in sorted(os.listdir(os.path.join(folder, name)))]
    return videos, classes


def videos_from_list(list_file):
    """[(path, label)] of a file of '<path> <label>' lines (paths relative to its folder)."""
    videos = []
    with open(list_file) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            path, label = line.rsplit(maxsplit=1)
            if not label.isdigit():
                raise ValueError(f"{list_file}:{number}: expected '<video path> <label>', "
                                 f"got {line!r}.")
            videos.append((os.path.join(os.path.dirname(list_file), path), int(label)))
    return videos


def dataset_classes(output_dir, classes_file=None):
    """The class list fixed for the dataset in `output_dir`: its classes.txt, else the names of
    `classes_file`, else None (the first split prepared fixes it). A `classes_file` that differs
    from an existing classes.txt is an error."""
    explicit = video_list.read_class_names(classes_file) if classes_file else None
    if explicit is not None and len(set(explicit)) != len(explicit):
        raise PrepareError(f"--classes={classes_file} names a class twice; give each name once.")
    path = os.path.join(output_dir, records.CLASSES_FILE)
    if not os.path.exists(path):
        return explicit
    fixed = video_list.read_class_names(path)
    if explicit is not None and explicit != fixed:
        raise PrepareError(f"--classes={classes_file} ({len(explicit)} classes) differs from "
                           f"{path} ({len(fixed)} classes), fixed when the first split was "
                           "prepared: leave out --classes, or prepare every split into a new "
                           "--output_dir.")
    return fixed


def split_videos(output_dir, split, videos_dir=None, list_file=None, classes_file=None):
    """([(path, label)], class names or None) of one split, labelled by the dataset's class list
    (`dataset_classes`; the class folders of `videos_dir` when there is none yet).

    A class folder the list lacks, or a `list_file` label past its end, is a PrepareError naming
    it; a split without videos of some classes is fine.
    """
    for flag, path in (("--videos", videos_dir), ("--video_list", list_file), ("--classes", classes_file)):
        if path and not os.path.exists(path):
            raise PrepareError(f"{flag}={path} does not exist.")
    classes = dataset_classes(output_dir, classes_file)
    fixed_by = "--classes" if classes_file else os.path.join(output_dir, records.CLASSES_FILE)
    remedy = ("a new class changes every label: prepare all splits again into a new --output_dir, "
              "starting with one that has every class or giving --classes=FILE")
    if videos_dir:
        folders = class_folders(videos_dir)
        if not folders:
            raise PrepareError(f"--videos={videos_dir} has no class sub-folder: put the videos "
                               "of each class in a sub-folder named after it.")
        classes = folders if classes is None else classes
        unknown = [name for name in folders if name not in classes]
        if unknown:
            raise PrepareError(f"split {split!r}: class folder {unknown[0]!r} of {videos_dir} is "
                               f"not among the {len(classes)} classes of {fixed_by}; {remedy}.")
        return videos_by_class_folder(videos_dir, classes)
    videos = videos_from_list(list_file)
    for path, label in videos:
        if classes is not None and label >= len(classes):
            raise PrepareError(f"split {split!r}: {list_file} gives {path} label {label}, but "
                               f"{fixed_by} lists {len(classes)} classes (labels 0-"
                               f"{len(classes) - 1}); {remedy}.")
    return videos, classes


def write_shard(task):
    """Writes one shard of (path, label) videos; returns (videos written, unreadable messages)."""
    shard_path, videos, short_side, quality, max_fps = task
    unreadable = []
    written = 0
    with tf.io.TFRecordWriter(shard_path + ".partial") as writer:
        for path, label in videos:
            try:
                jpegs = video_files.decode_video(path, short_side, quality, max_fps)
            except video_files.DECODE_ERRORS as e:
                unreadable.append(f"{path}: {e}")
                continue
            writer.write(records.serialize(path, label, jpegs))
            written += 1
    os.rename(shard_path + ".partial", shard_path)
    return written, unreadable


class _InProcess:
    """A stand-in for a one-worker pool: runs the tasks in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *unused):
        return False

    def imap_unordered(self, function, tasks):
        return map(function, tasks)


def manifest(videos, settings):
    """What a split's shards are made from: the settings and, per video, [absolute path, label,
    size, modification time in ns] (-1, -1 for a missing file), JSON-ready."""
    def stamp(path):
        try:
            stat = os.stat(path)
        except OSError:
            return [-1, -1]
        return [stat.st_size, stat.st_mtime_ns]

    return {"settings": settings,
            "videos": [[os.path.abspath(path), label, *stamp(path)] for path, label in videos]}


def describe_changes(old, new):
    """What differs between two manifests, in a few words: settings, videos added, removed,
    relabelled or changed on disk, each with an example."""
    changes = [f"--{key} {old['settings'].get(key)} -> {value}"
               for key, value in new["settings"].items() if old["settings"].get(key) != value]
    before = {path: rest for path, *rest in old["videos"]}
    after = {path: rest for path, *rest in new["videos"]}
    kinds = {"added": [p for p in after if p not in before],
             "removed": [p for p in before if p not in after],
             "relabelled": [p for p in after if p in before and after[p][0] != before[p][0]],
             "changed on disk": [p for p in after if p in before and after[p][0] == before[p][0]
                                 and after[p] != before[p]]}
    changes += [f"{len(paths)} video{'s' if len(paths) > 1 else ''} {kind} (e.g. {paths[0]})"
                for kind, paths in kinds.items() if paths]
    return ", ".join(changes) or "the order of the videos"


def split_files(output_dir, split):
    """Names of the shard files, finished or partial, of `split` in `output_dir`."""
    pattern = re.compile(re.escape(split) + r"-\d{5,}-of-\d{5,}\.tfrecord(\.partial)?")
    return sorted(name for name in os.listdir(output_dir) if pattern.fullmatch(name))


def _write_text(path, text):
    with open(path + ".partial", "w") as f:
        f.write(text)
    os.replace(path + ".partial", path)


def _keep_classes(output_dir, classes):
    """Writes `classes` to OUT/classes.txt if there is none; an error if it lists others."""
    path = os.path.join(output_dir, records.CLASSES_FILE)
    if not os.path.exists(path):
        _write_text(path, "".join(name + "\n" for name in classes))
    elif video_list.read_class_names(path) != list(classes):
        raise PrepareError(f"{path} lists other classes than the ones these videos are labelled "
                           "with; prepare into a new --output_dir.")


def start_split(videos, output_dir, split, settings, overwrite):
    """Checks OUT/<split>-manifest.json against `videos` and `settings`; returns True when the
    existing shards were made from them (only missing ones are to be written). Else, with
    `overwrite` or when the split has no shard yet, deletes the split's files and writes the new
    manifest; otherwise raises a PrepareError saying what changed."""
    manifest_path = os.path.join(output_dir, f"{split}-manifest.json")
    wanted = manifest(videos, settings)
    stored = None
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            stored = json.load(f)
    if stored == wanted:
        return True
    if not overwrite and stored is not None:
        raise PrepareError(f"split {split!r} in {output_dir} was prepared from other inputs: "
                           f"{describe_changes(stored, wanted)}. Pass --overwrite to delete its "
                           "shards and prepare it again.")
    if not overwrite and split_files(output_dir, split):
        raise PrepareError(f"{output_dir} holds shards of split {split!r} but no {split}-"
                           "manifest.json saying what they were made from (an older prepare "
                           "wrote them?): pass --overwrite to prepare the split again.")
    # The manifest goes first: a run stopped in between finds shards without one and refuses them.
    for name in [f"{split}-manifest.json", f"{split}-unreadable.txt", *split_files(output_dir, split)]:
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    _write_text(manifest_path, json.dumps(wanted))
    return False


def prepare(videos, output_dir, split, num_shards, workers, short_side=256, quality=90,
            max_fps=0, overwrite=False, classes=None):
    """Writes the shards of `videos` [(path, label)]; returns the unreadable-video messages, or
    None when the split was already prepared, whole, from the same videos and settings.

    `max_fps` > 0 keeps at most that many frames a second of each video (0: every frame). A
    split prepared before from other inputs is a PrepareError unless `overwrite` (see
    `start_split`). `classes`, the names the labels index, go to OUT/classes.txt if it has none.
    """
    os.makedirs(output_dir, exist_ok=True)
    settings = {"shards": num_shards, "short_side": short_side, "jpeg_quality": quality,
                "max_fps": max_fps}
    if classes is not None:
        _keep_classes(output_dir, classes)
    resumed = start_split(videos, output_dir, split, settings, overwrite)
    tasks = []
    for shard in range(num_shards):
        path = os.path.join(output_dir, records.shard_name(split, shard, num_shards))
        if not os.path.exists(path):
            tasks.append((path, videos[shard::num_shards], short_side, quality, max_fps))
    if resumed and not tasks:
        return None
    unreadable = []
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else _InProcess()
    with pool:
        for _, failed in tqdm.tqdm(pool.imap_unordered(write_shard, tasks), total=len(tasks),
                                   desc=f"{split} shards", disable=None):
            unreadable += failed
    if unreadable:
        with open(os.path.join(output_dir, f"{split}-unreadable.txt"), "a") as f:
            f.writelines(message + "\n" for message in unreadable)
    return unreadable


def main(argv):
    del argv
    if bool(FLAGS.videos) == bool(FLAGS.video_list):
        raise app.UsageError("Give exactly one of --videos and --video_list.")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    try:
        videos, classes = split_videos(FLAGS.output_dir, FLAGS.split, FLAGS.videos,
                                       FLAGS.video_list, FLAGS.classes)
        unreadable = prepare(videos, FLAGS.output_dir, FLAGS.split, FLAGS.shards, FLAGS.workers,
                             FLAGS.short_side, FLAGS.jpeg_quality, FLAGS.max_fps,
                             FLAGS.overwrite, classes)
    except PrepareError as error:
        raise SystemExit(f"prepare error: {error}") from None
    if unreadable is None:
        print(f"Split {FLAGS.split!r} in {FLAGS.output_dir} is up to date (made from these "
              f"{len(videos)} videos with these settings): nothing to do.")
        return
    for message in unreadable:
        print("unreadable:", message)
    print(f"{len(videos) - len(unreadable)} videos written, {len(unreadable)} unreadable.")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_string("videos", None, "Folder with one sub-folder of videos per class.")
    flags.DEFINE_string("video_list", None, "File of '<video path> <label>' lines.")
    flags.DEFINE_string("output_dir", None, "Where the shards go.")
    flags.DEFINE_string("split", "train", "Split name: the shards' file-name prefix.")
    flags.DEFINE_string("classes", None, "File of class names, one a line (line i = label i), "
                        "to fix the class list with; default: the class folders of the first "
                        "split prepared into --output_dir.")
    flags.DEFINE_bool("overwrite", False, "Delete the split's shards and prepare it again when "
                      "its videos or settings changed since it was prepared.")
    flags.DEFINE_integer("shards", 16, "Number of shards.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Parallel worker processes.")
    flags.DEFINE_integer("short_side", 256, "Shorter side of the stored frames.")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames.")
    flags.DEFINE_float("max_fps", 0, "Keep at most this many frames a second (0: every frame).")
    flags.mark_flags_as_required(["output_dir"])
    from blvnet_jax import cli  # the programs' shared flags parser (absl and ml_collections only)
    app.run(main, flags_parser=cli.parse_flags)
