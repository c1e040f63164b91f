"""Reports every problem of a dataset at once: bad list lines, missing or corrupt frames.

  python -m input_pipeline.check_data --config=configs/demo.py [--split=train,val]

Every frame of every listed video is opened and decoded. Exit status 1 when anything is wrong.
"""
import concurrent.futures
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import tqdm

from input_pipeline import sources

FLAGS = flags.FLAGS

def check_split(data_config, split, workers):
    """All problems of one split: 'file:line ...: what is wrong' strings."""
    config = sources.resolve_synthetic(data_config)
    config.strict = False
    folders = sources.frame_folders(config, split)
    problems = list(folders.problems)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = pool.map(folders.video_problems, range(len(folders.entries)))
        for entry, video_problems in zip(folders.entries, tqdm.tqdm(results, total=len(
            folders.entries), desc=f"checking {split}", disable=None)):
            problems += [f"{entry.where} video {entry.video_dir!r}: {p}" for p in video_problems]
    return problems


def main(argv):
    del argv
    problems = []
    for split in FLAGS.split:
        problems += check_split(FLAGS.config.data, split, FLAGS.workers)
    print("\n".join(problems) or "No problem found.")
    print(f"{len(problems)} problems.")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    config_flags.DEFINE_config_file("config", None, "Config file with a `data` field.")
    flags.DEFINE_list("split", ["train", "val"], "Splits to check.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Parallel checking threads.")
    flags.mark_flags_as_required(["config"])
    app.run(main)
