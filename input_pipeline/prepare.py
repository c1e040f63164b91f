"""Writes the record shards of the `records` source from video files, decoded with PyAV.

  python -m input_pipeline.prepare --videos=DIR --output_dir=OUT --split=train [--shards=16]

`--videos` is a folder with one sub-folder per class (sorted names = labels 0, 1, ...; written to
OUT/classes.txt) holding anything PyAV decodes, or `--video_list` a file of `<path> <label>`
lines (paths relative to its folder). Frames are resized to `--short_side` on the shorter side
and stored as JPEG: every frame, or at most `--max_fps` a second (long, high-rate videos such
as Kinetics' are otherwise read whole for every clip). Shards are written by parallel worker
processes; a shard already on disk is not redone (resumable). Unreadable videos are reported by
name, listed in OUT/<split>-unreadable.txt, and left out.
"""
import multiprocessing
import os

from absl import app
from absl import flags
import tensorflow as tf
import tqdm

from input_pipeline import records
from input_pipeline import video_files

FLAGS = flags.FLAGS


def videos_by_class_folder(folder):
    """[(path, label)] and class names of a folder with one sub-folder per class."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    videos = [(os.path.join(folder, name, f), label) for label, name in enumerate(classes)
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


def prepare(videos, output_dir, split, num_shards, workers, short_side=256, quality=90,
            max_fps=0):
    """Writes the shards of `videos` [(path, label)]; returns the unreadable-video messages.

    `max_fps` > 0 keeps at most that many frames a second of each video (0: every frame).
    """
    os.makedirs(output_dir, exist_ok=True)
    tasks = []
    for shard in range(num_shards):
        path = os.path.join(output_dir, records.shard_name(split, shard, num_shards))
        if not os.path.exists(path):
            tasks.append((path, videos[shard::num_shards], short_side, quality, max_fps))
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
    if FLAGS.videos:
        videos, classes = videos_by_class_folder(FLAGS.videos)
        with open(os.path.join(FLAGS.output_dir, "classes.txt"), "w") as f:
            f.writelines(name + "\n" for name in classes)
    else:
        videos = videos_from_list(FLAGS.video_list)
    unreadable = prepare(videos, FLAGS.output_dir, FLAGS.split, FLAGS.shards, FLAGS.workers,
                         FLAGS.short_side, FLAGS.jpeg_quality, FLAGS.max_fps)
    for message in unreadable:
        print("unreadable:", message)
    print(f"{len(videos) - len(unreadable)} videos written, {len(unreadable)} unreadable.")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_string("videos", None, "Folder with one sub-folder of videos per class.")
    flags.DEFINE_string("video_list", None, "File of '<video path> <label>' lines.")
    flags.DEFINE_string("output_dir", None, "Where the shards go.")
    flags.DEFINE_string("split", "train", "Split name: the shards' file-name prefix.")
    flags.DEFINE_integer("shards", 16, "Number of shards.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Parallel worker processes.")
    flags.DEFINE_integer("short_side", 256, "Shorter side of the stored frames.")
    flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames.")
    flags.DEFINE_float("max_fps", 0, "Keep at most this many frames a second (0: every frame).")
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)
