"""Ours against the official PyTorch bLVNet-TAM, timed in one run on this machine.

    python -m benchmarks.official --official_repo=PATH [--config=configs/ssv1_8x2.py] \\
        [--repeats=5] [--compile] [--json] [--readme]

PATH is a clone of github.com/IBM/bLVNet-TAM: a checkout, or a bare / `.git` directory (its two
model files are then exported with `git show` to a temporary folder). The official code is only
read from there, never copied into this repository. Needs `torch` (CPU is enough).

Each measurement runs in its own process, alternating sides, because glibc reads its malloc
tunables when a process starts:
- official, "as shipped": eager PyTorch, default malloc;
- official, "same environment": eager with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, which ours
  sets for itself (`blvnet_jax.xla_env`); with `--compile` also `torch.compile` (inference);
- ours: `python -m benchmarks.speed` in its default (shipped) setup, and our TSN on the same
  input frames (the paper's baseline: 2.75x bLVNet-TAM-50 8x2's multiply-adds).
Inference is timed at `--infer_batch` (1), the train step (forward, cross-entropy, backward,
SGD with Nesterov momentum) at `--train_batch` (2); each figure is the median of `--repeats`
calls after warm-up, inputs already in memory. `--readme` writes the figures into the README's
speed section.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from benchmarks import report

OFFICIAL_FILES = ("__init__.py", "blvnet_tam.py", "blvnet_tam_backbone.py", "_model_urls.py")
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def official_package_root(repo: str, workdir: str) -> str:
    """A folder from which `core.models.bLVNet_TAM` imports: `repo` itself if it is a checkout,
    else `workdir` after exporting the model files from the git directory `repo`."""
    if os.path.isfile(os.path.join(repo, "core", "models", "blvnet_tam.py")):
        return repo
    models = os.path.join(workdir, "core", "models")
    os.makedirs(models)
    open(os.path.join(workdir, "core", "__init__.py"), "w").close()
    for name in OFFICIAL_FILES:
        source = subprocess.run(["git", f"--git-dir={repo}", "show", f"HEAD:core/models/{name}"],
                                check=True, capture_output=True, text=True).stdout
        with open(os.path.join(models, name), "w") as file:
            file.write(source)
    return workdir


def official_model(root: str, depth: int, num_frames: int, num_classes: int):
    """The official bLVNet_TAM (random weights, nothing downloaded) with `num_frames` input frames."""
    sys.path.insert(0, root)
    from core.models import bLVNet_TAM  # noqa: PLC0415 - only available after the path insert.
    return bLVNet_TAM(dict(
        depth=depth, alpha=2, beta=4, groups=num_frames, blending_frames=3, input_channels=3,
        imagenet_blnet_pretrained=False, blending_method="sum", partial_freeze_bn=False,
        dropout=0.5, num_classes=num_classes, dataset="st2stv1", pretrained=False))


def measure_official(root: str, mode: str, batch_size: int, compiled: bool, repeats: int,
                     depth: int, num_frames: int, num_classes: int, crop: int) -> dict:
    """Median seconds of one official forward (eval, no grad) or train step, in this process."""
    import torch  # noqa: PLC0415 - optional dependency.
    torch.manual_seed(0)
    model = official_model(root, depth, num_frames, num_classes)
    video = torch.randn(batch_size, 3 * num_frames, crop, crop)
    labels = torch.randint(0, num_classes, (batch_size,))
    if mode == "infer":
        model.eval()
        forward = torch.compile(model) if compiled else model

        def run():
            with torch.no_grad():
                forward(video)
    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, nesterov=True)
        forward = torch.compile(model) if compiled else model

        def run():
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(forward(video), labels).backward()
            optimizer.step()
    for _ in range(3 if compiled else 2):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"clips_per_s": batch_size / median, "median_s": median, "times_s": times,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_json(command: list[str], env: dict) -> dict:
    """Runs `command` and parses the JSON of its last stdout line."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment(huge_pages: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    if huge_pages:
        env["GLIBC_TUNABLES"] = HUGE_PAGES
    return env


FLAGS = flags.FLAGS
flags.DEFINE_string("official_repo", None, "Clone of IBM/bLVNet-TAM: a checkout or a git directory.")
config_flags.DEFINE_config_file("config", "configs/ssv1_8x2.py", "Our config of the same model.",
                                lock_config=True)
flags.DEFINE_integer("infer_batch", 1, "Clips per inference call.")
flags.DEFINE_integer("train_batch", 2, "Clips per train step.")
flags.DEFINE_integer("repeats", 5, "Timed calls per measurement; the median is reported.")
flags.DEFINE_bool("compile", False, "Also time torch.compile of the official model (inference).")
flags.DEFINE_bool("json", False, "End with one JSON line of all figures.")
flags.DEFINE_bool("readme", False, "Also rewrite the README's speed section.")
flags.DEFINE_string("measure", None, "Internal: measure one official variant in this process, "
                    "given as 'mode,batch,compiled,depth,frames,classes,crop,root'.")


def measure_cases(root: str) -> list[tuple[str, str, list[str], dict]]:
    """(name, mode, command, env) of every measurement: ours, our TSN, then each official variant.

    `root` is the folder the official package imports from (`official_package_root`).
    """
    python = sys.executable
    config, model = FLAGS.config, FLAGS.config.model
    overrides = [f"--config.{key}={value}"
                 for key, value in config_flags.get_override_values(FLAGS["config"]).items()]
    cases = []
    for mode, batch in (("infer", FLAGS.infer_batch), ("train", FLAGS.train_batch)):
        ours = [python, "-m", "benchmarks.speed", f"--config={config_flags.get_config_filename(FLAGS['config'])}",
                *overrides, f"--mode={mode}", f"--batch_size={batch}", f"--repeats={FLAGS.repeats}", "--json"]
        variants = [("official eager, as shipped", False, False),
                    ("official eager, huge pages", True, False)]
        if FLAGS.compile and mode == "infer":
            variants.append(("official torch.compile, huge pages", True, True))
        cases.append(("ours", mode, ours, environment(False)))
        cases.append((f"ours, TSN-R{model.depth} on the same {model.num_frames} frames", mode,
                      ours + ["--config.model.name=tsn"], environment(False)))
        for name, huge_pages, compiled in variants:
            spec = ",".join(map(str, (mode, batch, int(compiled), model.depth, model.num_frames,
                                      model.num_classes, config.data.crop_size, root)))
            cases.append((name, mode, [python, "-m", "benchmarks.official", f"--measure={spec}",
                                       f"--repeats={FLAGS.repeats}"], environment(huge_pages)))
    return cases


def speed_table(results: list[dict]) -> str:
    """Markdown: clips/s of every variant per mode, and ours as a multiple of each."""
    lines = ["| mode | model | clips/s | ours / this |", "|---|---|---|---|"]
    for mode, batch in (("infer", FLAGS.infer_batch), ("train", FLAGS.train_batch)):
        ours = next(r for r in results if r["mode"] == mode and r["name"] == "ours")
        for other in (r for r in results if r["mode"] == mode):
            lines.append(f"| {'inference' if mode == 'infer' else 'train step'}, batch {batch} | {other['name']} "
                         f"| {other['clips_per_s']:.3f} | {ours['clips_per_s'] / other['clips_per_s']:.2f}x |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.measure:
        mode, batch, compiled, depth, frames, classes, crop, root = FLAGS.measure.split(",")
        print(json.dumps(measure_official(root, mode, int(batch), bool(int(compiled)), FLAGS.repeats,
                                          int(depth), int(frames), int(classes), int(crop))))
        return
    if not FLAGS.official_repo:
        raise app.UsageError("--official_repo=PATH (a clone of IBM/bLVNet-TAM) is required")
    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        results = []
        for name, mode, command, env in measure_cases(official_package_root(FLAGS.official_repo, workdir)):
            result = run_json(command, env)
            results.append({"name": name, "mode": mode, **result})
            print(f"{mode:5s} {name:38s} {result['clips_per_s']:6.3f} clips/s "
                  f"(median {result['median_s'] * 1e3:.0f} ms)", flush=True)
    table = speed_table(results)
    print(table)
    if FLAGS.readme:
        command = " ".join(["python -m benchmarks.official"] + sys.argv[1:])
        report.update_readme("speed", f"`{command}` on {report.machine()}, fp32, 224x224, one process "
                             f"per measurement, median of {FLAGS.repeats} calls; load average {start_load:.1f} "
                             f"at the start, {os.getloadavg()[0]:.1f} at the end (a loaded machine slows "
                             f"PyTorch's threads more than XLA's):\n\n{table}")
    if FLAGS.json:
        print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
