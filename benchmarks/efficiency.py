"""The paper's efficiency figures, measured: params, multiply-adds, train-step memory vs frames.

    python -m benchmarks.efficiency [--frames=8,16,32,64] [--models=blvnet_tam-50,tsn-50,...] \\
        [--memory_frames=8,16] [--batch_size=1] [--output=docs] [--readme]

For each model and frame count (one clip, 224x224, 174 classes): parameters, GMACs per clip
(multiply-adds of every convolution and product, the paper's "FLOPs"), and XLA's memory analysis
of one compiled train step at `--batch_size` clips (arguments + outputs + temporaries - aliased;
the training program of `steps.build_train_step`, with the config's optimizer). Writes
`efficiency.md` (figures, ratios against TSN-R50 at the same frame count, the paper's figures)
and two PNGs: training memory vs frames (the paper's Fig. 3b) and params / GMACs (Table 1); with
`--readme`, also the README's efficiency section. Every train step
is compiled, 10-100 s each on 2 cores (4-10 minutes for the default sweep); `--memory_frames=8,16`
halves that.
"""
from blvnet_jax import xla_env

xla_env.configure(huge_pages=False)

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402
from blvnet_jax import summary  # noqa: E402
from configs import ssv1_8x2  # noqa: E402

MODELS = ("blvnet_tam-50", "blvnet_tam-101", "tsn-50", "tsm-50")
LABELS = {"blvnet_tam": "bLVNet-TAM", "tsn": "TSN", "tsm": "TSM"}
# The paper's Table 1 (params, GMACs) for bLVNet-TAM, keyed by (name, depth, input frames).
PAPER = {("blvnet_tam", 50, 16): (25.0, 23.8), ("blvnet_tam", 101, 16): (40.2, 32.1),
         ("blvnet_tam", 101, 32): (40.2, 64.3), ("blvnet_tam", 101, 48): (40.2, 96.4),
         ("blvnet_tam", 101, 64): (40.2, 128.6)}


def label(name: str, depth: int) -> str:
    return f"{LABELS[name]}-R{depth}" if name != "blvnet_tam" else f"bLVNet-TAM-{depth}"


def measure(name: str, depth: int, frames: int, with_memory: bool, batch_size: int = 1) -> dict:
    """`summary.summarize` of one model: params, gmacs and (if asked) train_step_bytes."""
    config = ssv1_8x2.get_config()
    config.model.name, config.model.depth, config.model.num_frames = name, depth, frames
    start = time.perf_counter()
    result = summary.summarize(config, with_memory=with_memory, batch_size=batch_size)
    result["seconds"] = time.perf_counter() - start
    return result


def with_ratios(rows: list[dict]) -> list[dict]:
    """Adds `*_ratio` fields against TSN-R50 at the same frame count (None where missing)."""
    baselines = {r["num_frames"]: r for r in rows if (r["model"], r["depth"]) == ("tsn", 50)}
    for row in rows:
        base = baselines.get(row["num_frames"])
        for key in ("params", "gmacs", "train_step_bytes"):
            known = base is not None and row.get(key) is not None and base.get(key)
            row[f"{key}_ratio"] = row[key] / base[key] if known else None
    return rows


def markdown(rows: list[dict], command: str) -> str:
    """The `efficiency.md` table: ours, ratios to TSN-R50 at the same frames, the paper's."""
    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)
    lines = [
        "# Efficiency: parameters, multiply-adds and training memory", "",
        f"Written by `{command}` ({jax.__version__=}, {jax.devices()[0].device_kind}).", "",
        "GMACs: multiply-adds per clip at 224x224 (the paper's \"FLOPs\"). Memory: XLA's analysis of one "
        "compiled train step (forward, loss, backward, SGD + Nesterov momentum + weight decay) at batch "
        f"{rows[0]['batch_size']}, fp32: "
        "arguments + outputs + temporaries - aliased. Ratios are against TSN-R50 at the same number "
        "of input frames. The paper's figures are its Table 1 (params, GFLOPs); its Fig. 3b claims "
        "about half of TSN's training memory.", "",
        "| model | frames | params (M) | GMACs | train step (MiB) | params / TSN | GMACs / TSN "
        "| memory / TSN | paper params (M) | paper GFLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = PAPER.get((r["model"], r["depth"], r["num_frames"]), (None, None))
        memory = r.get("train_step_bytes")
        lines.append(
            f"| {label(r['model'], r['depth'])} | {r['num_frames']} | {r['params'] / 1e6:.2f} "
            f"| {r['gmacs']:.1f} | {fmt(memory and memory / 2**20, '{:.0f}')} "
            f"| {fmt(r['params_ratio'], '{:.2f}x')} | {fmt(r['gmacs_ratio'], '{:.2f}x')} "
            f"| {fmt(r['train_step_bytes_ratio'], '{:.2f}x')} | {fmt(paper[0], '{}')} | {fmt(paper[1], '{}')} |")
    lines += ["", "![training memory vs frames](efficiency_memory.png)",
              "![params and multiply-adds](efficiency_params_gmacs.png)", ""]
    return "\n".join(lines)


def readme_section(rows: list[dict], command: str) -> str:
    """The README's efficiency section: the 16-frame rows against TSN-R50, the command, the machine."""
    lines = [f"`{command}` on {report.machine()} (full table: `docs/efficiency.md`):", "",
             "| model | frames | params (M) | GMACs | train-step memory (MiB) | GMACs / TSN-R50 "
             "| memory / TSN-R50 | paper params / GFLOPs |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["num_frames"] != 16 or r.get("train_step_bytes") is None:
            continue
        paper = PAPER.get((r["model"], r["depth"], r["num_frames"]))
        lines.append(f"| {label(r['model'], r['depth'])} | {r['num_frames']} | {r['params'] / 1e6:.2f} "
                     f"| {r['gmacs']:.1f} | {r['train_step_bytes'] / 2**20:.0f} | {r['gmacs_ratio']:.2f}x "
                     f"| {r['train_step_bytes_ratio']:.2f}x | {f'{paper[0]} / {paper[1]}' if paper else '-'} |")
    lines += ["", f"Memory: XLA's analysis of one compiled fp32 train step at batch {rows[0]['batch_size']} "
              "(arguments + outputs + temporaries); the paper's claim is about half of TSN's."]
    return "\n".join(lines)


def plot(rows: list[dict], output: str) -> None:
    """`efficiency_memory.png` (Fig. 3b) and `efficiency_params_gmacs.png` (Table 1) in `output`."""
    import matplotlib  # noqa: PLC0415 - only needed here.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    models = sorted({(r["model"], r["depth"]) for r in rows}, key=lambda m: (m[0] != "blvnet_tam", m))
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for name, depth in models:
        points = [(r["num_frames"], r["train_step_bytes"] / 2**30) for r in rows
                  if (r["model"], r["depth"]) == (name, depth) and r.get("train_step_bytes")]
        if points:
            axis.plot(*zip(*points), marker="o", label=label(name, depth))
    axis.set(xlabel="input frames", ylabel=f"train-step memory, batch {rows[0]['batch_size']} (GiB)",
             title="Training memory vs frames (XLA, fp32)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(output, "efficiency_memory.png"), dpi=120)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, depth in models:
        points = [(r["num_frames"], r["params"] / 1e6, r["gmacs"]) for r in rows
                  if (r["model"], r["depth"]) == (name, depth)]
        frames, params, gmacs = zip(*points)
        axes[0].bar(label(name, depth), params[0])
        axes[1].plot(frames, gmacs, marker="o", label=label(name, depth))
    axes[0].set(ylabel="parameters (M)", title="Parameters")
    axes[0].tick_params(axis="x", labelsize=8)
    axes[1].set(xlabel="input frames", ylabel="GMACs per clip", title="Multiply-adds (224x224)")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(os.path.join(output, "efficiency_params_gmacs.png"), dpi=120)


FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(MODELS), "name-depth of each model.")
flags.DEFINE_list("frames", ["8", "16", "32", "64"], "Input frames per clip (even).")
flags.DEFINE_list("memory_frames", ["8", "16", "32", "64"],
                 "Frame counts at which a train step is compiled for its memory.")
flags.DEFINE_integer("batch_size", 1, "Clips per train step for the memory figure.")
flags.DEFINE_string("output", "docs", "Folder for efficiency.md and the PNGs.")
flags.DEFINE_bool("readme", False, "Also rewrite the README's efficiency section.")
flags.DEFINE_bool("json", False, "End with one JSON line of all rows.")


def main(argv):
    del argv
    command = " ".join(["python -m benchmarks.efficiency"] + sys.argv[1:])
    rows = []
    for model in FLAGS.models:
        name, depth = model.rsplit("-", 1)
        for frames in map(int, FLAGS.frames):
            row = measure(name, int(depth), frames, str(frames) in FLAGS.memory_frames, FLAGS.batch_size)
            rows.append(row)
            memory = row.get("train_step_bytes")
            print(f"{label(name, int(depth)):16s} {frames:3d} frames: {row['params'] / 1e6:6.2f}M params, "
                  f"{row['gmacs']:6.1f} GMACs" + (f", train step {memory / 2**20:6.0f} MiB" if memory else "")
                  + f" ({row['seconds']:.0f} s)", flush=True)
    rows = with_ratios(rows)
    os.makedirs(FLAGS.output, exist_ok=True)
    with open(os.path.join(FLAGS.output, "efficiency.md"), "w") as file:
        file.write(markdown(rows, command))
    plot(rows, FLAGS.output)
    if FLAGS.readme:
        report.update_readme("efficiency", readme_section(rows, command))
    if FLAGS.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    app.run(main)
