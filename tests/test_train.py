"""The training loop: learning, exact resume, multi-device equivalence, evaluation math."""
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from etils import epath
from flax import nnx

from blvnet_jax import checkpoint, evaluation, hosts, steps, train, xla_env
from blvnet_jax.models import create_model
from configs import demo
from input_pipeline import sources


def tiny_config(root, **overrides):
    config = demo.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=2))
    config.data.update(dict(crop_size=32, root=str(root)))
    config.data.synthetic.update(dict(num_classes=2, train_videos_per_class=4, val_videos_per_class=2,
                                      frame_height=40, frame_width=48, min_video_frames=8, max_video_frames=10))
    config.update(dict(batch_size=4, eval_batch_size=4, num_train_steps=4, checkpoint_every_steps=2,
                       log_every_steps=1, eval_every_steps=100, warmup_epochs=0.0))
    config.update(overrides)
    return config


def test_video_metrics_on_hand_made_probabilities():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    labels = np.array([1, 2, 0, 0])
    metrics = evaluation.video_metrics(probabilities, labels)
    assert metrics["top1"] == 0.5  # videos 0 and 3
    assert metrics["top5"] == 1.0
    np.testing.assert_allclose(metrics["loss"], -np.mean(np.log([0.6, 0.3, 0.2, 0.9])))
    two_video = evaluation.video_metrics(probabilities[:2], np.array([2, 2]))
    assert two_video["top1"] == 0.0


def test_views_are_averaged_as_probabilities():
    logits = np.log(np.array([[0.7, 0.3], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]]))  # 2 videos x 2 views
    np.testing.assert_allclose(evaluation.average_views(logits, 2), [[0.4, 0.6], [0.5, 0.5]])
    matrix = evaluation.confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    np.testing.assert_array_equal(matrix, [[1, 1], [0, 1]])


def test_loss_decreases_on_a_fixed_batch():
    config = demo.get_config().model
    config.update(dict(width=8, num_frames=4, num_classes=3, dropout=0.0))
    optimizer = optax.sgd(0.05, momentum=0.9, nesterov=True)
    graphdef, state = steps.init_train_state(create_model(config, rngs=nnx.Rngs(0)), optimizer)
    step = jax.jit(steps.make_train_step(graphdef, optimizer), donate_argnums=0)
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (6, 4, 32, 32, 3), dtype=np.uint8), "label": np.array([0, 1, 2] * 2)}
    losses = []
    for _ in range(12):
        state, metrics = step(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]


def final_params(workdir):
    model, metadata = checkpoint.restore_model(str(workdir))
    return metadata["step"], jax.tree.map(np.asarray, nnx.state(model))


class Preempted(Exception):
    pass


def serving_batches(count, then):
    """A `create_train_dataset` that serves `count` batches, then calls `then()` before each next one."""
    create_train_dataset = train.input_pipeline.create_train_dataset

    def create(*args, **kwargs):
        dataset = create_train_dataset(*args, **kwargs)

        class Interrupted:
            stats = dataset.stats
            error = None
            served = 0

            def __next__(self):
                self.served += 1
                if self.served > count:
                    then()
                return next(dataset)

            def close(self):
                dataset.close()
        return Interrupted()
    return create


def test_resumed_run_ends_exactly_where_an_uninterrupted_one_ends(straight_run, tmp_path, monkeypatch):
    data_root, straight = straight_run

    def preempt():
        raise Preempted

    with monkeypatch.context() as patch:
        patch.setattr(train.input_pipeline, "create_train_dataset", serving_batches(2, preempt))
        with pytest.raises(Preempted):
            train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "resumed"))
    assert checkpoint.open_manager(str(tmp_path / "resumed")).latest_step() == 2
    results = train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "resumed"))
    step_a, straight_state = final_params(straight)
    step_b, resumed = final_params(tmp_path / "resumed")
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, straight_state, resumed)
    results_dir = tmp_path / "resumed" / "eval" / "step_4_1x1"
    with open(results_dir / "results.json") as f:
        written = json.load(f)
    assert written == results and written["num_videos"] == 4 and written["step"] == 4
    for path in [results_dir / name for name in ("predictions.csv", "per_class.csv", "confusion.png")] + [
            tmp_path / "resumed" / "metrics.jsonl"]:
        assert os.path.getsize(path) > 0
    assert train.evaluate_checkpoint(tiny_config(data_root), str(tmp_path / "resumed")) == results


def test_a_resumed_run_drops_the_metric_lines_logged_past_its_checkpoint(tmp_path):
    lines = [json.dumps({"step": step, "train/loss": 1.0}) + "\n" for step in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(lines) + '{"step": 5, "train/lo')  # killed while writing
    logger = train.MetricLogger(epath.Path(tmp_path), start_step=2)
    logger.write(3, {"train/loss": 0.5})
    logger.close()
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines[:2]) + '{"step": 3, "train/loss": 0.5}\n'


def compiling_with(then):
    """A `compile_train_step` that calls `then()` first."""
    compile_train_step = train.compile_train_step

    def compile_after(*args):
        then()
        return compile_train_step(*args)
    return compile_after


@pytest.mark.parametrize("signum, during, saved", [(signal.SIGTERM, "third batch", [2, 3]),
                                                   (signal.SIGINT, "third batch", [2, 3]),
                                                   (signal.SIGTERM, "compile", [1])])
def test_sigterm_or_ctrl_c_saves_the_step_in_flight_and_stops_and_the_restart_ends_exactly(
        straight_run, tmp_path, monkeypatch, signum, during, saved):
    """The notice while the third batch is read saves step 3 (step 2 is a periodic checkpoint); while
    the train step compiles, before any step, it saves step 1 (before, the process died, exit 143)."""
    data_root, straight = straight_run
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    notice = lambda: os.kill(os.getpid(), signum)
    with monkeypatch.context() as patch:
        if during == "compile":
            patch.setattr(train, "compile_train_step", compiling_with(notice))
        else:
            patch.setattr(train.input_pipeline, "create_train_dataset", serving_batches(2, notice))
        assert train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "run")) == {}
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    assert sorted(checkpoint.open_manager(str(tmp_path / "run")).all_steps()) == saved
    assert not os.path.exists(tmp_path / "run" / "eval")
    train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "run"))
    jax.tree.map(np.testing.assert_array_equal, final_params(straight), final_params(tmp_path / "run"))


def test_a_second_ctrl_c_stops_at_once():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever the runner set
    watch = hosts.PreemptionWatch()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert watch.reached(1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        watch.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        watch.close()
        signal.signal(signal.SIGINT, previous)


LOSS_CURVE = """
import json, sys
import jax, numpy as np, optax
from flax import nnx
from blvnet_jax import steps
from blvnet_jax.models import create_model
from blvnet_jax.sharding import create_mesh, global_batch, replicated
from configs import demo
from benchmarks.tpu_compile import collective_census
name, mesh_shape = sys.argv[1], tuple(json.loads(sys.argv[2]))
config = demo.get_config().model
config.update(dict(name=name, width=8, num_frames=4, num_classes=3, dropout=0.0))
mesh = create_mesh(mesh_shape)
optimizer = optax.sgd(0.05, momentum=0.9, nesterov=True)
graphdef, state = steps.init_train_state(create_model(config, rngs=nnx.Rngs(0)), optimizer)
state = jax.device_put(state, replicated(mesh))
step = jax.jit(steps.make_train_step(graphdef, optimizer, mesh=mesh), donate_argnums=0)
rng = np.random.default_rng(0)
batch = global_batch({"video": rng.integers(0, 256, (8, 4, 32, 32, 3), dtype=np.uint8),
                      "label": np.arange(8) % 3}, mesh)
census = collective_census(step.lower(state, batch, jax.random.key(0)).compile().as_text())
losses = []
for _ in range(4):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
logits = jax.jit(steps.make_eval_step(graphdef, mesh))(state.params, state.batch_stats, batch["video"])
print(json.dumps({"mesh": dict(mesh.shape), "losses": losses, "logits": np.asarray(logits).tolist(),
                  "collectives": sorted({opcode for opcode, _ in census})}))
"""


def environment(devices_per_process: int) -> dict:
    """The environment of a test's Python subprocess with `devices_per_process` CPU devices."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.path.join(os.getcwd(), "tests")]),
                XLA_FLAGS=xla_env.with_flags(os.environ["XLA_FLAGS"],
                                             (f"--xla_force_host_platform_device_count={devices_per_process}",)))


@functools.cache
def loss_curve(devices, mesh_shape=(-1, 1), name="blvnet_tam"):
    result = subprocess.run([sys.executable, "-c", LOSS_CURVE, name, json.dumps(mesh_shape)], capture_output=True,
                            text=True, env=environment(devices), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eight_devices_follow_the_one_device_loss_curve():
    """8 devices on the data axis: the same losses, gradients summed with one all-reduce."""
    one, eight = loss_curve(1), loss_curve(8)
    assert one["mesh"] == {"data": 1, "frames": 1} and eight["mesh"] == {"data": 8, "frames": 1}
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    assert eight["losses"][-1] < eight["losses"][0]
    assert eight["collectives"] == ["all-reduce"]


@pytest.mark.parametrize("name", ["blvnet_tam", "tsm"])
def test_frames_split_over_two_devices_exchange_only_halos(name):
    """4 x 2: each clip's 4 frames in two blocks of 2 (bLVNet: one frame pair per block). The
    model's values are one device's; the compiled step moves neighbouring frames with
    collective-permutes and never gathers a clip or exchanges it all-to-all."""
    one, split = loss_curve(1, name=name), loss_curve(8, (4, 2), name=name)
    assert split["mesh"] == {"data": 4, "frames": 2}
    np.testing.assert_allclose(split["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(split["logits"], one["logits"], rtol=1e-5, atol=1e-6)
    assert split["collectives"] == ["all-reduce", "collective-permute"]


def main_command(workdir, data_root, *flags):
    """`main.py` on the setting of `tiny_config`, spelled out as command-line overrides."""
    return [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
            "--config.model.width=8", "--config.model.num_frames=4", "--config.model.num_classes=2",
            "--config.data.crop_size=32", f"--config.data.root={data_root}",
            "--config.data.synthetic.num_classes=2", "--config.data.synthetic.train_videos_per_class=4",
            "--config.data.synthetic.val_videos_per_class=2", "--config.data.synthetic.frame_height=40",
            "--config.data.synthetic.frame_width=48", "--config.data.synthetic.min_video_frames=8",
            "--config.data.synthetic.max_video_frames=10", "--config.batch_size=4", "--config.eval_batch_size=4",
            "--config.num_train_steps=3", "--config.checkpoint_every_steps=3", "--config.warmup_epochs=0", *flags]


def test_a_step_that_cannot_fit_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "device_memory_bytes", lambda: 1024)
    with pytest.raises(MemoryError, match=r"needs about .* GiB per device .* lower config.batch_size"):
        train.train_and_evaluate(tiny_config(tmp_path / "data"), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "1")


def test_a_diverging_run_stops_naming_a_verified_checkpoint_followed_by_a_finite_step(straight_run, tmp_path):
    data_root, straight = straight_run
    shutil.copytree(straight, tmp_path / "run")
    config = tiny_config(data_root, learning_rate=1e12, num_train_steps=8, checkpoint_every_steps=1,
                         allow_recipe_change=True)  # resumed from step 4, diverges within a few steps
    with pytest.raises(FloatingPointError) as stopped:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    first_bad, good = map(int, re.fullmatch(
        r"the (?:loss|gradient norm) became (?:nan|inf|-inf) at step (\d+): training stopped; the last good "
        r"checkpoint is step (\d+) in .*: the same command resumes from it \(lower config.learning_rate or set "
        r"config.skip_nonfinite_steps=True first\)", str(stopped.value)).groups())
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        losses = {row["step"]: (row["train/loss"], row["train/grad_norm"]) for row in map(json.loads, f)
                  if "train/loss" in row}
    assert good == first_bad - 2 and all(np.isfinite(losses[good + 1]))  # its state gave a finite step
    checkpoints = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert f"{first_bad - 1}.nonfinite" in checkpoints and str(first_bad - 1) not in checkpoints
    step, state = final_params(tmp_path / "run")
    assert step == good
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_gradient_accumulation_updates_every_k_batches():
    config = demo.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=3, dropout=0.0))
    config.grad_accumulation_steps = 2
    optimizer = steps.make_optimizer(config, optax.constant_schedule(0.1))
    graphdef, state = steps.init_train_state(create_model(config.model, rngs=nnx.Rngs(0)), optimizer)
    initial = jax.tree.map(np.array, state.params)
    step = jax.jit(steps.make_train_step(graphdef, optimizer))
    batch = {"video": np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8),
             "label": np.array([0, 2])}
    state, _ = step(state, batch, jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, initial, jax.tree.map(np.asarray, state.params))
    state, _ = step(state, batch, jax.random.key(0))
    assert not np.allclose(np.asarray(state.params["head"]["kernel"][...]), initial["head"]["kernel"][...])


def test_nonfinite_steps_can_be_skipped_and_counted(tmp_path):
    config = tiny_config(tmp_path / "data", learning_rate=1e12, num_train_steps=6, skip_nonfinite_steps=True)
    train.train_and_evaluate(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f if "train/skipped_nonfinite_steps" in line]
    assert logged[-1]["step"] == 6 and logged[-1]["train/skipped_nonfinite_steps"] >= 1
    step, state = final_params(tmp_path / "run")
    assert step == 6 and all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))


def test_check_data_flag_stops_before_training_and_lists_every_problem(tmp_path):
    paths = sources.create_source(tiny_config(tmp_path / "data").data).config
    entries, _ = sources.read_video_list(paths.train_list)
    broken = [os.path.join(paths.root, entry.video_dir, "00002.jpg") for entry in entries[:2]]
    for frame in broken:
        with open(frame, "wb") as f:
            f.write(b"not a jpeg")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    checked = subprocess.run(main_command(tmp_path / "run", tmp_path / "data", "--check_data"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert checked.returncode == 1
    assert all(frame in checked.stderr for frame in broken)
    assert "2 problems in 12 videos (train 8, val 4): 2 corrupt frame.\nFound in the train and val splits of " \
           "configs/demo.py" in checked.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
