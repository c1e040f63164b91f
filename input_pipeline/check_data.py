"""Reports every problem of a dataset at once: bad list lines, missing or corrupt frames.

  python -m input_pipeline.check_data --config=configs/demo.py [--split=train,val]

Every frame of every video is opened and decoded: for 'frames' (and 'synthetic') every listed
video; for 'records' and 'tfds' every stored video, which must also have a frame and a label in
[0, num_classes). Prints each problem, then how many there are of each kind (the kinds training
counts as `faults_<kind>`); exit status 1 when anything is wrong.
"""
import collections
import concurrent.futures
import io
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

import tensorflow as tf

from input_pipeline import encoded
from input_pipeline import faults
from input_pipeline import sources

FLAGS = flags.FLAGS


def stored_video_problems(video, num_classes):
    """What is wrong with a stored video {'frames': JPEG bytes, 'label': int}: (kind, message)
    pairs."""
    problems = [] if len(video["frames"]) else [(faults.EMPTY_VIDEO, "no frame")]
    if video["label"] < 0 or (num_classes and video["label"] >= num_classes):
        problems.append((faults.LABEL_OUT_OF_RANGE,
                         f"label {video['label']} outside [0, {num_classes or 'inf'})"))
    for number, jpeg in enumerate(video["frames"]):
        problem = sources.image_problem(io.BytesIO(jpeg))
        if problem:
            problems.append((faults.CORRUPT_FRAME, f"corrupt frame {number} ({problem})"))
    return problems


def check_stored_split(config, split, workers):
    """All problems of a 'records' or 'tfds' split: (kind, "source split #number video 'id':
    what is wrong") pairs, videos named as training names them (`encoded.StoredVideos`).

    `workers` videos are checked at once, in tf.data (PIL decodes without the GIL).
    """
    source = encoded.source_module(config)
    num_classes = sources.num_classes(config)

    def video_problems(index, item):
        video = source.parse(item)
        text = tf.numpy_function(lambda frames, label: "\n".join(
            f"{kind}\t{message}" for kind, message in stored_video_problems(
                {"frames": frames, "label": label}, num_classes)).encode(),
                                 [video["frames"], video["label"]], tf.string, stateful=False)
        return index, video["video_id"], text

    stream = source.split_stream(config, split, process_index=0, process_count=1)
    videos = encoded.StoredVideos(config.source, split)
    results = stream.map(video_problems, num_parallel_calls=workers, deterministic=True)
    problems = []
    try:
        for index, video_id, text in tqdm.tqdm(results.as_numpy_iterator(),
                                               desc=f"checking {split}", disable=None):
            name = videos.name((int(index), video_id.decode()))
            for line in text.decode().splitlines():
                kind, message = line.split("\t", 1)
                problems.append((kind, f"{name}: {message}"))
    except tf.errors.OpError as e:
        problems.append((faults.UNREADABLE_FILE, f"{config.source} {split}: stopped reading: {e.message}"))
    return problems


def check_split(data_config, split, workers):
    """All problems of one split: (kind, message) pairs, the message 'file:line ...: what is
    wrong' (frame folders) or "source split #number video 'id': what is wrong" (records, tfds)."""
    config = sources.resolve_synthetic(data_config)
    config.strict = False
    if config.source in ("records", "tfds"):
        return check_stored_split(config, split, workers)
    folders = sources.frame_folders(config, split)
    problems = [(problem.kind, problem.message) for problem in folders.problems]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = pool.map(folders.video_faults, range(len(folders.entries)))
        for video_faults in tqdm.tqdm(results, total=len(folders.entries), desc=f"checking {split}",
                                      disable=None):
            problems += [(fault.kind, fault.message) for fault in video_faults]
    return problems


def report(problems):
    """Every problem's message, then a line counting them by kind: 'N problems: 2 corrupt frame,
    1 empty video.' (kinds in the order training logs them)."""
    counts = collections.Counter(kind for kind, _ in problems)
    order = list(faults.KINDS) + sorted(set(counts) - set(faults.KINDS))
    by_kind = ", ".join(f"{counts[kind]} {kind}" for kind in order if counts[kind])
    return "\n".join([message for _, message in problems] +
                      [f"{len(problems)} problems: {by_kind}." if problems else "No problem found."])


def main(argv):
    del argv
    problems = []
    for split in FLAGS.split:
        problems += check_split(FLAGS.config.data, split, FLAGS.workers)
    print(report(problems))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    config_flags.DEFINE_config_file("config", None, "Config file with a `data` field.")
    flags.DEFINE_list("split", ["train", "val"], "Splits to check.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Parallel checking threads.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
