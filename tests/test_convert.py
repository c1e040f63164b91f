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
    with pytest.raises(pickle.UnpicklingError, match="Save its state_dict alone"):
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
    assert "ImageNet backbone" in report.kind
    assert [item.split(" ")[0] for item in report.ignored if "ImageNet's 1000-class classifier" in item] == [
        "fc.weight", "fc.bias"]


def test_torchvision_fc_of_another_class_count_is_an_error():
    state = torchvision_resnet_state_dict(8, (3, 4, 6, 3), num_classes=400)
    with pytest.raises(convert.ConversionError, match=r"fc.weight: an fc of 400 classes is neither the video head "
                                                      r"\(config.model.num_classes=7\) nor ImageNet's \(1000\)"):
        convert_dict(state, name="tsn", width=8, num_classes=7)


def test_mmaction2_with_a_torchvision_backbone():
    """MMAction2's `backbone=dict(type='torchvision.resnet50')`: torchvision's names under `backbone.`."""
    state = torchvision_resnet_state_dict(8, (3, 4, 6, 3), num_classes=7)
    mmaction = {("cls_head.fc_cls." + k[3:]) if k.startswith("fc.") else f"backbone.{k}": v for k, v in state.items()}
    mmaction["data_preprocessor.mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    model, report = convert_dict(mmaction, name="tsn", width=8, num_classes=7)
    np.testing.assert_array_equal(kernel_of(model, "backbone", "layer2", 0, "shortcut_conv", "kernel"),
                                  state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kernel_of(model, "head", "kernel"), state["fc.weight"].T)
    assert report.kind.startswith("mmaction2") and not report.initialised
    assert report.ignored == ["data_preprocessor.mean [123.675, 116.28, 103.53] (MMAction2's input normalisation "
                              "on 0-255 pixels; ours: ImageNet's RGB mean/std, steps.py)"]


def tsm_repo_state_dict(depth_blocks, shifted):
    """The TSM repository's keys at width 8: `shifted(stage, block)` says which blocks' conv1 is `conv1.net`."""
    state = {}
    for key, value in torchvision_resnet_state_dict(8, depth_blocks, num_classes=7).items():
        parts = key.split(".")
        if key.startswith("fc."):
            state[f"new_{key}"] = value
            continue
        if key.startswith("layer") and parts[2] == "conv1" and shifted(int(parts[0][5:]), int(parts[1])):
            key = key.replace(".conv1.", ".conv1.net.")
        state[f"base_model.{key}"] = value
    return state


@pytest.mark.parametrize("name, depth, shifted, expected", [
    ("tsn", 50, lambda stage, block: True, r"shifts channels in time .* in 16 blocks, but config.model.name=tsn "
                                           r"shifts none; use --config.model.name=tsm"),
    ("tsm", 50, lambda stage, block: False, r"no temporal shift .* config.model.name=tsm shifts 16 blocks; "
                                            r"use --config.model.name=tsn"),
    # the TSM repository, MMAction2 and the tsm model shift every other block when layer3 has 23 or more
    ("tsm", 101, lambda stage, block: True, r"the checkpoint shifts 33 blocks and config.model.name=tsm "
                                            r"shifts 18, differing at layer1.1, .*every other one from ResNet-101 on"),
])
def test_a_video_checkpoint_shifts_the_blocks_the_model_shifts(name, depth, shifted, expected):
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    with pytest.raises(convert.ConversionError, match=expected):
        convert_dict(tsm_repo_state_dict(blocks, shifted), name=name, depth=depth, width=8, num_classes=7)


def test_a_resnet_101_tsm_checkpoint_shifting_every_other_block_converts():
    blocks = (3, 4, 23, 3)
    convert_dict(tsm_repo_state_dict(blocks, lambda stage, block: block % 2 == 0), name="tsm", depth=101, width=8,
                 num_classes=7)


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


def test_layouts_are_named_from_the_keys_and_an_unknown_one_lists_them():
    names = {"blvnet_tam": ["baseline_model.conv1.weight", "new_fc.weight"],
             "tsm_repo": ["base_model.conv1.weight", "base_model.layer1.0.conv1.net.weight", "new_fc.weight"],
             "mmaction2": ["backbone.conv1.conv.weight", "cls_head.fc_cls.weight"],
             "torchvision": ["conv1.weight", "layer1.0.conv1.weight", "fc.weight"],
             "blresnet": ["conv1.weight", "b_conv0.weight", "layer1.big.0.conv1.weight", "fc.weight"]}
    assert {convert.detect_layout(keys): name for name, keys in names.items()} == {n: n for n in names}
    assert set(names) == set(convert.LAYOUTS)
    with pytest.raises(convert.ConversionError) as error:
        convert.detect_layout(["encoder.patch_embed.weight", "encoder.blocks.0.attn.qkv.weight"])
    message = str(error.value)
    assert "\n" not in message and "first keys: encoder.patch_embed.weight, encoder.blocks.0.attn.qkv.weight" in message
    assert all(name in message for name in names)


# PyTorch references, module for module as their code defines them (neither torchvision nor MMAction2
# is a test dependency): the weights come from the seeded-weights rule over each model's own keys.

class TorchvisionBottleneck(torch.nn.Module):
    """torchvision.models.resnet.Bottleneck: stride on the 3x3, projection `downsample = (conv, bn)`."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.conv3 = torch.nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(4 * planes)
        self.relu = torch.nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchvisionResNet(torch.nn.Module):
    """torchvision.models.resnet.ResNet with Bottleneck blocks, `width` stem channels (64 in resnet50)."""

    def __init__(self, blocks=(3, 4, 6, 3), num_classes=1000, width=64):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.relu = torch.nn.ReLU()
        self.maxpool = torch.nn.MaxPool2d(3, 2, padding=1)
        inplanes = width
        for stage, count in enumerate(blocks):
            planes, stride = width * 2 ** stage, 1 if stage == 0 else 2
            downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, 4 * planes, 1, stride, bias=False),
                                             torch.nn.BatchNorm2d(4 * planes))
            layers = [TorchvisionBottleneck(inplanes, planes, stride, downsample)]
            layers += [TorchvisionBottleneck(4 * planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{stage + 1}", torch.nn.Sequential(*layers))
            inplanes = 4 * planes
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchTemporalShift(torch.nn.Module):
    """`TemporalShift(net, ...)` of the TSM repository (ops/temporal_shift.py) and of MMAction2
    (resnet_tsm.py), which compute the same: frame t takes the first 1/8 of the channels from frame
    t + 1 and the next 1/8 from t - 1 (zeros past the clip's ends), then runs `net`."""

    def __init__(self, net, num_segments, shift_div=8):
        super().__init__()
        self.net, self.num_segments, self.shift_div = net, num_segments, shift_div

    def forward(self, x):
        nt, c, h, w = x.size()
        x = x.view(nt // self.num_segments, self.num_segments, c, h, w)
        fold = c // self.shift_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
        return self.net(out.view(nt, c, h, w))


def blocks_of(stages):
    return [block for stage in stages for block in stage]


class TSMRepoTSN(torch.nn.Module):
    """The TSM repository's `TSN` (ops/models.py) in eval mode: `base_model` a torchvision ResNet, TSM
    ('blockres') wrapping each block's `conv1`; with dropout its `fc` becomes Dropout and `new_fc`
    the head, without it `fc` is the head; scores averaged over frames. Input `(batch, frames * 3, h, w)`."""

    def __init__(self, resnet, num_classes, num_segments, shift, dropout):
        super().__init__()
        features = resnet.fc.in_features
        resnet.fc = torch.nn.Dropout(dropout) if dropout else torch.nn.Linear(features, num_classes)
        if shift:
            for block in blocks_of([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]):
                block.conv1 = TorchTemporalShift(block.conv1, num_segments)
        self.base_model, self.num_segments = resnet, num_segments
        self.new_fc = torch.nn.Linear(features, num_classes) if dropout else torch.nn.Identity()

    def forward(self, x):
        scores = self.new_fc(self.base_model(x.view((-1, 3) + x.size()[-2:])))
        return scores.view(-1, self.num_segments, scores.size(-1)).mean(1)


class ConvModule(torch.nn.Module):
    """mmcv's ConvModule: `conv`, then `bn`, then ReLU unless act_cfg=None."""

    def __init__(self, conv, bn, relu):
        super().__init__()
        self.conv, self.bn, self.relu = conv, bn, relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class MMActionBottleneck(torch.nn.Module):
    """mmaction.models.backbones.resnet.Bottleneck, style 'pytorch' (stride on conv2), its three
    ConvModules and `downsample` ConvModule made of a torchvision block's convolutions and norms."""

    def __init__(self, block):
        super().__init__()
        self.conv1 = ConvModule(block.conv1, block.bn1, relu=True)
        self.conv2 = ConvModule(block.conv2, block.bn2, relu=True)
        self.conv3 = ConvModule(block.conv3, block.bn3, relu=False)
        self.downsample = None
        if block.downsample is not None:
            self.downsample = ConvModule(block.downsample[0], block.downsample[1], relu=False)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class MMActionRecognizer2D(torch.nn.Module):
    """MMAction2's Recognizer2D in eval mode: `backbone` a ResNet (stem ConvModule `conv1`, max pool,
    layer1-4) or ResNetTSM (shift_place 'blockres': `block.conv1.conv = TemporalShift(block.conv1.conv)`),
    `cls_head` a TSNHead (average consensus, then `fc_cls`) or, with the shift, a TSMHead (`fc_cls`
    per frame, then the average). Input `(batch, frames, 3, h, w)`."""

    def __init__(self, resnet, num_classes, num_segments, shift):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.conv1 = ConvModule(resnet.conv1, resnet.bn1, relu=True)
        self.backbone.maxpool = resnet.maxpool
        self.stages = [f"layer{i}" for i in range(1, 5)]
        for name in self.stages:
            setattr(self.backbone, name, torch.nn.Sequential(*map(MMActionBottleneck, getattr(resnet, name))))
        if shift:
            for block in blocks_of(getattr(self.backbone, name) for name in self.stages):
                block.conv1.conv = TorchTemporalShift(block.conv1.conv, num_segments)
        self.cls_head = torch.nn.Module()
        self.cls_head.fc_cls = torch.nn.Linear(resnet.fc.in_features, num_classes)
        self.num_segments, self.shift = num_segments, shift

    def forward(self, x):
        x = self.backbone.maxpool(self.backbone.conv1(x.view((-1,) + x.shape[2:])))
        for name in self.stages:
            x = getattr(self.backbone, name)(x)
        pooled = x.mean(dim=(2, 3))
        if self.shift:
            scores = self.cls_head.fc_cls(pooled)
            return scores.view(-1, self.num_segments, scores.size(-1)).mean(1)
        return self.cls_head.fc_cls(pooled.view(-1, self.num_segments, pooled.size(-1)).mean(1))


class TorchvisionTSN(TorchvisionResNet):
    """A torchvision ResNet applied per frame, its `fc` the video head, scores averaged over frames.
    Input `(batch, frames * 3, h, w)`."""

    def __init__(self, num_segments, **kwargs):
        super().__init__(**kwargs)
        self.num_segments = num_segments

    def forward(self, x):
        scores = super().forward(x.view((-1, 3) + x.shape[-2:]))
        return scores.view(-1, self.num_segments, scores.size(-1)).mean(1)


def calibrate_batch_norm(model, batch):
    """Running statistics of `batch` in every batch norm (one training-mode pass, cumulative
    averages), as a trained model's would be: otherwise the seeded statistics let the input's
    signal fade and the logits hardly depend on the frames. Leaves the model in eval mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


PARITY_WIDTH, PARITY_SIZE, PARITY_BATCH, PARITY_CLASSES = 16, 64, 2, 11


def parity_resnet():
    return TorchvisionResNet(width=PARITY_WIDTH, num_classes=PARITY_CLASSES)


def tsm_repo_checkpoint(state):
    return {"epoch": 50, "arch": "resnet50", "best_prec1": 47.3,
            "state_dict": {f"module.{key}": value for key, value in state.items()}}


def mmaction2_checkpoint(state):
    return {"meta": {"mmaction_version": "1.2.0", "epoch": 50}, "state_dict": state}


# name: (layout, our model, frames, config.model.dropout, the reference, its checkpoint file's content)
PARITY_CASES = {
    "torchvision_tsn": ("torchvision", "tsn", 3, 0.5, lambda frames: TorchvisionTSN(
        frames, width=PARITY_WIDTH, num_classes=PARITY_CLASSES), lambda state: state),
    "tsm_repo_tsm": ("tsm_repo", "tsm", 8, 0.5, lambda frames: TSMRepoTSN(
        parity_resnet(), PARITY_CLASSES, frames, shift=True, dropout=0.5), tsm_repo_checkpoint),
    "tsm_repo_tsn_nodropout": ("tsm_repo", "tsn", 3, 0.0, lambda frames: TSMRepoTSN(
        parity_resnet(), PARITY_CLASSES, frames, shift=False, dropout=0.0), tsm_repo_checkpoint),
    "mmaction2_tsn": ("mmaction2", "tsn", 3, 0.5, lambda frames: MMActionRecognizer2D(
        parity_resnet(), PARITY_CLASSES, frames, shift=False), mmaction2_checkpoint),
    "mmaction2_tsm": ("mmaction2", "tsm", 8, 0.5, lambda frames: MMActionRecognizer2D(
        parity_resnet(), PARITY_CLASSES, frames, shift=True), mmaction2_checkpoint),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_video_checkpoint_layouts_reproduce_their_pytorch_logits(case, tmp_path):
    """Each layout's own model, seeded, against ours converted from its checkpoint file; a batch of
    two clips, so a TSM shift that crossed clips would show."""
    layout, name, frames, dropout, reference_of, checkpoint_of = PARITY_CASES[case]
    reference = reference_of(frames)
    state = {key: torch.from_numpy(seeded_tensor(key, tuple(value.shape)))
             for key, value in reference.state_dict().items()}
    reference.load_state_dict(state)
    clips = seeded_clip_batch(PARITY_BATCH, frames, PARITY_SIZE)
    official_input = clips.reshape(PARITY_BATCH, frames * 3, PARITY_SIZE, PARITY_SIZE)
    reference_input = torch.from_numpy(clips if layout == "mmaction2" else official_input)
    calibrate_batch_norm(reference, reference_input)
    with torch.no_grad():
        logits = reference(reference_input).numpy()
    torch.save(checkpoint_of(reference.state_dict()), tmp_path / "video.pth")

    tensors = convert.load_state_dict(str(tmp_path / "video.pth"))
    assert convert.detect_layout(tensors) == layout
    model, report = convert_dict(tensors, name=name, width=PARITY_WIDTH, num_frames=frames,
                                 num_classes=PARITY_CLASSES, dropout=dropout)
    assert report.kind.startswith(layout) and "video checkpoint" in report.kind
    assert not report.initialised and not report.ignored
    max_abs_err, max_rel_err = convert.verify(model, clips if layout == "mmaction2" else official_input,
                                              logits, frames)
    print(f"{case}: max_abs_err={max_abs_err:.2e} max_rel_err={max_rel_err:.2e}")
    assert max_rel_err <= convert.VERIFY_TOLERANCE
