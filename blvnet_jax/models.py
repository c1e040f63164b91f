"""The model factory: `config.model.name` -> a video classifier.

| name         | backbone   | temporal module                         |
|--------------|------------|-----------------------------------------|
| blvnet_tam   | bLResNet   | TAM (the paper's model)                 |
| blvnet       | bLResNet   | none                                    |
| blvnet_tsm   | bLResNet   | TSM shift at the TAM positions          |
| tsn          | ResNet     | none: 2-D per frame, scores averaged    |
| tsm          | ResNet     | TSM shift in every residual branch (1)  |
| tsn_tam      | ResNet     | TAM at the input of every bottleneck    |

(1) In every other one from ResNet-101 on, as TSM's official code does.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from blvnet_jax.blresnet import BLOCKS_PER_STAGE, BLVNet
from blvnet_jax.layers import FRAME_AXIS, TAM, TemporalShift, frame_blocks
from blvnet_jax.resnet import RESNET_BLOCKS, FrameResNet

MODEL_NAMES = ("blvnet_tam", "blvnet", "blvnet_tsm", "tsn", "tsm", "tsn_tam")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class VideoClassifier(nnx.Module):
    """`(clips, frames, height, width, channels)` float -> logits `(clips, num_classes)` float32.

    Dropout and the linear head apply to each frame's pooled feature and the scores are averaged
    over frames, as in the official code (equal to classifying the averaged feature). The head is
    initialised normal(0, 0.001), bias 0.
    """

    def __init__(self, backbone: nnx.Module, num_classes: int, dropout: float, *, rngs: nnx.Rngs):
        self.backbone = backbone
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(backbone.num_features, num_classes,
                               kernel_init=nnx.initializers.normal(0.001), rngs=rngs)

    def features(self, video: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Pooled features `(clips, num_features)` float32: each frame's through dropout, averaged
        over the frames. `rngs` needs a `dropout` stream in training mode when dropout > 0."""
        features = self.dropout(self.backbone(video).astype(jnp.float32), rngs=rngs).mean(axis=1)
        if frame_blocks() > 1:  # each device holds one block of every clip's frames
            features = jax.lax.pmean(features, FRAME_AXIS)
        return features

    def __call__(self, video: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.head(self.features(video, rngs=rngs))


def check_model_config(model_config) -> None:
    """Raises a ValueError naming the `config.model` field that cannot work."""
    name = model_config.name
    if name not in MODEL_NAMES:
        raise ValueError(f"config.model.name={name!r} is unknown; choose one of {', '.join(MODEL_NAMES)}")
    if model_config.depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"config.model.depth={model_config.depth}: use one of {', '.join(map(str, BLOCKS_PER_STAGE))}")
    if model_config.num_frames < 1 or (name.startswith("blvnet") and model_config.num_frames % 2):
        raise ValueError(f"config.model.num_frames={model_config.num_frames}: bLVNet reads frames in "
                         "big/little pairs, so it needs a positive even count (16 for 8x2)")
    if model_config.blending_frames < 1 or model_config.blending_frames % 2 == 0:
        raise ValueError(f"config.model.blending_frames={model_config.blending_frames}: the TAM kernel is "
                         "centred on the current frame, so it must be odd (3, 5, 7)")
    if model_config.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={model_config.dtype!r}: use one of {', '.join(DTYPES)}")
    if model_config.width < model_config.alpha or model_config.width % model_config.alpha:
        raise ValueError(f"config.model.width={model_config.width} must be a multiple of "
                         f"config.model.alpha={model_config.alpha}")


def create_model(model_config, *, rngs: nnx.Rngs) -> VideoClassifier:
    """Builds the classifier named by `model_config.name` (see the table above)."""
    check_model_config(model_config)
    name = model_config.name
    dtype = DTYPES[model_config.dtype]
    temporal = {
        "tam": lambda channels: TAM(channels, model_config.blending_frames, rngs=rngs),
        "tsm": lambda channels: TemporalShift(),
        None: None,
    }[{"blvnet_tam": "tam", "tsn_tam": "tam", "blvnet_tsm": "tsm", "tsm": "tsm"}.get(name)]
    common = dict(width=model_config.width, input_channels=model_config.input_channels,
                  temporal=temporal, remat=model_config.get("remat", False), dtype=dtype,
                  pointwise_as_dot=model_config.get("pointwise_as_dot", True), rngs=rngs)
    if name.startswith("blvnet"):
        backbone = BLVNet(model_config.depth, model_config.alpha, model_config.beta,
                          recompute_stem=model_config.get("recompute_stem", True), **common)
    else:  # TSM shifts every other block of ResNets whose layer3 has 23 or more (its official code)
        shift_every = 2 if name == "tsm" and RESNET_BLOCKS[model_config.depth][2] >= 23 else 1
        backbone = FrameResNet(model_config.depth, temporal_every=shift_every, **common)
    return VideoClassifier(backbone, model_config.num_classes, model_config.dropout, rngs=rngs)
