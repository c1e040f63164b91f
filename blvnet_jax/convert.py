"""Converts PyTorch weights into an Orbax checkpoint of ours.

    python -m blvnet_jax.convert --checkpoint PATH --config=configs/X.py [--config.a.b=v ...] \
        --output DIR [--verify_input X.npy --verify_logits Y.npy] [--class_names FILE]

Weights: `.pth`/`.pth.tar` (read with `torch.load(weights_only=True)`), `.safetensors` or `.npz`;
`module.` prefixes and `state_dict`/`model` wrappers are removed. The key layout is read from the
keys (`detect_layout`, names in `LAYOUTS`):
- `blvnet_tam`: official bLVNet-TAM video checkpoints, `baseline_model.*` plus the head `new_fc.*`
  (trained with dropout) or `baseline_model.fc.*` (without);
- `tsm_repo`: the TSM repository's TSN/TSM checkpoints, the same style with `base_model.*` and
  TSM's shifted `conv1.net.weight`;
- `mmaction2`: MMAction2's TSN/TSM recognizers, `backbone.*` with its conv+bn modules
  (`conv1.conv`, `conv1.bn`, TSM's `conv1.conv.net`, `downsample.conv`) and `cls_head.fc_cls.*`;
- `torchvision`: torchvision-layout ResNet (`conv1.*`, `bn1.*`, `layerN.*`, `fc.*`) for tsn/tsm/
  tsn_tam; `blresnet`: IBM/BigLittleNet's ImageNet bLResNet for the bLVNet family. An `fc` with
  config.model.num_classes rows is the video head; a 1000-class `fc` is ImageNet's, dropped, and
  then the TAM weights and the head keep the official initialisation. With `input_channels` other
  than 3 (optical flow) an ImageNet first convolution is averaged over RGB and repeated, as the
  official code does.
Every key must land on a parameter of the model the config builds and every parameter must be
filled, except those listed as initialised; a video checkpoint must shift (TSM) exactly the blocks
that the model shifts. Anything else is an error that lists the keys.
The output DIR is a workdir: `DIR/checkpoints/0`, read by evaluation and prediction.
"""
import dataclasses
import os
import pickle
import re
import sys

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from blvnet_jax import checkpoint, cli, quiet
from blvnet_jax.blresnet import Bottleneck
from blvnet_jax.layers import TemporalShift
from blvnet_jax.models import create_model

TAM_TAPS = {"prev": 0, "curr": 1, "next": 2}
BN_LEAVES = {"running_mean": "mean", "running_var": "var", "bias": "bias"}
VERIFY_TOLERANCE = 1e-4
IMAGENET_CLASSES = 1000
LAYOUTS = {
    "blvnet_tam": "IBM/bLVNet-TAM: baseline_model.*, new_fc.* or baseline_model.fc.*",
    "tsm_repo": "mit-han-lab/temporal-shift-module: base_model.*, new_fc.* or base_model.fc.*",
    "mmaction2": "MMAction2 Recognizer2D: backbone.*, cls_head.fc_cls.*",
    "torchvision": "torchvision ResNet: conv1.*, bn1.*, layerN.*, fc.*",
    "blresnet": "IBM/BigLittleNet ImageNet bLResNet: conv1.*, b_conv0.*, layerN.big.*, fc.*",
}
VIDEO_PREFIXES = {"blvnet_tam": "baseline_model.", "tsm_repo": "base_model."}


class ConversionError(ValueError):
    """The checkpoint does not fit the model the config describes."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a checkpoint file into `{official key: float32 array}` without `module.` prefixes."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        tensors = load_file(path)
    elif path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            tensors = {key: archive[key] for key in archive.files}
    else:
        try:
            import torch
        except ImportError as error:
            raise ImportError(f"reading {path} needs PyTorch (pip install torch), or convert it to "
                              ".safetensors / .npz elsewhere") from error
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(
                f"{path}: {error}\nIt holds Python objects besides tensors, which are not loaded (no pickled "
                "code runs here). Save its state_dict alone where you trust the file, or publish an MMAction2 "
                "checkpoint with its tools/deployment/publish_model.py") from error
        for wrapper in ("state_dict", "model"):
            if isinstance(tensors, dict) and isinstance(tensors.get(wrapper), dict):
                tensors = tensors[wrapper]
        tensors = {key: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
                   for key, value in tensors.items() if isinstance(value, torch.Tensor)}
    return {key.removeprefix("module."): np.asarray(value) for key, value in tensors.items()}


@dataclasses.dataclass
class Target:
    """Where one checkpoint tensor goes: a parameter path, and the TAM tap for TAM weights."""
    path: tuple
    tap: int | None = None


def backbone_target(key: str, ndim: int) -> Target | None:
    """Maps a backbone key (`layer1.big.0.downsample.1.weight`) to our parameter path.

    Returns None for buffers that carry no state of ours (`num_batches_tracked`).
    """
    parts = key.split(".")
    leaf = parts.pop()
    if leaf == "num_batches_tracked":
        return None
    path, tap, i = [], None, 0
    while i < len(parts):
        part = parts[i]
        if part == "tam":
            path.append("stem_temporal" if i == 0 else "temporal")
        elif part in TAM_TAPS:
            tap = TAM_TAPS[part]
        elif part == "blending_layers":
            tap = int(parts[i + 1])
            i += 1
        elif part == "little_e":
            path.append("little_expand" if parts[i + 1] == "0" else "little_expand_bn")
            i += 1
        elif part == "downsample":
            path.append("shortcut_conv" if leaf == "weight" and ndim == 4 else "shortcut_bn")
            i += 1
        elif part == "net" and parts[i - 1] == "conv1":  # TSM wraps conv1 of a block as conv1.net
            pass
        else:
            path.append(int(part) if part.isdigit() else part)
        i += 1
    if tap is not None:
        return Target(tuple(path) + ("weight",), tap)
    if leaf == "weight":
        return Target(tuple(path) + ("kernel" if ndim in (2, 4) else "scale",))
    return Target(tuple(path) + (BN_LEAVES[leaf],))


def detect_layout(keys) -> str:
    """The name (a key of `LAYOUTS`) of the layout of a state dict's keys; raises ConversionError."""
    keys = list(keys)

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if has("baseline_model."):
        return "blvnet_tam"
    if has("base_model."):
        return "tsm_repo"
    if has("backbone.") or has("cls_head."):
        return "mmaction2"
    if "conv1.weight" in keys and has("layer1."):
        return "blresnet" if any(".big." in key for key in keys) else "torchvision"
    raise ConversionError(f"unknown checkpoint layout (first keys: {', '.join(keys[:5]) or 'none'}); known: "
                          + "; ".join(f"{name} ({description})" for name, description in LAYOUTS.items()))


def mmaction_backbone_key(key: str) -> str:
    """MMAction2's ResNet key in torchvision's names: its ConvModules hold `conv` and `bn`, and TSM
    wraps the conv alone (`layer1.0.conv1.conv.net.weight` -> `layer1.0.conv1.net.weight`,
    `layer1.0.conv1.bn.bias` -> `layer1.0.bn1.bias`, `downsample.conv`/`.bn` -> `downsample.0`/`.1`).
    A torchvision backbone inside MMAction2 (`torchvision.resnet50`) is left as it is."""
    key = re.sub(r"\bconv(\d)\.conv\.", r"conv\1.", key)
    key = re.sub(r"\bconv(\d)\.bn\.", r"bn\1.", key)
    return key.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")


def split_key(key: str, layout: str) -> tuple[str, str]:
    """`(section, rest)` of a key of `layout`: section is backbone; head (`new_fc`, trained with
    dropout); backbone_fc (the official head without dropout); video_head (MMAction2's); fc (an
    unprefixed `fc`: the video head or ImageNet's, by its class count); normalisation (MMAction2's
    input mean and std); or foreign (not of the layout)."""
    if layout in VIDEO_PREFIXES:
        prefix = VIDEO_PREFIXES[layout]
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return ("backbone_fc", rest) if rest.startswith("fc.") else ("backbone", rest)
        return ("head", key) if key.startswith("new_fc.") else ("foreign", key)
    if layout == "mmaction2":
        if key.startswith("backbone."):
            return "backbone", mmaction_backbone_key(key[len("backbone."):])
        if key in ("data_preprocessor.mean", "data_preprocessor.std"):
            return "normalisation", key
        return ("video_head", key) if key.startswith("cls_head.fc_cls.") else ("foreign", key)
    return ("fc", key) if key.startswith("fc.") else ("backbone", key)


def shifted_blocks(model: nnx.Module) -> set[tuple]:
    """Paths `("backbone", "layer1", 0)` of the bottlenecks whose residual branch has a TSM shift."""
    return {path for path, module in nnx.iter_modules(model)
            if isinstance(module, Bottleneck) and isinstance(module.temporal, TemporalShift)}


def shift_mismatch(found: set, expected: set, model_config) -> str:
    """The error for a video checkpoint whose TSM shifts (`conv1.net` keys) are not the model's."""
    name = f"config.model.name={model_config.name}"
    if not expected:
        return (f"the checkpoint shifts channels in time (TSM, conv1.net keys) in {len(found)} blocks, but "
                f"{name} shifts none; use --config.model.name=tsm")
    if not found:
        return (f"the checkpoint has no temporal shift (no conv1.net keys), but {name} shifts "
                f"{len(expected)} blocks; use --config.model.name=tsn")
    in_order = sorted(found ^ expected, key=lambda path: tuple(f"{p:04d}" if isinstance(p, int) else p for p in path))
    differ = ", ".join(path_name(path[1:]) for path in in_order[:4])
    return (f"the checkpoint shifts {len(found)} blocks and {name} shifts {len(expected)}, differing at "
            f"{differ}: TSM's code, and the tsm model, shift every block of ResNet-50 and every other one "
            "from ResNet-101 on (layer3 of 23 blocks or more); this checkpoint was made otherwise")


def torch_layout(shape: tuple) -> tuple:
    """Our parameter shape written as the checkpoint stores it (for error messages)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))


def to_our_layout(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # linear (out, in) -> (in, out)
        return value.T
    return value


@dataclasses.dataclass
class Report:
    """What a conversion did besides copying: for the user to read, never silent."""
    kind: str
    copied: int = 0
    unused_counters: int = 0
    ignored: list = dataclasses.field(default_factory=list)
    adapted: list = dataclasses.field(default_factory=list)
    initialised: list = dataclasses.field(default_factory=list)

    def __str__(self):
        lines = [f"checkpoint kind: {self.kind}; {self.copied} tensors copied; "
                 f"{self.unused_counters} batch-norm num_batches_tracked counters not needed"]
        if self.ignored:
            lines.append(f"ignored ({len(self.ignored)}): {', '.join(self.ignored)}")
        if self.adapted:
            lines.append(f"adapted: {', '.join(self.adapted)}")
        if self.initialised:
            lines.append(f"kept at the official initialisation ({len(self.initialised)}): "
                         f"{', '.join(self.initialised)}")
        return "\n".join(lines)


def path_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def convert_into(model: nnx.Module, tensors: dict[str, np.ndarray], model_config) -> Report:
    """Copies `tensors` (official key names) into `model` in place; raises ConversionError."""
    layout = detect_layout(tensors)
    fc = tensors.get("fc.weight", tensors.get("fc.bias")) if layout in ("torchvision", "blresnet") else None
    fc_classes = None if fc is None else fc.shape[0]
    is_video = layout in VIDEO_PREFIXES or layout == "mmaction2" or fc_classes == model_config.num_classes
    report = Report(f"{layout} ({LAYOUTS[layout]}), " + (
        "video checkpoint" if is_video else "ImageNet backbone (head and temporal weights not in it)"))
    ours = {path: var for path, var in nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))}
    values, taps, errors, unexpected, shifted = {}, {}, [], [], set()
    for key, value in tensors.items():
        section, rest = split_key(key, layout)
        if section == "foreign":
            unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        if section == "normalisation":
            report.ignored.append(f"{key} {[round(float(v), 3) for v in value.reshape(-1)]} (MMAction2's input "
                                  "normalisation on 0-255 pixels; ours: ImageNet's RGB mean/std, steps.py)")
            continue
        if section == "fc" and not is_video:
            if fc_classes == IMAGENET_CLASSES:
                report.ignored.append(f"{key} (ImageNet's {IMAGENET_CLASSES}-class classifier; config.model."
                                      f"num_classes={model_config.num_classes}, so the head is initialised)")
            elif key == "fc.weight" or "fc.weight" not in tensors:
                errors.append(f"{key}: an fc of {fc_classes} classes is neither the video head (config.model."
                              f"num_classes={model_config.num_classes}) nor ImageNet's ({IMAGENET_CLASSES})")
            continue
        if section in ("head", "backbone_fc"):
            found_head = key.rsplit(".", 1)[0]
            expected_head = "new_fc" if model_config.dropout > 0 else f"{VIDEO_PREFIXES[layout]}fc"
            if (section == "head") != (model_config.dropout > 0):
                errors.append(f"{key}: the checkpoint's head is {found_head} but config.model.dropout="
                              f"{model_config.dropout} expects {expected_head}; set --config.model.dropout="
                              f"{'0' if section == 'backbone_fc' else '0.5'} to match how it was trained")
                continue
        if section in ("head", "backbone_fc", "video_head", "fc"):
            target = Target(("head", "kernel" if key.endswith("weight") else "bias"))
        else:
            target = backbone_target(rest, value.ndim)
            if target is None:
                report.unused_counters += 1
                continue
            target = Target(("backbone",) + target.path, target.tap)
            if ".conv1.net." in rest:
                shifted.add(target.path[:target.path.index("conv1")])
        if target.path not in ours:
            unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        expected = ours[target.path][...].shape
        if target.tap is not None:
            blending_frames = expected[0]
            if target.tap >= blending_frames or value.shape != (expected[1], 1, 1, 1):
                errors.append(f"{key}: checkpoint shape {tuple(value.shape)} (TAM tap {target.tap}), but the "
                              f"model expects {blending_frames} taps of shape {(expected[1], 1, 1, 1)} "
                              f"(config.model.blending_frames={blending_frames})")
                continue
            taps.setdefault(target.path, {})[target.tap] = (key, value.reshape(-1))
            continue
        value = to_our_layout(value)
        if target.path == ("backbone", "conv1", "kernel") and not is_video and value.shape[2] == 3 != expected[2]:
            value = np.repeat(value.mean(axis=2, keepdims=True), expected[2], axis=2)
            report.adapted.append(f"{key}: RGB kernel averaged and repeated over {expected[2]} input channels")
        if value.shape != expected:
            hint = " (config.model.num_classes?)" if target.path[0] == "head" else ""
            errors.append(f"{key}: checkpoint shape {torch_layout(value.shape)}, but the model built from "
                          f"the config expects {torch_layout(expected)}{hint}")
            continue
        values[target.path] = value
    for path, rows in taps.items():
        blending_frames, channels = ours[path][...].shape
        if sorted(rows) == list(range(blending_frames)):
            values[path] = np.stack([rows[i][1] for i in range(blending_frames)])
        else:
            keys = ", ".join(key for key, _ in rows.values())
            errors.append(f"{keys}: {len(rows)} TAM taps of shape {(channels, 1, 1, 1)} in the checkpoint "
                          f"(blending_frames={len(rows)}), but the model expects {blending_frames} "
                          f"(config.model.blending_frames={blending_frames})")
    if is_video and shifted != shifted_blocks(model):
        errors.append(shift_mismatch(shifted, shifted_blocks(model), model_config))
    missing = [path for path in ours if path not in values and path not in taps]
    if not is_video:
        for path in [p for p in missing if p[0] == "head" or p[-2] in ("temporal", "stem_temporal")]:
            report.initialised.append(path_name(path))
            missing.remove(path)
    if unexpected:
        errors.append(f"{len(unexpected)} checkpoint keys have no place in the model "
                      f"({model_config.name}, depth {model_config.depth}): {', '.join(unexpected)}")
    if missing:
        errors.append(f"{len(missing)} model parameters are not in the checkpoint: "
                      f"{', '.join(path_name(p) for p in missing)}")
    if errors:
        raise ConversionError("the checkpoint does not fit the config:\n  " + "\n  ".join(errors))
    for path, value in values.items():
        ours[path][...] = value.astype(ours[path][...].dtype)
    report.copied = len(values)
    return report


def official_to_clips(batch: np.ndarray, num_frames: int) -> np.ndarray:
    """`(batch, channels * frames, h, w)` (official, frame-major) or `(batch, frames, channels, h, w)`
    (MMAction2's) -> `(batch, frames, h, w, channels)`."""
    if batch.ndim == 5:
        batch = batch.reshape(batch.shape[0], -1, *batch.shape[3:])
    n, channels_frames, h, w = batch.shape
    return batch.reshape(n, num_frames, channels_frames // num_frames, h, w).transpose(0, 1, 3, 4, 2)


def highest_precision_forward(graphdef: nnx.GraphDef):
    """`forward(state, video) -> logits (batch, classes)` with every convolution and dot at HIGHEST
    precision: full float32 on any platform, where GPUs default to TF32 and TPUs to one bf16 pass."""

    def forward(state, video):
        with jax.default_matmul_precision("highest"):
            return nnx.merge(graphdef, state)(video)

    return forward


def verify(model: nnx.Module, official_input: np.ndarray, official_logits: np.ndarray,
           num_frames: int) -> tuple[float, float]:
    """Runs the model in eval mode at HIGHEST precision (`highest_precision_forward`); returns
    `(max_abs_err, max_rel_err)` against the official logits."""
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(highest_precision_forward(graphdef))
    logits = np.asarray(forward(state, official_to_clips(official_input, num_frames)))
    max_abs_err = float(np.max(np.abs(logits - official_logits)))
    return max_abs_err, max_abs_err / float(np.max(np.abs(official_logits)))


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    flags.DEFINE_string("checkpoint", None, "PyTorch .pth/.pth.tar, .safetensors or .npz weights.")
    flags.DEFINE_string("output", None, "Workdir to write the Orbax checkpoint into (DIR/checkpoints/0).")
    flags.DEFINE_string("verify_input", None,
                        "Normalised input, (batch, 3*frames, H, W) or (batch, frames, 3, H, W), .npy.")
    flags.DEFINE_string("verify_logits", None, "The PyTorch model's logits for verify_input, .npy.")
    flags.DEFINE_string("class_names", None, "Optional text file, one class name per line, stored with the weights.")
    config_flags.DEFINE_config_file("config", None, "Config file describing the model.", lock_config=True)


def main(argv):
    del argv
    quiet.quiet_libraries()
    config = FLAGS.config
    model = create_model(config.model, rngs=nnx.Rngs(config.get("seed", 0)))
    try:
        report = convert_into(model, load_state_dict(FLAGS.checkpoint), config.model)
    except ConversionError as error:
        sys.exit(f"{FLAGS.checkpoint}: {error}")
    print(report)
    class_names = None
    if FLAGS.class_names:
        with open(FLAGS.class_names) as f:
            class_names = [line.strip() for line in f if line.strip()]
    print(f"wrote {checkpoint.save_model(FLAGS.output, 0, model, config, class_names)}")
    if FLAGS.verify_input or FLAGS.verify_logits:
        if not (FLAGS.verify_input and FLAGS.verify_logits):
            sys.exit("--verify_input and --verify_logits go together")
        max_abs_err, max_rel_err = verify(model, np.load(FLAGS.verify_input), np.load(FLAGS.verify_logits),
                                          config.model.num_frames)
        print(f"max_abs_err={max_abs_err:.3e} max_rel_err={max_rel_err:.3e}")
        if max_rel_err > VERIFY_TOLERANCE:
            sys.exit(f"verification failed: max_rel_err {max_rel_err:.3e} > {VERIFY_TOLERANCE}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["checkpoint", "config", "output"])
    app.run(main, flags_parser=cli.parse_flags)
