"""ResNet baselines applied frame by frame (TSN), with TSM shifts or TAMs in every bottleneck.

torchvision's ResNet layout (stride on the 3x3, strided 1x1 projection shortcuts, 3x3 max pool
after the stem) and block counts, so ImageNet weights in torchvision's key layout load directly.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from blvnet_jax.blresnet import TemporalFactory, apply_stage, make_stage
from blvnet_jax.layers import Conv, batch_norm, max_pool_3x3_s2

# torchvision's ResNets (bLResNet's deeper ones have other counts: blresnet.BLOCKS_PER_STAGE).
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class FrameResNet(nnx.Module):
    """`(clips, frames, h, w, input_channels)` -> pooled features `(clips, frames, 32 * width)`.

    `temporal` builds the module at the input of every `temporal_every`-th bottleneck of a stage
    (TSM: a shift in the residual branch; TSN+TAM: a TAM); None gives TSN. It reads the frames
    per clip from its input (split over devices, this device's block). `pointwise_as_dot`: 1x1
    convolutions as dots.
    """

    def __init__(self, depth: int, *, width: int = 64, input_channels: int = 3,
                 temporal: TemporalFactory | None = None, temporal_every: int = 1, remat: bool = False,
                 dtype=jnp.float32, pointwise_as_dot: bool = True, rngs: nnx.Rngs):
        blocks = RESNET_BLOCKS[depth]
        c = width
        self.remat = remat
        self.conv1 = Conv(input_channels, c, 7, 2, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(c, dtype=dtype, rngs=rngs)
        stage_in = [c, 4 * c, 8 * c, 16 * c]
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            make_stage(stage_in[i], 4 * c * 2 ** i, blocks[i], 1 if i == 0 else 2, temporal=temporal,
                       temporal_every=temporal_every, pool_shortcut=False, dtype=dtype,
                       pointwise_as_dot=pointwise_as_dot, rngs=rngs)
            for i in range(4))
        self.num_features = 32 * c

    def __call__(self, video: jax.Array) -> jax.Array:
        clips, frames = video.shape[:2]
        x = video.reshape((clips * frames,) + video.shape[2:])
        x = max_pool_3x3_s2(jax.nn.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = apply_stage(stage, x, clips, self.remat)
        return x.mean(axis=(1, 2)).reshape(clips, frames, -1)
