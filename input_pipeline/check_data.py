"""Reports every problem of a dataset at once: bad list lines, missing or corrupt frames.

  python -m input_pipeline.check_data --config=configs/demo.py [--split=train,val]

Every frame of every video is opened and decoded: for 'frames' (and 'synthetic') every listed
video; for 'tfds' every stored video, and the videos its preparation left out (unreadable) are one
problem. Prints each problem, then how many there are of each kind (the kinds training counts as
`faults_<kind>`) in how many videos; exit status 1 when anything is wrong.
"""
import collections
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from input_pipeline import faults
from input_pipeline import sources

FLAGS = flags.FLAGS


def check_split(data_config, split, workers):
    """(number of videos, all problems) of one split: (kind, message) pairs, the message 'file:line
    ...: what is wrong' (frame folders) or "tfds name split #number video 'id': what is wrong" (tfds)."""
    config = data_config.copy_and_resolve_references()
    config.strict = False
    return sources.create_source(config).check_split(split, workers)


def check_splits(data_config, splits, workers):
    """(all problems, {split: number of videos}) of `splits` (`check_split`), in their order."""
    problems, checked = [], {}
    for split in splits:
        checked[split], split_problems = check_split(data_config, split, workers)
        problems += split_problems
    return problems, checked


def report(problems, checked):
    """Every problem's message, then a line counting them by kind and the videos `checked` ({split:
    number}): '3 problems in 52 videos (train 40, val 12): 2 corrupt frame, 1 empty video.' (kinds
    in the order training logs them)."""
    counts = collections.Counter(kind for kind, _ in problems)
    order = list(faults.KINDS) + sorted(set(counts) - set(faults.KINDS))
    by_kind = ", ".join(f"{counts[kind]} {kind}" for kind in order if counts[kind])
    videos = f"{sum(checked.values())} videos ({', '.join(f'{split} {count}' for split, count in checked.items())})"
    return "\n".join([message for _, message in problems] + [
        f"{len(problems)} problem{'s' * (len(problems) != 1)} in {videos}: {by_kind}." if problems else
        f"No problem found in {videos}."])


def main(argv):
    del argv
    try:
        problems, checked = check_splits(FLAGS.config.data, FLAGS.split, FLAGS.workers)
    except (FileNotFoundError, ValueError) as error:  # A split not found or unreadable as configured (DataError).
        raise SystemExit(f"check_data error: {error}") from None
    print(report(problems, checked))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    config_flags.DEFINE_config_file("config", None, "Config file with a `data` field.")
    flags.DEFINE_list("split", ["train", "val"], "Splits to check.")
    flags.DEFINE_integer("workers", os.cpu_count(), "Parallel checking threads.")
    flags.mark_flags_as_required(["config"])
    from blvnet_jax import cli  # the programs' shared flags parser (absl and ml_collections only)
    app.run(main, flags_parser=cli.parse_flags)
