"""`python -m benchmarks.device`: a CPU smoke run of its quick mode, its imports, and its config."""
import json
import math
import os
import subprocess
import sys

import pytest
from flax import nnx

from benchmarks import device
from blvnet_jax import xla_env
from blvnet_jax.models import create_model
from configs import baselines, ssv1_8x2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = ("tensorflow", "ml_collections", "clu", "absl")


def run_python(args, timeout):
    """Runs `python args` in the repository root on the CPU, with XLA's backend optimisations off
    (they only cost compile time here), and returns the finished process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
           "XLA_FLAGS": xla_env.with_flags(os.environ["XLA_FLAGS"], ("--xla_llvm_disable_expensive_passes=true",))}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`--quick` on TSN (the cheaper model to compile): printed lines and the JSON figures."""
    out = tmp_path_factory.mktemp("device") / "device.json"
    process = run_python(["-m", "benchmarks.device", "--quick", "--models", "tsn", "--json", str(out),
                          "--markdown"], timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    with open(out) as f:
        return process.stdout, json.load(f)


def test_quick_run_measures_both_dtypes_and_modes(quick_run):
    _, results = quick_run
    steps = results["steps"]
    assert {(r["dtype"], r["mode"]) for r in steps} == {(d, m) for d in ("bfloat16", "float32")
                                                         for m in ("train", "infer")}
    for record in steps:
        assert record["status"] == "ok", record
        assert record["clips_per_s"] > 0 and record["median_s"] > 0
        assert record["flops_per_call"] > 0 and math.isfinite(record["tflops_per_s"])
        assert record["xla_memory"]["step_bytes"] > 0
        assert record["model"] == "tsn" and record["batch_size"] == 2
    assert results["device"]["platform"] == "cpu" and results["device"]["peak_tflops"] is None
    assert all("mfu" not in record for record in steps)   # unknown card: no MFU


def test_quick_run_compares_logits_and_switches(quick_run):
    _, results = quick_run
    (parity,) = results["parity"]
    assert parity["status"] == "ok" and parity["finite"]
    assert math.isfinite(parity["max_abs_diff"]) and math.isfinite(parity["max_rel_diff"])
    switches = {(tuple(r["switches"].items()), r["status"]) for r in results["switches"]}
    assert switches == {((("pointwise_as_dot", True),), "ok"), ((("pointwise_as_dot", False),), "ok")}
    assert all(r["clips_per_s"] > 0 for r in results["switches"])


def test_quick_run_prints_a_line_per_measurement_and_a_table(quick_run):
    stdout, results = quick_run
    count = len(results["parity"]) + len(results["steps"]) + len(results["switches"])
    assert sum(line.startswith(("parity", "step", "switch")) for line in stdout.splitlines()) == count
    assert "| model | mode | dtype | batch | clips/s |" in stdout
    assert "| tsn | train | bfloat16 | 2 |" in stdout


def test_import_pulls_in_no_tensorflow_ml_collections_clu_or_absl():
    """Nothing of those packages beyond what flax and optax import themselves (both load
    `absl.logging`, so absl is on any machine that runs flax)."""
    process = run_python(["-c", "import sys\n"
                          "import flax, flax.linen, flax.nnx, jax, numpy, optax\n"
                          f"prefixes = {FORBIDDEN!r}\n"
                          "names = lambda: {m for m in sys.modules if m.split('.')[0] in prefixes}\n"
                          "before = names()\n"
                          "import benchmarks.device\n"
                          "print(sorted(names() - before), sorted(m for m in before if not m.startswith('absl')))"],
                         timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().splitlines()[-1] == "[] []"


def test_config_mirrors_the_paper_settings():
    """The benchmark's own config holds what configs/ssv1_8x2.py (and the TSN baseline at 16
    frames) say for every field it sets."""
    for name, reference in (("blvnet_tam", ssv1_8x2.get_config()), ("tsn", baselines.get_config("tsn", 16))):
        ours = device.make_config(name, reference.model.dtype)
        assert dict(ours.model) == reference.model.to_dict()
        for key, value in ours.data.items():
            assert reference.data[key] == value, key
        for key in device.RECIPE:
            assert reference[key] == ours[key], key
        for field, _ in device.SWITCHES:
            assert field in reference.model


@pytest.mark.parametrize("name", sorted(device.MODELS))
def test_every_planned_model_config_builds(name):
    for field, affected in device.SWITCHES:
        if name in affected:
            config = device.make_config(name, "bfloat16", **{field: not device.MODEL[field]})
            nnx.eval_shape(lambda config=config: create_model(config.model, rngs=nnx.Rngs(0)))


def test_full_plan_and_budget():
    args = device.parse_args(["--budget_s", "0"])
    plan = device.plan(args)
    steps = [item for item in plan if item["kind"] == "step"]
    assert len(steps) == 2 * 2 * 2 * 3 and {item["batch_size"] for item in steps} == {8, 16, 32}
    assert {(item["model"], *item["switches"]) for item in plan if item["kind"] == "switch"} == {
        ("blvnet_tam", "pointwise_as_dot"), ("tsn", "pointwise_as_dot"), ("blvnet_tam", "recompute_stem")}
    assert plan[0]["kind"] == "parity"
    results = device.run_all(args)   # no time at all: everything is skipped, nothing compiles
    records = results["parity"] + results["steps"] + results["switches"]
    assert len(records) == len(plan) and all(r["status"] == "skipped" for r in records)
    assert "SKIPPED" in device.markdown(results)


@pytest.mark.parametrize("kind,bf16", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0)])
def test_peak_table(kind, bf16):
    assert device.peak_tflops(kind)["bfloat16"] == bf16
    assert device.peak_tflops("cpu") is None


def test_markdown_names_the_card_and_marks_oom_and_earlier_peaks():
    common = dict(kind="step", model="tsn", mode="train", dtype="bfloat16", switches={})
    ok = dict(common, batch_size=8, status="ok", clips_per_s=100.0, tflops_per_s=400.0, mfu=0.4,
              peak_bytes_in_use=20 * 2**30, peak_rose=False, xla_memory={"step_bytes": 18 * 2**30})
    results = {"device": {"platform": "gpu", "device_kind": "NVIDIA H100 80GB HBM3"},
               "software": {"jax": "0"}, "settings": {"repeats": 5, "warmup": 2},
               "command": "python -m benchmarks.device", "parity": [], "switches": [],
               "steps": [ok, dict(common, batch_size=32, status="oom", error="RESOURCE_EXHAUSTED")]}
    text = device.markdown(results)
    assert "1x NVIDIA H100 80GB HBM3" in text
    assert "| tsn | train | bfloat16 | 8 | 100.0 | 400 | 40.0% | \u2264 20.0 | 18.0 |" in text
    assert "| tsn | train | bfloat16 | 32 | OOM |" in text
