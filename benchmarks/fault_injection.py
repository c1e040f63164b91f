"""Fault injection: training and evaluation on frame folders with corrupt and missing frames,
truncated videos, missing folders and bad list lines, at the rates of the issue.

    python -m benchmarks.fault_injection [--train_videos=320] [--val_videos=40] [--num_frames=8] \\
        [--model=blvnet_tam] [--output_dir=DIR]

Writes the synthetic dataset as frame folders (videos of n + 1 .. 2n - 1 frames for n-frame clips),
then breaks each split: 5% of its frames become corrupt JPEGs (half garbage bytes, half truncated
files) and 2% are deleted (missing frames), rounded up; `--few` videos lose their frames past the
middle of a clip (truncated) and `--few` lose their whole folder (missing folder: an empty
video); the list file gets `--few + 1` malformed lines (wrong field count, non-integer, end
before start) and `--few` lines with a label out of range. The validation split gets the same,
`--few` halved. Broken frames are drawn among the frames that every training clip and the
evaluation read (training reads frames 0 .. n - 1 of these videos), so every fault is met: per
frame read, the fault rate is about three times the stated one (the figures say how many clips
held a substitute).

Then: a few videos written as mp4 files, plus an empty and a truncated one, are prepared into the
stored format as a video_folder dataset (`tfds_builders.build`: it completes, leaves out and names
the two unreadable files, and the 'tfds' source reads the others back); `main.py` trains on
the faulty data for one epoch (every training video met) and must complete: unreadable frames
are replaced by their nearest readable neighbour, videos without any are skipped. The per-kind
counts are read back from `metrics.jsonl` and the log, with an example of each kind (list file,
line, video, frame); the trained checkpoint is evaluated (`--mode=eval`) on the faulty validation
list (its videos with no folder masked out, the others evaluated with substituted frames) and
on a list of its intact videos only (equal per-video predictions for those expected);
`--config.data.strict=True` stops at once naming the first bad list line, and, on the lists
without bad lines, exits naming the first unreadable frame. Prints every figure and
a final JSON line. A few minutes on 2 cores, most of it compiling and training (`--model=tsn`
compiles faster).
"""
import collections
import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from input_pipeline.sources import create_source
from configs import data_defaults
from input_pipeline import faults, sampling, sources, synthetic, tfds_builders, video_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES = 4  # Frames of a clip by default; videos have n + 1 .. 2n - 1 frames.
NUM_CLASSES = 2
BATCH_SIZE = 8
GARBAGE, TRUNCATED_JPEG = "garbage bytes", "truncated JPEG"
FRAME_KINDS = (GARBAGE, TRUNCATED_JPEG, faults.MISSING_FRAME)  # Faults of single frames.
VIDEO_KINDS = (faults.TRUNCATED_VIDEO, faults.EMPTY_VIDEO)  # Faults of whole videos.

FLAGS = flags.FLAGS


def fault_plan(num_frames_total, few, corrupt_fraction, missing_fraction):
    """How many faults of each kind one split gets: {kind: count}; frame faults are fractions of
    all the split's frames, rounded up."""
    corrupt = math.ceil(corrupt_fraction * num_frames_total)
    return {GARBAGE: corrupt // 2, TRUNCATED_JPEG: corrupt - corrupt // 2,
            faults.MISSING_FRAME: math.ceil(missing_fraction * num_frames_total),
            faults.TRUNCATED_VIDEO: few, faults.EMPTY_VIDEO: few,
            faults.MALFORMED: few + 1, faults.LABEL_OUT_OF_RANGE: few}


def expected_counts(plan):
    """The per-kind counts of distinct faults the pipeline should report for a `fault_plan`."""
    counts = {kind: count for kind, count in plan.items() if kind not in (GARBAGE, TRUNCATED_JPEG)}
    counts[faults.CORRUPT_FRAME] = plan[GARBAGE] + plan[TRUNCATED_JPEG]
    return {kind: count for kind, count in counts.items() if count}


def frame_path(entry, root, index):
    """Path of the frame of `entry` at 0-based `index`."""
    return entry.frame_path(root, "{:05d}.jpg", index)


def always_read_indices(entry, num_frames):
    """The frames that every training draw and the evaluation read: those of 0 .. n - 1 (training
    reads all of them when the video has fewer than 2n frames) among the evaluation's indices."""
    return sorted(set(range(num_frames)) & set(sampling.uniform_eval_indices(entry.num_frames, num_frames, 1)[0]))


def break_frame(path, kind, rng):
    """Makes the frame at `path` a corrupt JPEG (garbage bytes, or cut in half) or deletes it."""
    if kind == GARBAGE:
        with open(path, "wb") as f:
            f.write(rng.bytes(os.path.getsize(path)))
    elif kind == TRUNCATED_JPEG:
        with open(path, "rb+") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        os.remove(path)


def break_video(entry, root, kind, num_frames):
    """Truncated: the frames from the middle of a clip on deleted; empty: the folder deleted."""
    if kind == faults.EMPTY_VIDEO:
        shutil.rmtree(os.path.join(root, entry.video_dir))
        return
    for index in range(num_frames // 2, entry.num_frames):
        os.remove(frame_path(entry, root, index))


def bad_lines(lines, plan, rng):
    """Bad copies of random `lines` of a list file: malformed (3 fields, a non-integer, end before
    start, in turn) and with a label out of range (NUM_CLASSES, -1, NUM_CLASSES + 2, ...)."""
    bad = []
    for number in range(plan[faults.MALFORMED]):
        video_dir, start, end, label = lines[rng.integers(len(lines))].split()
        bad.append((f"{video_dir} {start} {end}", f"{video_dir} one {end} {label}",
                    f"{video_dir} {end} {start} {label}")[number % 3])
    for number in range(plan[faults.LABEL_OUT_OF_RANGE]):
        video_dir, start, end, _ = lines[rng.integers(len(lines))].split()
        bad.append(f"{video_dir} {start} {end} {(NUM_CLASSES + number, -1)[number % 2]}")
    return bad


def inject_split(root, split, few, corrupt_fraction, missing_fraction, num_frames, rng):
    """Breaks videos, frames and the list file of one split; returns (plan, {kind: broken video
    dirs}, frames in the split).

    `<split>.txt` becomes the faulty list, `<split>_without_bad_lines.txt` keeps the original
    lines, `<split>_clean.txt` the lines of the videos left intact.
    """
    list_file = os.path.join(root, f"{split}.txt")
    with open(list_file) as f:
        lines = [line.strip() for line in f if line.strip()]
    entries, _ = sources.read_video_list(list_file)
    total = sum(entry.num_frames for entry in entries)
    plan = fault_plan(total, few, corrupt_fraction, missing_fraction)
    video_kinds = [kind for kind in VIDEO_KINDS for _ in range(plan[kind])]
    chosen = rng.choice(len(entries), len(video_kinds), replace=False)
    broken = collections.defaultdict(list)
    for video, kind in zip(chosen, video_kinds):
        break_video(entries[video], root, kind, num_frames)
        broken[kind].append(entries[video].video_dir)
    pool = [(video, index) for video in sorted(set(range(len(entries))) - set(chosen))
            for index in always_read_indices(entries[video], num_frames)]
    frame_kinds = [kind for kind in FRAME_KINDS for _ in range(plan[kind])]
    if len(frame_kinds) > len(pool):
        raise ValueError(f"{len(frame_kinds)} broken frames asked of {split}, only {len(pool)} frames are read "
                         "by every clip: use more videos.")
    touched = set(chosen)
    for position, kind in zip(rng.choice(len(pool), len(frame_kinds), replace=False), frame_kinds):
        video, index = pool[position]
        break_frame(frame_path(entries[video], root, index), kind, rng)
        broken[kind].append(entries[video].video_dir)
        touched.add(video)
    faulty = list(lines)
    for line in bad_lines(lines, plan, rng):
        faulty.insert(rng.integers(len(faulty) + 1), line)
    clean = [line for video, line in enumerate(lines) if video not in touched]
    for name, content in ((f"{split}.txt", faulty), (f"{split}_without_bad_lines.txt", lines),
                          (f"{split}_clean.txt", clean)):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(line + "\n" for line in content)
    return plan, dict(broken), total


def synthetic_config(train_videos, val_videos, num_frames, seed):
    """The synthetic dataset's settings: NUM_CLASSES classes, videos of n + 1 .. 2n - 1 frames of
    40x48 for n-frame clips."""
    config = data_defaults.get_synthetic_config()
    config.update(dict(num_classes=NUM_CLASSES, train_videos_per_class=train_videos // NUM_CLASSES,
                       val_videos_per_class=val_videos // NUM_CLASSES, frame_height=40, frame_width=48,
                       min_video_frames=num_frames + 1, max_video_frames=2 * num_frames - 1, seed=seed))
    return config


def write_faulty_dataset(out_dir, train_videos, val_videos, *, num_frames, few, corrupt_fraction,
                         missing_fraction, seed):
    """Writes the synthetic dataset into `out_dir`/data and breaks it; returns its paths, clip
    length, the plan and frame count of each split and the broken video dirs."""
    paths = synthetic.write_synthetic_dataset(os.path.join(out_dir, "data"),
                                              synthetic_config(train_videos, val_videos, num_frames, seed))
    rng = np.random.default_rng(seed)
    dataset = {"paths": paths, "num_frames": num_frames, "plans": {}, "broken": {}, "frames": {}}
    for split, split_few in (("train", few), ("val", max(1, few // 2))):
        plan, broken, total = inject_split(paths["root"], split, split_few, corrupt_fraction, missing_fraction,
                                           num_frames, rng)
        dataset["plans"][split], dataset["broken"][split], dataset["frames"][split] = plan, broken, total
    return dataset


class _LeftOutVideos(logging.Handler):
    """Collects the builder's "Left out video <id> (<path>): <why>" warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Left out video "):
            self.messages.append(message)


def prepare_video_files(out_dir, dataset, per_class=2):
    """Writes `per_class` clean training videos of each class as mp4 files, a video_folder manual
    download (`videos/train/<class>/<video>.mp4`), plus an empty and a truncated mp4, and prepares
    it with `tfds_builders.build('video_folder', ...)`; returns its figures: the videos, those
    written (read back through the 'tfds' source, with their frame counts) and the left-out ones
    the builder logged."""
    root = dataset["paths"]["root"]
    by_label = collections.defaultdict(list)
    with open(os.path.join(root, "train_clean.txt")) as f:
        for line in f:
            by_label[line.split()[3]].append(line.split())
    clean = [line for label in sorted(by_label) for line in by_label[label][:per_class]]
    folder = os.path.join(out_dir, "videos")
    frame_counts = {}
    for video_dir, _, end, label in clean:
        frames = np.stack([np.asarray(Image.open(os.path.join(root, video_dir, f"{n:05d}.jpg")))
                           for n in range(1, int(end) + 1)])
        video_id = f"class{label}/{os.path.basename(video_dir)}.mp4"
        os.makedirs(os.path.join(folder, "train", f"class{label}"), exist_ok=True)
        video_files.write_video(os.path.join(folder, "train", video_id), frames)
        frame_counts[video_id] = len(frames)
    first = f"class{clean[0][3]}/{os.path.basename(clean[0][0])}.mp4"
    empty, truncated = "class0/empty.mp4", "class0/truncated.mp4"
    open(os.path.join(folder, "train", empty), "wb").close()
    shutil.copy(os.path.join(folder, "train", first), os.path.join(folder, "train", truncated))
    with open(os.path.join(folder, "train", truncated), "rb+") as f:
        f.truncate(os.path.getsize(os.path.join(folder, "train", truncated)) // 2)
    data_dir = os.path.join(out_dir, "tfds")
    handler, logger = _LeftOutVideos(), logging.getLogger()  # The builder logs to the root logger.
    level = logger.level
    logger.addHandler(handler)
    if level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        _, wrote = tfds_builders.build("video_folder", folder, data_dir, workers=1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    config = data_defaults.get_data_config()
    config.update(source="tfds", tfds_name="video_folder", tfds_data_dir=data_dir)
    stored = create_source(config).videos("train")
    return {"videos": len(frame_counts) + 2, "written": len(stored.ids), "wrote": wrote,
            "written_frames": dict(zip(stored.ids, stored.num_frames.tolist())), "expected_frames": frame_counts,
            "unreadable": handler.messages, "expected_unreadable": [empty, truncated], "seconds": seconds}


def main_command(workdir, dataset, model, *extra):
    """`main.py` with the tiny setting on the faulty frame folders of `dataset`, one epoch."""
    paths = dataset["paths"]
    steps = math.ceil(len(sources.read_video_list(paths["train_list"], " ", NUM_CLASSES)[0]) / BATCH_SIZE)
    return [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
            f"--config.model.name={model}", "--config.model.width=8",
            f"--config.model.num_frames={dataset['num_frames']}",
            f"--config.model.num_classes={NUM_CLASSES}", "--config.data.crop_size=32",
            "--config.data.source=frames", f"--config.data.root={paths['root']}",
            f"--config.data.train_list={paths['train_list']}", f"--config.data.val_list={paths['val_list']}",
            f"--config.data.class_names_file={paths['class_names_file']}", f"--config.batch_size={BATCH_SIZE}",
            f"--config.eval_batch_size={BATCH_SIZE}", f"--config.num_train_steps={steps}",
            f"--config.checkpoint_every_steps={steps}", f"--config.eval_every_steps={steps}",
            "--config.log_every_steps=4", "--config.warmup_epochs=0", *extra]


def run_main(command, cache_dir, timeout=1800):
    """Runs a `main.py` command from the repository root (compiled programs cached in `cache_dir`);
    returns (CompletedProcess, seconds)."""
    env = dict(os.environ, PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.perf_counter() - start


def checked(result, what):
    """`result` of `run_main`, or an error with the end of its log if it failed."""
    if result.returncode:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stderr[-5000:]}")
    return result


def metrics_fault_counts(workdir):
    """The last training log line of `metrics.jsonl`: ({kind: count} of its `train/faults_*`
    scalars, {scalar: value} of its other input scalars)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f if '"train/unreadable_videos"' in line]
    counts = {kind: int(logged[-1].get("train/" + faults.fault_metric(kind), 0)) for kind in faults.KINDS}
    scalars = {name: int(logged[-1].get("train/" + name, 0)) for name in ("unreadable_videos", "substituted_clips")}
    return {kind: count for kind, count in counts.items() if count}, scalars


def logged_faults(log, split):
    """({kind: count}, {kind: [examples]}) of the last 'Faults in the <split> input' report in a log."""
    reports = log.split(f"Faults in the {split} input so far")
    if len(reports) == 1:
        return {}, {}
    counts, examples = {}, {}
    for line in reports[-1].splitlines()[1:]:
        match = re.fullmatch(r"(\d+) x ([a-z ]+), e\.g\. (.*)", line)
        if not match:
            break
        counts[match[2]] = int(match[1])
        examples[match[2]] = match[3].split(" | ")
    return counts, examples


def eval_outputs(workdir, val_list):
    """`results.json` and {video dir: predictions.csv row} of the last evaluation in `workdir` (the
    last line of `eval/results.jsonl` names its folder) on `val_list`."""
    with open(os.path.join(workdir, "eval", "results.jsonl")) as f:
        folder = os.path.join(workdir, json.loads(f.read().splitlines()[-1])["path"])
    with open(os.path.join(folder, "results.json")) as f:
        results = json.load(f)
    entries, _ = sources.read_video_list(val_list, " ", NUM_CLASSES)
    with open(os.path.join(folder, "predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    predictions = {entries[int(row.pop("video_index"))].video_dir: row for row in rows}
    return results, predictions


def first_error_line(log):
    """The error line of `log` (main.py's 'Data error (...): ...', or a traceback's exception) and the
    line after it."""
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\w+Error: |Data error \(", line):
            return "\n".join(lines[number:number + 2])
    return log[-500:]


def without_substitutions(counts):
    return {kind: count for kind, count in counts.items() if kind != faults.SUBSTITUTED_FRAME}


def run(out_dir, *, train_videos, val_videos, model, num_frames=NUM_FRAMES, few=2, corrupt_fraction=0.05,
        missing_fraction=0.02, seed=0, eval_faulty_list=True):
    """Every step of the experiment in `out_dir`; returns the figures.

    `eval_faulty_list=False` takes the training run's final evaluation (the same checkpoint on
    the faulty validation list) instead of running it again with `--mode=eval`.
    """
    seconds = {}
    start = time.perf_counter()
    dataset = write_faulty_dataset(out_dir, train_videos, val_videos, num_frames=num_frames, few=few,
                                   corrupt_fraction=corrupt_fraction, missing_fraction=missing_fraction, seed=seed)
    seconds["write_faulty_data"] = time.perf_counter() - start
    prepared = prepare_video_files(out_dir, dataset)
    seconds["prepare_tfds_mp4"] = prepared.pop("seconds")

    cache_dir, workdir = os.path.join(out_dir, "jax_cache"), os.path.join(out_dir, "run")
    command = main_command(workdir, dataset, model)
    trained, seconds["train"] = run_main(command, cache_dir)
    checked(trained, "training on the faulty data")
    train_counts, train_scalars = metrics_fault_counts(workdir)
    logged_train_counts, train_examples = logged_faults(trained.stderr, "train")
    paths = dataset["paths"]
    if eval_faulty_list:
        evaluated, seconds["eval_faulty_list"] = run_main(main_command(workdir, dataset, model, "--mode=eval"),
                                                          cache_dir)
        val_log = checked(evaluated, "evaluation on the faulty validation list").stderr
    else:
        val_log = trained.stderr
    val_counts, val_examples = logged_faults(val_log, "val")
    faulty_results, faulty_predictions = eval_outputs(workdir, paths["val_list"])
    clean_list = os.path.join(paths["root"], "val_clean.txt")
    evaluated, seconds["eval_clean_list"] = run_main(
        main_command(workdir, dataset, model, "--mode=eval", f"--config.data.val_list={clean_list}"), cache_dir)
    checked(evaluated, "evaluation on the clean validation list")
    clean_results, clean_predictions = eval_outputs(workdir, clean_list)

    strict, seconds["strict_run"] = run_main(
        main_command(os.path.join(out_dir, "strict"), dataset, model, "--config.data.strict=True"), cache_dir)
    # Past the lists, the first unreadable frame stops training: the program must exit, not hang.
    lists = [f"--config.data.{split}_list={paths['root']}/{split}_without_bad_lines.txt" for split in ("train", "val")]
    strict_pipeline, seconds["strict_pipeline_run"] = run_main(
        main_command(os.path.join(out_dir, "strict_pipeline"), dataset, model, "--config.data.strict=True", *lists),
        cache_dir, timeout=300)
    compared = ("top1", "top5", "loss", "num_videos")
    plans = dataset["plans"]
    broken_val = dataset["broken"]["val"]
    frame_broken_val = {video_dir for kind in FRAME_KINDS + (faults.TRUNCATED_VIDEO,)
                        for video_dir in broken_val.get(kind, [])}
    return {
        "rates": {split: {"frames": dataset["frames"][split],
                          "corrupt_jpegs": plans[split][GARBAGE] + plans[split][TRUNCATED_JPEG],
                          "missing_frames": plans[split][faults.MISSING_FRAME],
                          "corrupt_fraction": (plans[split][GARBAGE] + plans[split][TRUNCATED_JPEG]) /
                          dataset["frames"][split],
                          "missing_fraction": plans[split][faults.MISSING_FRAME] / dataset["frames"][split]}
                  for split in plans},
        "injected": {split: expected_counts(plan) for split, plan in plans.items()},
        "corrupt_jpegs": {split: {kind: plan[kind] for kind in (GARBAGE, TRUNCATED_JPEG)}
                          for split, plan in plans.items()},
        "counted": {"train": without_substitutions(train_counts), "val": without_substitutions(val_counts)},
        "counted_in_train_log": without_substitutions(logged_train_counts),
        "substituted_frames": {"train": train_counts.get(faults.SUBSTITUTED_FRAME, 0),
                               "val": val_counts.get(faults.SUBSTITUTED_FRAME, 0)},
        "train_examples": int(next(arg for arg in command if arg.startswith("--config.num_train_steps=")).split(
            "=")[1]) * BATCH_SIZE,
        "train_clips_with_substitutes": train_scalars["substituted_clips"],
        "train_skipped_videos": train_scalars["unreadable_videos"],
        "examples": {"train": train_examples, "val": val_examples},
        "broken_videos": dataset["broken"],
        "prepare": prepared,
        "train_completed": trained.returncode == 0 and os.path.exists(os.path.join(workdir, "checkpoints")),
        "eval_faulty_list": {key: faulty_results[key] for key in compared},
        "eval_clean_list": {key: clean_results[key] for key in compared},
        "eval_substituted_videos": len(frame_broken_val & set(faulty_predictions)),
        "eval_frame_broken_videos": len(frame_broken_val),
        "intact_predictions_equal": {video: faulty_predictions[video] for video in clean_predictions} ==
        clean_predictions,
        "strict_exit_status": strict.returncode,
        "strict_error": first_error_line(strict.stderr),
        "strict_started_training": os.path.exists(os.path.join(out_dir, "strict", "checkpoints")),
        "strict_pipeline_exit_status": strict_pipeline.returncode,
        "strict_pipeline_error": first_error_line(strict_pipeline.stderr),
        "seconds": seconds,
    }


def main(argv):
    del argv
    out_dir = FLAGS.output_dir or tempfile.mkdtemp(prefix="fault_injection_")
    start = time.perf_counter()
    try:
        figures = run(out_dir, train_videos=FLAGS.train_videos, val_videos=FLAGS.val_videos, model=FLAGS.model,
                      num_frames=FLAGS.num_frames, few=FLAGS.few, corrupt_fraction=FLAGS.corrupt_fraction,
                      missing_fraction=FLAGS.missing_fraction, seed=FLAGS.seed)
    finally:
        if not FLAGS.output_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    figures["seconds"]["total"] = time.perf_counter() - start
    print(f"Faults injected vs counted ({FLAGS.train_videos} training, {FLAGS.val_videos} validation videos, "
          f"{FLAGS.num_frames}-frame clips):")
    for split, rates in figures["rates"].items():
        print(f"  {split}: {rates['corrupt_jpegs']} corrupt JPEGs ({rates['corrupt_fraction']:.1%}) and "
              f"{rates['missing_frames']} missing frames ({rates['missing_fraction']:.1%}) of {rates['frames']} frames")
    print(f"  {'kind':<22}{'train injected':>16}{'train counted':>15}{'val injected':>14}{'val counted':>13}")
    for kind in faults.KINDS:
        row = [figures[table][split].get(kind, 0) for split in ("train", "val") for table in ("injected", "counted")]
        if any(row):
            print(f"  {kind:<22}" + "".join(f"{value:>{width}}" for value, width in zip(row, (16, 15, 14, 13))))
    print("  corrupt JPEGs:", figures["corrupt_jpegs"])
    print(f"Training: {figures['train_examples']} examples, {figures['train_clips_with_substitutes']} clips with "
          f"substituted frames, {figures['substituted_frames']['train']} frames substituted, "
          f"{figures['train_skipped_videos']} videos skipped; completed: {figures['train_completed']}")
    for split in ("train", "val"):
        print(f"Examples from the {split} log:")
        for kind, examples in figures["examples"][split].items():
            print(f"  {kind}: {examples[0]}")
    prepared = figures["prepare"]
    print(f"tfds_builders.build('video_folder'): {prepared['videos']} mp4 files, {prepared['written']} written, "
          "left out:")
    for message in prepared["unreadable"]:
        print("  " + message)
    print(f"Evaluation, faulty list: {figures['eval_faulty_list']} ({figures['substituted_frames']['val']} frames "
          f"substituted; {figures['eval_substituted_videos']} of {figures['eval_frame_broken_videos']} videos with "
          "broken frames evaluated)")
    print(f"Evaluation, intact videos only: {figures['eval_clean_list']}")
    print(f"Intact videos' predictions equal: {figures['intact_predictions_equal']}")
    print(f"Strict run: exit status {figures['strict_exit_status']}, {figures['strict_error']}")
    print(f"Strict run on the lists without bad lines: exit status {figures['strict_pipeline_exit_status']}, "
          f"{figures['strict_pipeline_error']}")
    print("Seconds: " + ", ".join(f"{key} {value:.1f}" for key, value in figures["seconds"].items()))
    print(json.dumps(figures))


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_integer("train_videos", 320, "Training videos written (an even number).")
    flags.DEFINE_integer("val_videos", 40, "Validation videos written (an even number).")
    flags.DEFINE_integer("num_frames", 8, "Frames of a clip; videos have n + 1 .. 2n - 1 frames.")
    flags.DEFINE_float("corrupt_fraction", 0.05, "Fraction of the frames made corrupt JPEGs (rounded up).")
    flags.DEFINE_float("missing_fraction", 0.02, "Fraction of the frames deleted (rounded up).")
    flags.DEFINE_integer("few", 2, "Truncated videos, missing folders, bad-label lines (training; halved in "
                         "validation).")
    flags.DEFINE_string("model", "blvnet_tam", "config.model.name of the tiny model trained.")
    flags.DEFINE_integer("seed", 0, "Seed of the dataset and of which frames are broken.")
    flags.DEFINE_string("output_dir", "", "Where data and runs go ('' = a new temporary folder, removed after).")
    app.run(main)
