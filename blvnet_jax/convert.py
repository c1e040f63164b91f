"""Converts PyTorch weights into an Orbax checkpoint of ours.

    python -m blvnet_jax.convert --checkpoint PATH --config=configs/X.py [--config.a.b=v ...] \
        --output DIR [--verify_input X.npy --verify_logits Y.npy] [--class_names FILE]

Accepted weights (`.pth`/`.pth.tar` read with `torch.load(weights_only=True)`, `.safetensors`, or
`.npz`, with the official key names; `module.` prefixes and `state_dict` wrappers are removed):
- official bLVNet-TAM video checkpoints: `baseline_model.*` plus the head `new_fc.*` (trained with
  dropout) or `baseline_model.fc.*` (without);
- TSN/TSM checkpoints in the same style (`base_model.*`, TSM's `conv1.net.weight`);
- ImageNet backbones: bLResNet of IBM/BigLittleNet for the bLVNet family, torchvision-layout
  ResNet for tsn/tsm/tsn_tam. Their 1000-class `fc` is dropped; the TAM weights and the head keep
  the official initialisation. With `input_channels` other than 3 (optical flow) the first
  convolution is averaged over RGB and repeated, as the official code does.
Every key must land on a parameter of the model the config builds and every parameter must be
filled, except those listed as initialised; anything else is an error that lists the keys.
The output DIR is a workdir: `DIR/checkpoints/0`, read by evaluation and prediction.
"""
import dataclasses
import os
import sys

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from blvnet_jax import checkpoint
from blvnet_jax.models import create_model

TAM_TAPS = {"prev": 0, "curr": 1, "next": 2}
BN_LEAVES = {"running_mean": "mean", "running_var": "var", "bias": "bias"}
VERIFY_TOLERANCE = 1e-4


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
        tensors = torch.load(path, map_location="cpu", weights_only=True)
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
        elif part == "net":  # TSM wraps conv1 of each block as conv1.net
            pass
        else:
            path.append(int(part) if part.isdigit() else part)
        i += 1
    if tap is not None:
        return Target(tuple(path) + ("weight",), tap)
    if leaf == "weight":
        return Target(tuple(path) + ("kernel" if ndim in (2, 4) else "scale",))
    return Target(tuple(path) + (BN_LEAVES[leaf],))


def split_key(key: str) -> tuple[str, str]:
    """`(section, rest)`: section is backbone, head, backbone_fc (the head without dropout) or imagenet_fc."""
    for prefix in ("baseline_model.", "base_model."):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return ("backbone_fc", rest) if rest.startswith("fc.") else ("backbone", rest)
    if key.startswith("new_fc."):
        return "head", key
    if key.startswith("fc."):
        return "imagenet_fc", key
    return "backbone", key


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
    is_video = any(k.startswith(("baseline_model.", "base_model.", "new_fc.")) for k in tensors)
    report = Report("video checkpoint" if is_video else "ImageNet backbone (head and TAM not in it)")
    ours = {path: var for path, var in nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))}
    values, taps, errors, unexpected = {}, {}, [], []
    expected_head = "new_fc" if model_config.dropout > 0 else "baseline_model.fc"
    for key, value in tensors.items():
        section, rest = split_key(key)
        if section == "imagenet_fc":
            report.ignored.append(f"{key} (ImageNet classifier)")
            continue
        if section in ("head", "backbone_fc"):
            found_head = key.rsplit(".", 1)[0]
            if (section == "head") != (model_config.dropout > 0):
                errors.append(f"{key}: the checkpoint's head is {found_head} but config.model.dropout="
                              f"{model_config.dropout} expects {expected_head}; set --config.model.dropout="
                              f"{'0' if section == 'backbone_fc' else '0.5'} to match how it was trained")
                continue
            target = Target(("head", "kernel" if key.endswith("weight") else "bias"))
        else:
            target = backbone_target(rest, value.ndim)
            if target is None:
                report.unused_counters += 1
                continue
            target = Target(("backbone",) + target.path, target.tap)
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
    """`(batch, channels * frames, h, w)` (official, frame-major) -> `(batch, frames, h, w, channels)`."""
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
    flags.DEFINE_string("verify_input", None, "Official-layout input (batch, 3*frames, H, W), normalised, .npy.")
    flags.DEFINE_string("verify_logits", None, "The PyTorch model's logits for verify_input, .npy.")
    flags.DEFINE_string("class_names", None, "Optional text file, one class name per line, stored with the weights.")
    config_flags.DEFINE_config_file("config", None, "Config file describing the model.", lock_config=True)


def main(argv):
    del argv
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
    app.run(main)
