"""bLVNet: the Big-Little video network on a bLResNet backbone (alpha = 2, beta = 4).

Layout as in the official code (IBM/bLVNet-TAM, `blvnet_tam_backbone.py`):
- a clip of `frames` frames is read as `frames // 2` pairs `(2k, 2k+1)`; the even frame
  of a pair goes to the little branch (full resolution, channels / alpha), the odd frame to the big
  branch (half resolution, full channels, nearest-upsampled back);
- the fused feature of a pair is shared by both of its frames; a temporal module (TAM or TSM)
  mixes frames at the stem output and at the input of every bL module, and sits in every layer4
  bottleneck, where only one frame per pair is processed.
The official code materialises the duplicated pair features; here each bL module receives one
feature per pair and the temporal module computes both frames' outputs from it (`paired`).

Blocks and temporal modules are called with the number of clips; the frames per clip are read
from the input (`layers.split_clips`), so no module stores a frame count: one model takes clips
of any even length, and a device's block of each clip's frames when they are split over devices.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from blvnet_jax.layers import Conv, avg_pool_3x3_s2, batch_norm, call_recomputed, upsample_nearest

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}

# channels -> temporal module, or None for a network without temporal mixing.
TemporalFactory = Callable[[int], nnx.Module | None]


class Bottleneck(nnx.Module):
    """ResNet bottleneck (stride on the 3x3) with an optional temporal module on its input.

    `pool_shortcut`: the bLResNet shortcut (3x3 average pool, then 1x1 conv) instead of
    torchvision's strided 1x1 convolution. As in the official code, a TAM's output also feeds a
    projection shortcut (an identity shortcut carries the input unmixed); a temporal shift (TSM)
    stays in the residual branch. `pointwise_as_dot`: 1x1 convolutions as dots (`layers.conv2d`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 last_relu: bool = True, temporal: nnx.Module | None = None,
                 pool_shortcut: bool = True, dtype=jnp.float32, pointwise_as_dot: bool = True,
                 rngs: nnx.Rngs):
        mid = out_channels // 4
        self.temporal = temporal
        self.conv1 = Conv(in_channels, mid, 1, dtype=dtype, pointwise_as_dot=pointwise_as_dot, rngs=rngs)
        self.bn1 = batch_norm(mid, dtype=dtype, rngs=rngs)
        self.conv2 = Conv(mid, mid, 3, stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(mid, dtype=dtype, rngs=rngs)
        self.conv3 = Conv(mid, out_channels, 1, dtype=dtype, pointwise_as_dot=pointwise_as_dot, rngs=rngs)
        self.bn3 = batch_norm(out_channels, zero_scale=True, dtype=dtype, rngs=rngs)
        self.shortcut_pool = pool_shortcut and stride != 1
        project = in_channels != out_channels or (stride != 1 and not pool_shortcut)
        conv_stride = 1 if pool_shortcut else stride
        self.shortcut_conv = (Conv(in_channels, out_channels, 1, conv_stride, dtype=dtype,
                                   pointwise_as_dot=pointwise_as_dot, rngs=rngs) if project else None)
        self.shortcut_bn = batch_norm(out_channels, dtype=dtype, rngs=rngs) if project else None
        self.last_relu = last_relu

    def __call__(self, x: jax.Array, clips: int) -> jax.Array:
        """x: `(clips * frames, height, width, in_channels)` -> `(clips * frames, height / stride,
        width / stride, out_channels)`."""
        residual_in = x if self.temporal is None else self.temporal(x, clips)
        out = jax.nn.relu(self.bn1(self.conv1(residual_in)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x
        if self.shortcut_pool or self.shortcut_conv is not None:
            if getattr(self.temporal, "applies_to_shortcut", False):
                shortcut = residual_in
            if self.shortcut_pool:
                shortcut = avg_pool_3x3_s2(shortcut)
            if self.shortcut_conv is not None:
                shortcut = self.shortcut_bn(self.shortcut_conv(shortcut))
        out = out + shortcut
        return jax.nn.relu(out) if self.last_relu else out


def run_blocks(blocks: nnx.List, x: jax.Array, clips: int) -> jax.Array:
    """x: `(clips * frames, h, w, c)` through `blocks` in turn."""
    for block in blocks:
        x = block(x, clips)
    return x


def _call_stage(stage, x: jax.Array, clips: int) -> jax.Array:
    return run_blocks(stage, x, clips) if isinstance(stage, nnx.List) else stage(x, clips)


def apply_stage(stage, x: jax.Array, clips: int, remat: bool) -> jax.Array:
    """Runs a stage (a module or a list of blocks) on x `(clips * frames, h, w, c)`; with `remat`
    the backward pass recomputes its activations instead of keeping them (less memory for long
    clips, more compute)."""
    if remat:
        return nnx.remat(_call_stage, static_argnums=2)(stage, x, clips)
    return _call_stage(stage, x, clips)


def make_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int = 1, *,
               last_relu: bool = True, temporal: TemporalFactory | None = None, temporal_every: int = 1,
               pool_shortcut: bool = True, dtype, pointwise_as_dot: bool = True,
               rngs: nnx.Rngs) -> nnx.List:
    """`num_blocks` bottlenecks; the first changes channels and resolution; blocks 0,
    `temporal_every`, 2 * `temporal_every`, ... get a `temporal` module.

    `last_relu=False` drops the final ReLU of a stage of more than one block (the official big
    branch, which adds the little branch before its ReLU).
    """
    blocks = []
    for index in range(num_blocks):
        block_in = in_channels if index == 0 else out_channels
        blocks.append(Bottleneck(
            block_in, out_channels, stride if index == 0 else 1,
            last_relu=last_relu or num_blocks == 1 or index < num_blocks - 1,
            temporal=temporal(block_in) if temporal and index % temporal_every == 0 else None,
            pool_shortcut=pool_shortcut, dtype=dtype, pointwise_as_dot=pointwise_as_dot, rngs=rngs))
    return nnx.List(blocks)


class BigLittleModule(nnx.Module):
    """One bL stage: a big branch at half resolution, a little one at full resolution, fused."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, alpha: int, beta: int,
                 stride: int, *, temporal: nnx.Module | None, dtype, pointwise_as_dot: bool = True,
                 rngs: nnx.Rngs):
        convs = dict(dtype=dtype, pointwise_as_dot=pointwise_as_dot, rngs=rngs)
        self.temporal = temporal
        self.big = make_stage(in_channels, out_channels, num_blocks - 1, 2, last_relu=False, **convs)
        self.little = make_stage(in_channels, out_channels // alpha, max(1, num_blocks // beta - 1), **convs)
        self.little_expand = Conv(out_channels // alpha, out_channels, 1, **convs)
        self.little_expand_bn = batch_norm(out_channels, dtype=dtype, rngs=rngs)
        self.fusion = make_stage(out_channels, out_channels, 1, stride, **convs)

    def __call__(self, pairs: jax.Array, clips: int) -> jax.Array:
        """pairs: `(clips * pairs_per_clip, h, w, in_channels)`, one feature per frame pair.

        Returns `(clips * pairs_per_clip, h / stride, w / stride, out_channels)`.
        """
        if self.temporal is None:
            little_in = big_in = pairs
        else:
            little_in, big_in = self.temporal.paired(pairs, clips)
        big = run_blocks(self.big, big_in, clips)
        little = self.little_expand_bn(self.little_expand(run_blocks(self.little, little_in, clips)))
        big = upsample_nearest(big, little.shape[1], little.shape[2])
        return run_blocks(self.fusion, jax.nn.relu(big + little), clips)


def stem_branches(modules, x: jax.Array, *, clips: int) -> tuple[jax.Array, jax.Array]:
    """The stem from conv1's output `(clips * frames, h, w, c)` to the first convolution of each
    branch: big `(clips * frames // 2, h / 2, w / 2, c)` (odd frames), little
    `(clips * frames // 2, h, w, c / alpha)` (even frames), with the stem's temporal module
    (None: the frames of each pair as they are).

    `modules`: `(bn1, stem_temporal, b_conv0, l_conv0)`. `BLVNet(recompute_stem=True)` calls it
    through `call_recomputed`: of its 112x112 tensors only conv1's output is kept for the backward
    pass.
    """
    bn1, temporal, b_conv0, l_conv0 = modules
    x = jax.nn.relu(bn1(x))
    if temporal is None:
        frame_pairs = x.reshape((-1, 2) + x.shape[1:])
        little, big = frame_pairs[:, 0], frame_pairs[:, 1]
    else:
        little, big = temporal.by_parity(x, clips)
    return b_conv0(big), l_conv0(little)


class BLVNet(nnx.Module):
    """bLVNet on bLResNet-`depth`: `(clips, frames, h, w, input_channels)`, frames even -> pooled
    features `(clips, frames // 2, 32 * width)`, one per frame pair (layer4 runs on one frame per
    pair). No parameter depends on the frame count, and no module stores it: it is the input's.

    `temporal` builds the module used at every temporal position (TAM for bLVNet-TAM, a shift
    for bLVNet+TSM, None for plain bLVNet). The classifier head lives in `models.VideoClassifier`.
    `pointwise_as_dot` (1x1 convolutions as dots) and `recompute_stem` (`stem_branches` through
    `call_recomputed`) make XLA:CPU fast; either off gives the same values.
    """

    def __init__(self, depth: int, alpha: int, beta: int, *, width: int = 64,
                 input_channels: int = 3, temporal: TemporalFactory | None = None,
                 remat: bool = False, dtype=jnp.float32, pointwise_as_dot: bool = True,
                 recompute_stem: bool = True, rngs: nnx.Rngs):
        blocks = BLOCKS_PER_STAGE[depth]
        temporal = temporal or (lambda channels: None)
        convs = dict(dtype=dtype, pointwise_as_dot=pointwise_as_dot, rngs=rngs)
        self.remat = remat
        self.recompute_stem = recompute_stem
        c = width
        self.conv1 = Conv(input_channels, c, 7, 2, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(c, dtype=dtype, rngs=rngs)
        self.stem_temporal = temporal(c)
        self.b_conv0 = Conv(c, c, 3, 2, dtype=dtype, rngs=rngs)
        self.bn_b0 = batch_norm(c, dtype=dtype, rngs=rngs)
        self.l_conv0 = Conv(c, c // alpha, 3, dtype=dtype, rngs=rngs)
        self.bn_l0 = batch_norm(c // alpha, dtype=dtype, rngs=rngs)
        self.l_conv1 = Conv(c // alpha, c // alpha, 3, 2, dtype=dtype, rngs=rngs)
        self.bn_l1 = batch_norm(c // alpha, dtype=dtype, rngs=rngs)
        self.l_conv2 = Conv(c // alpha, c, 1, **convs)
        self.bn_l2 = batch_norm(c, dtype=dtype, rngs=rngs)
        self.bl_init = Conv(c, c, 1, **convs)
        self.bn_bl_init = batch_norm(c, dtype=dtype, rngs=rngs)
        stage_channels = [c, 4 * c, 8 * c, 16 * c]
        self.layer1, self.layer2, self.layer3 = (
            BigLittleModule(stage_channels[i], stage_channels[i + 1], blocks[i], alpha, beta, stride,
                            temporal=temporal(stage_channels[i]), **convs)
            for i, stride in enumerate((2, 2, 1)))
        self.layer4 = make_stage(16 * c, 32 * c, blocks[3], 2, temporal=temporal, **convs)
        self.num_features = 32 * c

    def __call__(self, video: jax.Array) -> jax.Array:
        """video: `(clips, frames, h, w, input_channels)`; split over devices, this device's block
        of each clip's frames. Returns `(clips, frames // 2, 32 * width)`."""
        clips, frames = video.shape[:2]
        if frames % 2:
            raise ValueError(f"bLVNet reads frames in big/little pairs: got clips of {frames} frames "
                             "(per device when the frames are split)")
        x = video.reshape((clips * frames,) + video.shape[2:])
        stem = (self.bn1, self.stem_temporal, self.b_conv0, self.l_conv0)
        if self.recompute_stem:
            big, little = call_recomputed(stem_branches, stem, self.conv1(x), clips=clips)
        else:
            big, little = stem_branches(stem, self.conv1(x), clips=clips)
        big = self.bn_b0(big)
        little = jax.nn.relu(self.bn_l0(little))
        little = jax.nn.relu(self.bn_l1(self.l_conv1(little)))
        little = self.bn_l2(self.l_conv2(little))
        x = jax.nn.relu(big + little)
        x = jax.nn.relu(self.bn_bl_init(self.bl_init(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = apply_stage(stage, x, clips, self.remat)
        return x.mean(axis=(1, 2)).reshape(clips, frames // 2, -1)
