"""The checkpoint converter: file formats, key layouts, loud mismatches, the command line."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

from blvnet_jax import checkpoint, convert
from blvnet_jax.models import create_model
from configs import base
from seeded_checkpoint import load_fixture, seeded_clip_batch, seeded_tensor

SMALL_FIXTURE = "tests/data/blvnet_tam_r50_f8_b3_c174_s112.npz"


@pytest.fixture(scope="module")
def fixture():
    return load_fixture(SMALL_FIXTURE)


def model_config(**overrides):
    config = base.get_model_config()
    config.update(dict(num_frames=8))
    config.update(overrides)
    return config


def convert_dict(state_dict, **overrides):
    config = model_config(**overrides)
    model = create_model(config, rngs=nnx.Rngs(0))
    return model, convert.convert_into(model, state_dict, config)


def kernel_of(model, *path):
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return np.asarray(node[...])


def test_pth_with_module_prefix_and_wrapper_loads_like_npz(fixture, tmp_path):
    wrapped = {"state_dict": {"module." + k: torch.from_numpy(np.asarray(v)) for k, v in fixture["state_dict"].items()},
               "epoch": 3}
    torch.save(wrapped, tmp_path / "model.pth.tar")
    loaded = convert.load_state_dict(str(tmp_path / "model.pth.tar"))
    assert set(loaded) == set(fixture["state_dict"])
    for key, value in fixture["state_dict"].items():
        np.testing.assert_array_equal(loaded[key], value)


def test_safetensors_loads(fixture, tmp_path):
    floats = {k: v for k, v in fixture["state_dict"].items() if v.dtype == np.float32}
    save_file(floats, str(tmp_path / "model.safetensors"))
    loaded = convert.load_state_dict(str(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(loaded["new_fc.weight"], floats["new_fc.weight"])


class RunsCode:
    def __reduce__(self):
        return (os.makedirs, ("/tmp/blvnet_jax_pickle_ran",))


def test_pickled_code_is_never_executed(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": RunsCode()}, f)
    with pytest.raises(pickle.UnpicklingError):
        convert.load_state_dict(str(tmp_path / "evil.pth"))
    assert not os.path.exists("/tmp/blvnet_jax_pickle_ran")


def test_weights_land_in_our_layout(fixture):
    model, report = convert_dict(fixture["state_dict"])
    state = fixture["state_dict"]
    np.testing.assert_array_equal(kernel_of(model, "backbone", "layer1", "big", 0, "shortcut_conv", "kernel"),
                                  state["baseline_model.layer1.big.0.downsample.1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kernel_of(model, "backbone", "layer2", "little_expand_bn", "var"),
                                  state["baseline_model.layer2.little_e.1.running_var"])
    tam = kernel_of(model, "backbone", "layer4", 1, "temporal", "weight")
    np.testing.assert_array_equal(tam[0], state["baseline_model.layer4.1.tam.prev.weight"].reshape(-1))
    np.testing.assert_array_equal(tam[2], state["baseline_model.layer4.1.tam.next.weight"].reshape(-1))
    np.testing.assert_array_equal(kernel_of(model, "head", "kernel"), state["new_fc.weight"].T)
    assert report.copied == 364 and report.unused_counters == 71 and not report.initialised


def test_class_count_mismatch_names_key_and_shapes(fixture):
    with pytest.raises(convert.ConversionError, match=r"new_fc.weight: checkpoint shape \(174, 2048\).*\(400, 2048\)"):
        convert_dict(fixture["state_dict"], num_classes=400)


def test_head_mismatch_says_how_to_fix(fixture):
    with pytest.raises(convert.ConversionError, match="head is new_fc.*dropout=0"):
        convert_dict(fixture["state_dict"], dropout=0.0)


def test_blending_frames_mismatch(fixture):
    expected = r"tam.prev.weight.*3 TAM taps.*blending_frames=3\), but the model expects 5"
    with pytest.raises(convert.ConversionError, match=expected):
        convert_dict(fixture["state_dict"], blending_frames=5)


def test_depth_mismatch_lists_missing_keys(fixture):
    with pytest.raises(convert.ConversionError, match=r"model parameters are not in the checkpoint: .*layer3\.big\.5"):
        convert_dict(fixture["state_dict"], depth=101)


def test_unexpected_keys_are_listed(fixture):
    extra = dict(fixture["state_dict"], **{"baseline_model.layer9.conv1.weight": np.zeros((4, 4, 1, 1), np.float32)})
    with pytest.raises(convert.ConversionError, match=r"no place in the model.*layer9\.conv1\.weight \(4, 4, 1, 1\)"):
        convert_dict(extra)


def test_imagenet_blresnet_backbone_for_flow(fixture):
    """BigLittleNet's ImageNet keys: the video keys without TAMs, prefix or head, plus a 1000-way fc."""
    imagenet = {k[len("baseline_model."):]: v for k, v in fixture["state_dict"].items()
                if k.startswith("baseline_model.") and ".tam." not in k and not k.startswith("baseline_model.tam.")}
    imagenet["fc.weight"] = np.zeros((1000, 2048), np.float32)
    imagenet["fc.bias"] = np.zeros((1000,), np.float32)
    model, report = convert_dict(imagenet, input_channels=10)
    rgb = imagenet["conv1.weight"].transpose(2, 3, 1, 0)
    flow = kernel_of(model, "backbone", "conv1", "kernel")
    assert flow.shape == (7, 7, 10, 64)
    np.testing.assert_allclose(flow, np.repeat(rgb.mean(axis=2, keepdims=True), 10, axis=2), rtol=1e-6)
    assert "backbone.stem_temporal.weight" in report.initialised and "head.kernel" in report.initialised
    assert any("fc.weight" in item for item in report.ignored)


def torchvision_resnet_state_dict(width, blocks, num_classes=1000):
    """Keys and shapes of torchvision's ResNet (Bottleneck), written out independently of our model."""
    shapes = {"conv1.weight": (width, 3, 7, 7)}

    def add_bn(prefix, channels):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{leaf}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    add_bn("bn1", width)
    in_channels = width
    for stage, count in enumerate(blocks):
        planes = width * 2 ** stage
        for index in range(count):
            prefix = f"layer{stage + 1}.{index}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_channels, 1, 1)
            add_bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            add_bn(f"{prefix}.bn2", planes)
            shapes[f"{prefix}.conv3.weight"] = (4 * planes, planes, 1, 1)
            add_bn(f"{prefix}.bn3", 4 * planes)
            if index == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (4 * planes, in_channels, 1, 1)
                add_bn(f"{prefix}.downsample.1", 4 * planes)
            in_channels = 4 * planes
    shapes["fc.weight"], shapes["fc.bias"] = (num_classes, in_channels), (num_classes,)
    return {key: seeded_tensor(key, shape) for key, shape in shapes.items()}


@pytest.mark.parametrize("name", ["tsn", "tsm"])
def test_torchvision_resnet_for_baselines(name):
    state = torchvision_resnet_state_dict(8, (3, 4, 6, 3))
    model, report = convert_dict(state, name=name, width=8, num_classes=7)
    np.testing.assert_array_equal(kernel_of(model, "backbone", "layer2", 0, "shortcut_conv", "kernel"),
                                  state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kernel_of(model, "backbone", "layer3", 2, "bn3", "scale"),
                                  state["layer3.2.bn3.weight"])
    assert report.initialised == ["head.bias", "head.kernel"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "blvnet_jax.convert", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=600)


def test_command_line_converts_verifies_and_writes_a_restorable_checkpoint(fixture, tmp_path):
    np.savez(tmp_path / "weights.npz", **fixture["state_dict"])
    official_input = seeded_clip_batch(1, 8, 112).reshape(1, 24, 112, 112)
    np.save(tmp_path / "x.npy", official_input)
    np.save(tmp_path / "y.npy", fixture["logits"])
    np.save(tmp_path / "wrong.npy", fixture["logits"] * 1.01)
    args = ["--checkpoint", str(tmp_path / "weights.npz"), "--config=configs/ssv1_8x2.py",
            "--config.model.num_frames=8", "--verify_input", str(tmp_path / "x.npy")]
    result = run_cli(*args, "--output", str(tmp_path / "out"), "--verify_logits", str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_abs_err=" in result.stdout and "max_rel_err=" in result.stdout
    model, metadata = checkpoint.restore_model(str(tmp_path / "out"))
    assert metadata["step"] == 0 and metadata["config"]["model"]["num_frames"] == 8
    _, max_rel_err = convert.verify(model, official_input, fixture["logits"], 8)
    assert max_rel_err <= 1e-4
    failed = run_cli(*args, "--output", str(tmp_path / "out2"), "--verify_logits", str(tmp_path / "wrong.npy"))
    assert failed.returncode == 1 and "verification failed" in failed.stderr
