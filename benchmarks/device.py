"""Speed, FLOP utilisation, memory and numerics of bLVNet-TAM-50 8x2 and TSN-R50 on one accelerator.

    python -m benchmarks.device [--json FILE] [--markdown] [--budget_s 480]
    python -m benchmarks.device --quick --json FILE      # tiny models, a CPU smoke run

Imports only jax, flax, optax, numpy and the model package (no TensorFlow, ml_collections, clu, the
input pipeline, or absl beyond the logging that flax and optax load themselves), so it runs on a
bare GPU machine. Measures, each on one line as it goes:
- `parity`: float32 logits of the eval-mode model on one seeded uint8 batch, on the first device
  and on the CPU, both at `jax.default_matmul_precision("highest")`: max abs and relative difference.
- `step`: bLVNet-TAM-50 8x2 (`configs/ssv1_8x2.py`: 16 frames, 224 crop, 174 classes) and TSN-R50
  on 16 frames; the train step (`steps.build_train_step`: forward, loss, backward, SGD update,
  state donated, uint8 clips of the input pipeline's training batches in) and inference (eval-mode
  forward, uint8 clips in); `config.model.dtype` bfloat16 and float32; batches 8, 16, 32. Clips/s
  from the median of timed calls after warm-up, TFLOP/s from XLA's cost analysis of the compiled
  program, MFU against the card's dense peak (`PEAK_TFLOPS`; float32 against TF32, which XLA uses
  for float32 convolutions and dots at the default precision), the allocator's peak memory beside
  XLA's estimate of the program's. A batch that runs out of memory, or whose XLA estimate exceeds
  the allocator's limit (75% of the card unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise),
  is reported as `oom`.
- `switch`: each model switch made for XLA:CPU (`SWITCHES`) on and off, train step clips/s.

JAX cannot reset the allocator's peak, so `peak_bytes_in_use` is the peak of the process so far:
it is this configuration's own where `peak_rose` is true, otherwise at most the figure shown.
Configurations run in priority order (parity, bfloat16 training, the switches, then the rest);
once `--budget_s` would be passed, the remaining ones are reported as skipped.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

from benchmarks import programs
from blvnet_jax import steps
from blvnet_jax.models import create_model

# config.model of configs/ssv1_8x2.py (configs/base.py), and the recipe fields the train step reads.
MODEL = dict(name="blvnet_tam", depth=50, alpha=2, beta=4, num_frames=16, blending_frames=3,
             num_classes=174, dropout=0.5, width=64, input_channels=3, dtype="float32",
             remat=False, pointwise_as_dot=True, recompute_stem=True)
DATA = dict(crop_size=224)
RECIPE = dict(seed=0, learning_rate=0.01, lr_schedule="cosine", lr_decay_epochs=(10.0, 20.0),
              lr_decay_factor=0.1, warmup_epochs=0.0, num_epochs=50.0, momentum=0.9,
              weight_decay=5e-4, grad_clip_norm=0.0, label_smoothing=0.0,
              skip_nonfinite_steps=False, grad_accumulation_steps=1)
# The measured models: config.model overrides of MODEL.
MODELS = {"blvnet_tam": dict(name="blvnet_tam"), "tsn": dict(name="tsn", num_frames=16)}
# config.model switches that speed up XLA:CPU and leave values unchanged: (field, models it affects).
SWITCHES = (("pointwise_as_dot", ("blvnet_tam", "tsn")), ("recompute_stem", ("blvnet_tam",)))
QUICK_MODEL = dict(width=8, num_frames=4)
QUICK_CROP = 32

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets, by `device_kind`: the first entry whose
# words all appear in it (case-insensitive) applies; an unknown card gets no MFU.
PEAK_TFLOPS = (
    (("h100", "pcie"), dict(bfloat16=756.0, tf32=378.0, float32=51.2)),
    (("h100", "nvl"), dict(bfloat16=835.5, tf32=417.5, float32=60.0)),
    (("h100",), dict(bfloat16=989.4, tf32=494.7, float32=66.9)),        # SXM
    (("h200", "nvl"), dict(bfloat16=835.5, tf32=417.5, float32=60.0)),
    (("h200",), dict(bfloat16=989.4, tf32=494.7, float32=66.9)),        # SXM
    (("a100",), dict(bfloat16=312.0, tf32=156.0, float32=19.5)),
)
GIB = 2.0 ** 30
# Settings of the environment that change what is measured, recorded with the figures.
ENVIRONMENT = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE",
               "XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_PLATFORMS", "JAX_DEFAULT_MATMUL_PRECISION")


class Fields(dict):
    """A dict whose items read as attributes too (`config.model.dtype`): what `create_model` and
    `steps.build_train_step` read of an ml_collections ConfigDict, `.get` included."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def make_config(model: str, dtype: str, quick: bool = False, **switches) -> Fields:
    """The config of `model` (a key of MODELS) in compute `dtype`, with `switches` set."""
    model_fields = {**MODEL, **MODELS[model], "dtype": dtype, **(QUICK_MODEL if quick else {}), **switches}
    data = {**DATA, "crop_size": QUICK_CROP if quick else DATA["crop_size"]}
    return Fields(model=Fields(model_fields), data=Fields(data), **RECIPE)


def random_batch(config: Fields, mode: str, batch_size: int, seed: int = 0) -> dict:
    """Seeded inputs of one call as numpy arrays. `infer`: uint8 clips `(batch, frames, crop,
    crop, channels)`; `train`: those and int32 `label` `(batch,)`, a batch as the input pipeline
    makes it (`train_batch_shapes`)."""
    rng = np.random.default_rng(seed)
    frames, crop = config.model.num_frames, config.data.crop_size
    batch = {"video": rng.integers(0, 256, (batch_size, frames, crop, crop, config.model.input_channels),
                                   dtype=np.uint8)}
    if mode == "train":
        batch["label"] = rng.integers(0, config.model.num_classes, batch_size).astype(np.int32)
    return batch


def peak_tflops(device_kind: str) -> dict | None:
    """The card's dense peaks `{bfloat16, tf32, float32}` in TFLOP/s, None for an unknown card."""
    kind = device_kind.lower()
    for words, peaks in PEAK_TFLOPS:
        if all(word in kind for word in words):
            return peaks
    return None


def peak_key(dtype: str) -> str:
    """Which peak a program in `dtype` is measured against: float32 runs on TF32 tensor cores at
    the default matmul precision, on the float32 units at 'highest' / 'float32'."""
    if dtype == "bfloat16":
        return "bfloat16"
    precision = str(jax.config.jax_default_matmul_precision or "default").lower()
    return "float32" if precision in ("highest", "float32") else "tf32"


def memory_stats() -> dict:
    """The first device's allocator figures (empty where the backend keeps none)."""
    return jax.devices()[0].memory_stats() or {}


def is_oom(error: BaseException) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def build(config: Fields, mode: str, batch_size: int):
    """`programs.compile_program` on seeded inputs (`random_batch`) on the first device:
    `(lowered, compiled, run)`."""
    return programs.compile_program(config, mode, jax.device_put(random_batch(config, mode, batch_size)))


def measure_step(config: Fields, mode: str, batch_size: int, repeats: int, warmup: int) -> dict:
    """Compiles and times one program: the figures of a `step` record (see the module docstring)."""
    peak_before = memory_stats().get("peak_bytes_in_use")
    start = time.perf_counter()
    lowered, compiled, run = build(config, mode, batch_size)
    compile_s = time.perf_counter() - start
    # The compiled program's count is the one asked for; the unoptimised program's is kept beside
    # it, and used where a backend's compiled count is missing.
    flops, flops_lowered = programs.xla_flops(compiled), programs.xla_flops(lowered)
    flops_source = "compiled" if flops > 0 else "lowered"
    flops = flops or flops_lowered
    try:
        xla_memory = steps.memory_figures(compiled)
    except (AttributeError, TypeError):  # no memory analysis on this backend
        xla_memory = None
    limit = memory_stats().get("bytes_limit")
    if xla_memory and limit and xla_memory["step_bytes"] > limit:
        return {"status": "oom", "compile_s": compile_s, "xla_memory": xla_memory, "bytes_limit": limit,
                "error": f"XLA estimate {xla_memory['step_bytes'] / GIB:.1f} GiB > limit {limit / GIB:.1f} GiB"}
    times = programs.time_calls(run, repeats, warmup)
    median = statistics.median(times)
    stats = memory_stats()
    peak = stats.get("peak_bytes_in_use")
    record = {"status": "ok", "compile_s": compile_s, "median_s": median, "times_s": times,
              "clips_per_s": batch_size / median, "flops_per_call": flops, "flops_source": flops_source,
              "flops_per_call_lowered": flops_lowered,
              "tflops_per_s": flops / median / 1e12, "xla_memory": xla_memory,
              "peak_bytes_in_use": peak, "bytes_limit": stats.get("bytes_limit"),
              "peak_rose": None if peak is None else peak_before is None or peak > peak_before}
    peaks = peak_tflops(jax.devices()[0].device_kind)
    if peaks:
        key = peak_key(config.model.dtype)
        record.update(peak_key=key, peak_tflops=peaks[key], mfu=record["tflops_per_s"] / peaks[key])
    return record


def logits_parity(config: Fields, batch_size: int) -> dict:
    """Float32 eval-mode logits of `config`'s seeded model on a seeded uint8 batch, on the first
    device and on the CPU at 'highest' matmul precision: max abs difference, and that difference
    relative to the largest CPU logit."""
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError as error:  # JAX_PLATFORMS without cpu
        return {"status": "skipped", "error": f"no CPU backend: {error}"}
    model = create_model(config.model, rngs=nnx.Rngs(config.seed))
    model.eval()
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    video = random_batch(config, "infer", batch_size, seed=config.seed)["video"]
    eval_step = jax.jit(steps.make_eval_step(graphdef))
    logits = {}
    with jax.default_matmul_precision("highest"):
        for name, device in (("device", jax.devices()[0]), ("cpu", cpu)):
            arguments = jax.device_put((params, batch_stats, video), device)
            logits[name] = np.asarray(eval_step(*arguments), np.float64)
    difference = np.abs(logits["device"] - logits["cpu"])
    scale = float(np.abs(logits["cpu"]).max())
    return {"status": "ok", "max_abs_diff": float(difference.max()),
            "max_rel_diff": float(difference.max()) / scale if scale else float(difference.max()),
            "max_abs_logit": scale, "finite": bool(np.isfinite(logits["device"]).all()
                                                    and np.isfinite(logits["cpu"]).all())}


def plan(args) -> list[dict]:
    """Every configuration to measure, in priority order: `{kind, model, dtype, mode, batch_size,
    switches}`; a `switch` entry with its default value is the same program as its `step` entry."""
    items = [dict(kind="parity", model=model, dtype="float32", mode="infer", batch_size=args.parity_batch,
                  switches={}) for model in args.models]
    grid = [dict(kind="step", model=model, dtype=dtype, mode=mode, batch_size=batch, switches={})
            for dtype in args.dtypes for mode in args.modes for batch in args.batch_sizes
            for model in args.models]
    ab = [dict(kind="switch", model=model, dtype=args.dtypes[0], mode="train", batch_size=args.switch_batch,
               switches={field: value})
          for field, affected in SWITCHES for model in args.models if model in affected
          for value in (MODEL[field], not MODEL[field])] if "train" in args.modes else []
    first = [item for item in grid if item["dtype"] == args.dtypes[0] and item["mode"] == "train"]
    return items + first + ab + [item for item in grid if item not in first]


def describe(item: dict) -> str:
    switches = " ".join(f"{field}={value}" for field, value in item["switches"].items())
    return (f"{item['kind']:6s} {item['model']:10s} {item['mode']:5s} {item['dtype']:8s} "
            f"batch {item['batch_size']:2d}" + (f" {switches}" if switches else ""))


def summary_line(record: dict) -> str:
    """One printed line: the configuration and its figures."""
    head = describe(record)
    if record["status"] != "ok":
        return f"{head}: {record['status'].upper()}" + (f" ({record['error']})" if record.get("error") else "")
    if record["kind"] == "parity":
        return (f"{head}: logits {jax.devices()[0].platform} vs cpu at 'highest': max abs diff "
                f"{record['max_abs_diff']:.3g}, relative {record['max_rel_diff']:.3g} "
                f"(largest logit {record['max_abs_logit']:.3g})")
    memory = ""
    if record["peak_bytes_in_use"] is not None:
        memory = f", peak {record['peak_bytes_in_use'] / GIB:.2f} GiB{'' if record['peak_rose'] else ' (earlier)'}"
    if record["xla_memory"]:
        memory += f", XLA estimate {record['xla_memory']['step_bytes'] / GIB:.2f} GiB"
    mfu = f", MFU {100 * record['mfu']:.1f}% of {record['peak_key']}" if "mfu" in record else ""
    return (f"{head}: {record['clips_per_s']:.2f} clips/s (median {record['median_s'] * 1e3:.1f} ms), "
            f"{record['tflops_per_s']:.3g} TFLOP/s{mfu}{memory}, compile {record['compile_s']:.0f} s")


def run_all(args) -> dict:
    """Measures `plan(args)` within `args.budget_s`, printing each record as it comes."""
    started = time.perf_counter()
    durations = {}     # (kind group, model, mode) -> seconds of the last one measured
    done = {}          # program key -> record, so a switch at its default reuses the step
    records = []
    for item in plan(args):
        config = make_config(item["model"], item["dtype"], args.quick, **item["switches"])
        program = (item["model"], item["dtype"], item["mode"], item["batch_size"],
                   tuple(sorted((k, config.model[k]) for k, _ in SWITCHES)))
        group = (item["kind"] == "parity", item["model"], item["mode"])
        elapsed = time.perf_counter() - started
        record = dict(item)
        if item["kind"] != "parity" and program in done:
            record.update({k: v for k, v in done[program].items() if k not in item})
        elif elapsed + durations.get(group, 0.0) > args.budget_s:
            record["status"] = "skipped"
            record["error"] = f"--budget_s {args.budget_s:.0f} reached at {elapsed:.0f} s"
        else:
            try:
                if item["kind"] == "parity":
                    record.update(logits_parity(config, item["batch_size"]))
                else:
                    record.update(measure_step(config, item["mode"], item["batch_size"], args.repeats,
                                               args.warmup))
                    done[program] = record
            except Exception as error:  # noqa: BLE001 -- an OOM or failure of one configuration
                record["status"] = "oom" if is_oom(error) else "error"
                record["error"] = str(error).strip().splitlines()[0][:300] if str(error).strip() else repr(error)
            durations[group] = time.perf_counter() - started - elapsed
            gc.collect()
        print(summary_line(record), flush=True)
        records.append(record)
    device = jax.devices()[0]
    return {"device": {"platform": device.platform, "device_kind": device.device_kind,
                       "device_count": jax.device_count(), "peak_tflops": peak_tflops(device.device_kind),
                       "bytes_limit": memory_stats().get("bytes_limit")},
            "software": {"jax": jax.__version__, "python": platform.python_version()},
            "environment": {key: os.environ[key] for key in ENVIRONMENT if key in os.environ},
            "settings": {key: value for key, value in vars(args).items() if key not in ("json", "markdown")},
            "command": "python -m benchmarks.device " + " ".join(sys.argv[1:]),
            "elapsed_s": time.perf_counter() - started,
            "parity": [r for r in records if r["kind"] == "parity"],
            "steps": [r for r in records if r["kind"] == "step"],
            "switches": [r for r in records if r["kind"] == "switch"]}


def _gib(value) -> str:
    return "" if value is None else f"{value / GIB:.1f}"


def markdown(results: dict) -> str:
    """A README-ready section: the card, the step table, the switch A/B and the logits parity."""
    device, settings = results["device"], results["settings"]
    lines = [f"`{results['command']}` on 1x {device['device_kind']} ({device['platform']}, jax "
             f"{results['software']['jax']}), median of {settings['repeats']} timed calls after "
             f"{settings['warmup']} warm-up, inputs already on the device; MFU against the dense "
             "peak (float32 against TF32); peak memory is the allocator's peak of the run so far "
             "(\u2264 where an earlier configuration set it):", "",
             "| model | mode | dtype | batch | clips/s | TFLOP/s | MFU | peak memory (GiB) | XLA estimate (GiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["steps"], key=lambda r: (r["model"], r["mode"] != "train", r["dtype"], r["batch_size"])):
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['mode']} | {r['dtype']} | {r['batch_size']} | "
                         f"{r['status'].upper()} | | | | |")
            continue
        peak = _gib(r["peak_bytes_in_use"])
        peak = peak if r["peak_rose"] in (True, None) else "\u2264 " + peak
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else ""
        lines.append(f"| {r['model']} | {r['mode']} | {r['dtype']} | {r['batch_size']} | {r['clips_per_s']:.1f} | "
                     f"{r['tflops_per_s']:.3g} | {mfu} | {peak} | {_gib((r['xla_memory'] or {}).get('step_bytes'))} |")
    if results["switches"]:
        lines += ["", "Switches made for XLA:CPU, train step:", "",
                  "| model | dtype | batch | switch | clips/s on | clips/s off | off / on |",
                  "|---|---|---|---|---|---|---|"]
        pairs = {}
        for r in results["switches"]:
            (field, value), = r["switches"].items()
            pairs.setdefault((r["model"], r["dtype"], r["batch_size"], field), {})[value] = r
        for (model, dtype, batch, field), pair in pairs.items():
            speed = {value: (r["clips_per_s"] if r["status"] == "ok" else None) for value, r in pair.items()}
            on, off = speed.get(True), speed.get(False)
            cell = lambda s, value: f"{s:.1f}" if s is not None else pair.get(value, {}).get("status", "").upper()
            ratio = f"{off / on:.2f}" if on and off else ""
            lines.append(f"| {model} | {dtype} | {batch} | {field} | {cell(on, True)} | {cell(off, False)} | {ratio} |")
    if results["parity"]:
        lines += ["", f"float32 logits, {device['platform']} against the CPU, both at 'highest' precision:", "",
                  "| model | batch | max abs diff | relative to the largest logit |", "|---|---|---|---|"]
        for r in results["parity"]:
            figures = (f"{r['max_abs_diff']:.2g} | {r['max_rel_diff']:.2g}" if r["status"] == "ok"
                       else f"{r['status'].upper()} |")
            lines.append(f"| {r['model']} | {r['batch_size']} | {figures} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny models ({QUICK_MODEL}, crop {QUICK_CROP}), batch 2, few repeats: a CPU smoke run")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--markdown", action="store_true", help="end with a README-ready table")
    parser.add_argument("--budget_s", type=float, default=480.0,
                        help="skip the configurations that would start past this many seconds")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--dtypes", nargs="+", choices=("bfloat16", "float32"), default=["bfloat16", "float32"])
    parser.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=None, help="default 8 16 32 (quick: 2)")
    parser.add_argument("--switch_batch", type=int, default=None, help="batch of the switch A/B (default 16, quick: 2)")
    parser.add_argument("--parity_batch", type=int, default=None, help="batch of the logits check (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5, quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after compiling (default 2, quick: 1)")
    args = parser.parse_args(argv)
    defaults = dict(batch_sizes=[2], switch_batch=2, parity_batch=1, repeats=2, warmup=1) if args.quick else \
        dict(batch_sizes=[8, 16, 32], switch_batch=16, parity_batch=1, repeats=5, warmup=2)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = jax.devices()[0]
    print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}; "
          f"budget {args.budget_s:.0f} s{', quick' if args.quick else ''}", flush=True)
    results = run_all(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown:
        print(markdown(results))
    failed = [r for r in results["parity"] + results["steps"] + results["switches"] if r["status"] == "error"]
    print(f"done in {results['elapsed_s']:.0f} s" + (f"; {len(failed)} configuration(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
