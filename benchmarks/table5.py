"""The paper's Table 5 in miniature: six ways of modelling time, same budget, synthetic order-only data.

    python -m benchmarks.table5 [--seeds=0,1,2] [--models=tsn,tsm,...] [--workdir=/tmp/table5] \\
        [--output=docs]

Each model is trained by `main.py --config=configs/demo.py` (width 16, 64x64, 24 epochs, the
demo's recipe) once per seed, each run in its own process; top-1 is the final validation
accuracy (1 crop x 1 clip). As in the paper, the bLVNet variants take `num_frames` frames (as
num_frames/2 x 2) and the frame models (TSN, TSM, TSN+TAM) half as many. Finished runs (their
`eval/results.jsonl` and their wall time) are reused, so an interrupted sweep picks up where it stopped. Writes
`results.md` into `--output`: mean and spread (sample standard deviation) over the seeds, every
run's top-1, params and GMACs per clip at the demo size, and the wall time of each run; with
`--readme`, the same table into the README's results section.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import report

MODELS = ("tsn", "tsm", "tsn_tam", "blvnet", "blvnet_tsm", "blvnet_tam")
LABELS = {"tsn": "TSN", "tsm": "TSN+TSM", "tsn_tam": "TSN+TAM", "blvnet": "bLVNet",
          "blvnet_tsm": "bLVNet+TSM", "blvnet_tam": "bLVNet+TAM"}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), "Models to train (config.model.name).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "config.seed of each run.")
flags.DEFINE_integer("num_frames", 8, "Input frames of the bLVNet variants; frame models take half.")
flags.DEFINE_string("workdir", "/tmp/blvnet_table5", "One sub-folder per run, kept for reuse.")
flags.DEFINE_string("output", "docs", "Folder for results.md.")
flags.DEFINE_bool("readme", False, "Also rewrite the README's results section.")
flags.DEFINE_multi_string("override", [], "Extra --config.a.b=v for every run (e.g. a shorter budget).")


def frames_for(model: str, num_frames: int) -> int:
    return num_frames if model.startswith("blvnet") else num_frames // 2


def run_command(model: str, seed: int, workdir: str) -> list[str]:
    return [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
            f"--config.model.name={model}", f"--config.seed={seed}",
            f"--config.model.num_frames={frames_for(model, FLAGS.num_frames)}",
            *[f"--config.{override}" for override in FLAGS.override]]


def train(model: str, seed: int) -> dict:
    """Trains one run (or reuses a finished one); {'top1', 'top5', 'seconds'}."""
    workdir = os.path.join(FLAGS.workdir, f"{model}-seed{seed}")
    results_file, timing_file = (os.path.join(workdir, name) for name in ("eval/results.jsonl", "wall_time.json"))
    if not (os.path.exists(results_file) and os.path.exists(timing_file)):
        command = run_command(model, seed, workdir)
        start = time.perf_counter()
        finished = subprocess.run(command, check=False, capture_output=True, text=True)
        if finished.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
        with open(timing_file, "w") as file:
            json.dump({"seconds": time.perf_counter() - start}, file)
    with open(results_file) as file:
        results = json.loads(file.read().splitlines()[-1])  # the final evaluation
    with open(timing_file) as file:
        seconds = json.load(file)["seconds"]
    return {"top1": 100 * results["top1"], "top5": 100 * results["top5"], "seconds": seconds}


def model_costs(model: str) -> dict:
    """Params and GMACs per clip of `model` at the demo's size."""
    from blvnet_jax import summary
    from configs import demo
    config = demo.get_config()
    config.model.name, config.model.num_frames = model, frames_for(model, FLAGS.num_frames)
    return summary.summarize(config, with_memory=False)


def markdown(rows: list[dict], command: str, total_seconds: float) -> str:
    lines = [
        f"`{command}`: {total_seconds / 60:.0f} min of runs on {report.machine()}, one process per run.", "",
        "Every run is `python main.py --config=configs/demo.py` with `--config.model.name`, "
        "`--config.seed` and `--config.model.num_frames` set: width 16, 64x64 crops, the demo's "
        "recipe and budget (24 epochs of 320 training videos), evaluated on the 80 validation "
        f"videos (1 crop x 1 clip). bLVNet variants see {FLAGS.num_frames} frames "
        f"({FLAGS.num_frames // 2}x2), frame models {FLAGS.num_frames // 2}, as in the paper "
        "(8x2 against 8). The classes come in pairs that are each other's time reversal, so a model "
        "blind to frame order can reach at most 50%. Top-1: mean ± sample standard deviation "
        "over the seeds. The paper's hypothesis (its Table 5, SS-V1): bLVNet+TAM best, and "
        "TAM better than TSM on either backbone. Minutes per run are wall clock, with whatever "
        "else ran on the machine at the time.", "",
        "| model | frames | params | GMACs per clip | top-1 (%) | top-1 per seed | top-5 (%) "
        "| minutes per run |",
        "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        top1 = [run["top1"] for run in row["runs"]]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        lines.append(
            f"| {LABELS[row['model']]} | {row['num_frames']} | {row['params'] / 1e6:.2f}M "
            f"| {row['gmacs']:.3f} | {statistics.mean(top1):.1f} ± {spread:.1f} "
            f"| {', '.join(f'{value:.1f}' for value in top1)} "
            f"| {statistics.mean(run['top5'] for run in row['runs']):.1f} "
            f"| {statistics.mean(run['seconds'] for run in row['runs']) / 60:.1f} |")
    return "\n".join(lines + [""])


def main(argv):
    del argv
    command = " ".join(["python -m benchmarks.table5"] + sys.argv[1:])
    rows = []
    for model in FLAGS.models:
        runs = []
        for seed in map(int, FLAGS.seeds):
            runs.append(train(model, seed))
            print(f"{LABELS[model]:11s} seed {seed}: top-1 {runs[-1]['top1']:5.1f}%  "
                  f"({runs[-1]['seconds'] / 60:.1f} min)", flush=True)
        costs = model_costs(model)
        rows.append({"model": model, "num_frames": costs["num_frames"], "params": costs["params"],
                     "gmacs": costs["gmacs"], "runs": runs})
    total_seconds = sum(run["seconds"] for row in rows for run in row["runs"])
    os.makedirs(FLAGS.output, exist_ok=True)
    table = markdown(rows, command, total_seconds)
    with open(os.path.join(FLAGS.output, "results.md"), "w") as file:
        file.write("# Table 5 in miniature: temporal modelling on the synthetic order-only dataset\n\n" + table)
    if FLAGS.readme:
        report.update_readme("table5", table)
    print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
