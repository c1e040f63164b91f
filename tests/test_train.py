"""The training loop: learning, exact resume, multi-device equivalence, evaluation math."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from blvnet_jax import checkpoint, evaluation, steps, train
from blvnet_jax.models import create_model
from configs import demo


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


def test_resumed_run_ends_exactly_where_an_uninterrupted_one_ends(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "straight"))
    create_train_dataset = train.input_pipeline.create_train_dataset

    def preempted_after_two_batches(*args, **kwargs):
        dataset = create_train_dataset(*args, **kwargs)

        class Interrupted:
            stats = dataset.stats
            served = 0

            def __next__(self):
                self.served += 1
                if self.served > 2:
                    raise Preempted
                return next(dataset)
        return Interrupted()

    with monkeypatch.context() as patch:
        patch.setattr(train.input_pipeline, "create_train_dataset", preempted_after_two_batches)
        with pytest.raises(Preempted):
            train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "resumed"))
    assert checkpoint.open_manager(str(tmp_path / "resumed")).latest_step() == 2
    results = train.train_and_evaluate(tiny_config(data_root), str(tmp_path / "resumed"))
    step_a, straight = final_params(tmp_path / "straight")
    step_b, resumed = final_params(tmp_path / "resumed")
    assert step_a == step_b == 4
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)
    with open(tmp_path / "resumed" / "eval_results.json") as f:
        written = json.load(f)
    assert written == results and written["num_videos"] == 4 and written["step"] == 4
    for name in ("eval_predictions.csv", "eval_per_class.csv", "eval_confusion.png", "metrics.jsonl"):
        assert os.path.getsize(tmp_path / "resumed" / name) > 0


LOSS_CURVE = """
import json, sys
import jax, numpy as np, optax
from flax import nnx
from blvnet_jax import steps
from blvnet_jax.models import create_model
from blvnet_jax.sharding import create_mesh, global_batch, replicated
from configs import demo
config = demo.get_config().model
config.update(dict(width=8, num_frames=4, num_classes=3, dropout=0.0))
mesh = create_mesh()
optimizer = optax.sgd(0.05, momentum=0.9, nesterov=True)
graphdef, state = steps.init_train_state(create_model(config, rngs=nnx.Rngs(0)), optimizer)
state = jax.device_put(state, replicated(mesh))
step = jax.jit(steps.make_train_step(graphdef, optimizer), donate_argnums=0)
rng = np.random.default_rng(0)
batch = {"video": rng.integers(0, 256, (8, 4, 32, 32, 3), dtype=np.uint8), "label": np.arange(8) % 3}
losses = []
for _ in range(4):
    state, metrics = step(state, global_batch(batch, mesh), jax.random.key(0))
    losses.append(float(metrics["loss"]))
print(json.dumps({"devices": jax.device_count(), "losses": losses}))
"""


def loss_curve(devices):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run([sys.executable, "-c", LOSS_CURVE], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eight_devices_follow_the_one_device_loss_curve():
    one, eight = loss_curve(1), loss_curve(8)
    assert one["devices"] == 1 and eight["devices"] == 8
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    assert eight["losses"][-1] < eight["losses"][0]
