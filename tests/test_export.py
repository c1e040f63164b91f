"""Export: the `jax.export` artifact and the TF SavedModel give the checkpoint's logits, at any batch size."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from blvnet_jax import checkpoint, export, steps
from blvnet_jax.models import create_model
from configs import base

CLASS_NAMES = ["pushing", "pulling", "dropping", "lifting", "tearing"]


def seeded_model(config, seed: int) -> nnx.Module:
    """`config`'s model with every parameter and batch statistic drawn from `seed`, so a misplaced or
    missing weight shows: He-normal kernels, scales and variances in [0.5, 1.5], biases and means
    ~ N(0, 0.1). Built from shapes only (initialising it eagerly takes longer than the whole test)."""
    model = nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            values = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            values = rng.uniform(0.5, 1.5, shape)
        elif name == "weight":  # TAM: per-channel weights of the r blended frames
            values = rng.normal(1.0 / 3.0, 0.1, shape)
        else:  # bias, mean
            values = rng.normal(0.0, 0.1, shape)
        return jnp.asarray(values, leaf.dtype)

    items = jax.tree_util.tree_map_with_path(draw, checkpoint.model_items(model))
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    nnx.replace_by_pure_dict(params, items["params"])
    nnx.replace_by_pure_dict(batch_stats, items["batch_stats"])
    nnx.update(model, params, batch_stats)
    return model


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "blvnet_jax.export", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`(workdir, output, videos)`: a tiny seeded checkpoint, both artifacts (symbolic batch, every
    platform), and fixed uint8 batches of 2 and 3 clips."""
    root = tmp_path_factory.mktemp("export")
    config = base.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=5))
    config.data.crop_size = 32
    model = seeded_model(config, seed=1)
    workdir, output = str(root / "run"), str(root / "served")
    checkpoint.save_model(workdir, 12, model, config, class_names=CLASS_NAMES)
    export.export(workdir, output)  # what the command runs (its flags: test_user_mistakes_are_one_line)
    videos = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), np.uint8)
    return workdir, output, {2: videos[:2], 3: videos}


@pytest.fixture(scope="module")
def expected(exported):
    """The checkpoint's logits through `steps.make_eval_step`, per batch size."""
    workdir, _, videos = exported
    model, _ = checkpoint.restore_model(workdir)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    eval_step = jax.jit(steps.make_eval_step(graphdef))
    logits = {size: np.asarray(eval_step(params, batch_stats, video)) for size, video in videos.items()}
    assert np.std(logits[3]) > 0.1, "the seeded weights should give logits far from zero"
    return logits


def test_jax_export_gives_the_checkpoints_logits_at_any_batch_size(exported, expected):
    _, output, videos = exported
    served = export.load_jax(output)
    for size, video in videos.items():
        np.testing.assert_allclose(np.asarray(served(video)), expected[size], rtol=1e-5, atol=1e-5)
    artifact = jax.export.deserialize(bytearray(open(f"{output}/{export.JAX_FILE}", "rb").read()))
    assert artifact.platforms == export.PLATFORMS
    assert str(artifact.in_avals[0]) == "uint8[b,4,32,32,3]"


def test_saved_model_gives_the_checkpoints_logits_at_any_batch_size(exported, expected):
    import tensorflow as tf
    _, output, videos = exported
    loaded = tf.saved_model.load(f"{output}/{export.SAVED_MODEL_DIR}")
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["video"].dtype == tf.uint8
    for size, video in videos.items():
        np.testing.assert_allclose(serve(video=tf.constant(video))["logits"].numpy(), expected[size],
                                   rtol=1e-5, atol=1e-5)
    assert [name.decode() for name in loaded.class_names.numpy()] == CLASS_NAMES


def test_signature_names_the_classes_and_the_input(exported):
    _, output, _ = exported
    with open(f"{output}/{export.SIGNATURE_FILE}") as f:
        signature = json.load(f)
    assert signature["class_names"] == CLASS_NAMES
    assert signature["input"] == {**signature["input"], "shape": [None, 4, 32, 32, 3], "dtype": "uint8"}
    assert (signature["num_frames"], signature["crop_size"], signature["step"], signature["model"]) == (
        4, 32, 12, "blvnet_tam")


def test_fixed_batch_export(exported, expected, tmp_path):
    workdir, _, videos = exported
    export.export_jax(workdir, str(tmp_path), batch=2, platforms=("cpu",))
    with open(tmp_path / export.SIGNATURE_FILE) as f:
        assert json.load(f)["input"]["shape"] == [2, 4, 32, 32, 3]
    np.testing.assert_allclose(np.asarray(export.load_jax(str(tmp_path))(videos[2])), expected[2],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        export.load_jax(str(tmp_path))(videos[3])


def test_user_mistakes_are_one_line(exported, tmp_path):
    workdir, output, _ = exported
    result = run_export(f"--workdir={workdir}", f"--output={output}")
    assert result.returncode == 1 and "is not empty; name a new folder or add --overwrite" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Export error: --output=")
    with pytest.raises(checkpoint.NoCheckpointError, match="no checkpoint under"):
        export.export(str(tmp_path / "nothing"), str(tmp_path / "out"))
    with pytest.raises(export.UsageError, match="--format=onnx: use one or both of jax_export,saved_model"):
        export.parse_formats(["onnx"])
    with pytest.raises(export.UsageError, match="--batch=0"):
        export.parse_batch("0")
