"""Building blocks shared by every model: convolution, batch norm, temporal mixing, resampling.

Feature maps are `(n, height, width, channels)` with `n = clips * frames`, frame-major inside a
clip, as in the official code. Temporal modules are called with the number of clips and reshape
to `(clips, frames, ...)` themselves (`split_clips`): the frames per clip are read from their
input, never stored, so one model takes clips of any length.

With `config.mesh_shape=(data, frames > 1)` the model runs inside `steps.split_frames`'s
`shard_map`: each device holds a contiguous block of every clip's frames of its clips, temporal
operations take their neighbouring frames from the next and previous blocks' devices (a halo of
one frame per tap, `shifted`), and batch norm averages its statistics over all devices.
"""
import functools
from collections.abc import Sequence

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def kaiming_fan_out(key, shape, dtype=jnp.float32):
    """The official convolution init: normal(0, sqrt(2 / fan_out)), kernel `(kh, kw, in, out)`."""
    kernel_h, kernel_w, _, out_channels = shape
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / (out_channels * kernel_h * kernel_w))


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, pointwise_as_dot: bool = True) -> jax.Array:
    """Bias-free convolution of `(n, h, w, in)` by `(k, k, in, out)`, torch padding `k // 2`.

    The kernel (float32) is cast to x's dtype; its gradient comes out in the kernel's dtype
    (`convolution`, `pointwise`). With `pointwise_as_dot`, 1x1 kernels run as a dot product
    (strided ones subsample first), which XLA:CPU executes much faster than a convolution,
    forward and backward.
    """
    if kernel.shape[0] == 1 and pointwise_as_dot:
        if stride > 1:
            x = x[:, ::stride, ::stride, :]
        return pointwise(x, kernel[0, 0])
    return convolution(x, kernel, stride)


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    pad = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def convolution(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """`(n, h, w, in)` by a `(k, k, in, out)` kernel cast to x's dtype, torch padding `k // 2`:
    `(n, ceil(h / stride), ceil(w / stride), out)` in x's dtype.

    The kernel gradient is accumulated and returned in the kernel's dtype (`kernel_gradient`), so a
    bfloat16 model reduces float32 weight gradients over devices; autodiff would produce them in
    bfloat16 and convert after the reduction.
    """
    return _conv(x, kernel.astype(x.dtype), stride)


def _convolution_fwd(x, kernel, stride):
    return convolution(x, kernel, stride), (x, kernel)


def _convolution_bwd(stride, residuals, grad):
    x, kernel = residuals
    x_grad, = jax.vjp(lambda x: _conv(x, kernel.astype(x.dtype), stride), x)[1](grad)
    return x_grad, kernel_gradient(x, grad, kernel.shape[0], stride, kernel.dtype)


convolution.defvjp(_convolution_fwd, _convolution_bwd)


def kernel_gradient(x: jax.Array, grad: jax.Array, kernel_size: int, stride: int, dtype) -> jax.Array:
    """The kernel gradient `(k, k, in, out)` of `convolution` from its input `(n, h, w, in)` and
    output gradient `(n, oh, ow, out)`, accumulated and returned in `dtype`.

    The convolution JAX's transpose rule builds (x's channels as the batch, its `n` contracted,
    the output gradient dilated by the stride), with `preferred_element_type=dtype`.
    """
    pad = kernel_size // 2
    padding = [(pad, stride * (out - 1) + 1 - size + kernel_size - 1 - pad)
               for size, out in zip(x.shape[1:3], grad.shape[1:3])]
    return jax.lax.conv_general_dilated(
        x, grad, window_strides=(1, 1), padding=padding, rhs_dilation=(stride, stride),
        dimension_numbers=("CHWN", "IHWO", "HWNC"), preferred_element_type=dtype)


@jax.custom_vjp
def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 1x1 convolution as a dot: `(n, h, w, in)` x `(in, out)` (cast to x's dtype) -> `(n, h, w, out)`.

    Same values as `jnp.einsum`; the backward pass computes the kernel gradient `x^T grad`,
    accumulated and returned in the kernel's dtype, with the operand of fewer channels on the
    transposed (left) side. Left to autodiff, the product transposes the output gradient whatever
    its size, and XLA:CPU fuses that transpose with the batch-norm backward that produced it,
    recomputing it element by element in transposed order: a quarter of the bLVNet-TAM train step
    (docs/performance.md).
    """
    return jnp.einsum("nhwi,io->nhwo", x, kernel.astype(x.dtype))


def _pointwise_fwd(x, kernel):
    return pointwise(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, grad):
    x, kernel = residuals
    pixels_in, pixels_grad = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    contract_pixels = (((0,), (0,)), ((), ()))
    if x.shape[-1] <= grad.shape[-1]:
        kernel_grad = jax.lax.dot_general(pixels_in, pixels_grad, contract_pixels,
                                          preferred_element_type=kernel.dtype)
    else:
        kernel_grad = jax.lax.dot_general(pixels_grad, pixels_in, contract_pixels,
                                          preferred_element_type=kernel.dtype).T
    return jnp.einsum("nhwo,io->nhwi", grad, kernel.astype(x.dtype)), kernel_grad


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


class Conv(nnx.Module):
    """Bias-free 2-D convolution with torch-style symmetric padding `kernel_size // 2` (`conv2d`);
    a float32 kernel, computed in `dtype`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *,
                 dtype=jnp.float32, pointwise_as_dot: bool = True, rngs: nnx.Rngs):
        self.kernel = nnx.Param(kaiming_fan_out(
            rngs.params(), (kernel_size, kernel_size, in_channels, out_channels)))
        self.kernel_size = kernel_size
        self.stride = stride
        self.dtype = dtype
        self.pointwise_as_dot = pointwise_as_dot

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: `(n, h, w, in)` -> `(n, ceil(h / stride), ceil(w / stride), out)` in `dtype`."""
        return conv2d(x.astype(self.dtype), self.kernel[...], self.stride, self.pointwise_as_dot)


class Float32BatchNorm(nnx.BatchNorm):
    """Batch norm computed in float32 whatever the input's dtype, output cast to `output_dtype`.

    Statistics, scale and bias are never rounded to a bfloat16 compute dtype, and the gradients
    of scale and bias are produced in float32 (flax's `dtype=bfloat16` casts them, and XLA then
    reduces the bfloat16 gradients over devices).
    """

    def __init__(self, channels: int, *, output_dtype, **kwargs):
        super().__init__(channels, dtype=jnp.float32, **kwargs)
        self.output_dtype = output_dtype

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """x: `(..., channels)` -> same shape, in `output_dtype`; statistics over every device's
        examples when the frames are split (`frame_blocks`)."""
        self.axis_name = BATCH_AXES if frame_blocks() > 1 else None
        return super().__call__(x, use_running_average).astype(self.output_dtype)


def batch_norm(channels: int, *, zero_scale: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs) -> Float32BatchNorm:
    """Batch norm with PyTorch's defaults (momentum 0.1, eps 1e-5), output in `dtype`;
    `zero_scale` for a block's last BN."""
    return Float32BatchNorm(channels, output_dtype=dtype, momentum=0.9, epsilon=1e-5,
                            scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
                            rngs=rngs)


@jax.custom_vjp
def scale_channels(x: jax.Array, weight: jax.Array) -> jax.Array:
    """`x * weight` for x `(..., channels)` and `weight` `(channels,)` cast to x's dtype.

    The weight gradient is accumulated and returned in the weight's dtype (float32); autodiff
    would sum the products in x's dtype.
    """
    return x * weight.astype(x.dtype)


def _scale_channels_fwd(x, weight):
    return scale_channels(x, weight), (x, weight)


def _scale_channels_bwd(residuals, grad):
    x, weight = residuals
    weight_grad = jnp.sum(x.astype(weight.dtype) * grad.astype(weight.dtype), axis=tuple(range(x.ndim - 1)))
    return grad * weight.astype(x.dtype), weight_grad


scale_channels.defvjp(_scale_channels_fwd, _scale_channels_bwd)


FRAME_AXIS = "frames"
BATCH_AXES = ("data", "frames")


def frame_blocks() -> int:
    """Over how many devices each clip's frames are split: the size of the mesh axis `frames`
    inside `steps.split_frames`, 1 elsewhere."""
    try:
        return jax.lax.axis_size(FRAME_AXIS)
    except NameError:
        return 1


def split_clips(x: jax.Array, clips: int) -> jax.Array:
    """`(clips * frames, ...)` -> `(clips, frames, ...)`, frame-major inside a clip (a free reshape).

    The frames per clip are x's length over `clips`: with the frames split over devices
    (`frame_blocks() > 1`), this device's block of each clip.
    """
    if x.shape[0] % clips:
        raise ValueError(f"{x.shape[0]} frames do not split into {clips} clips of equal length")
    return x.reshape((clips, x.shape[0] // clips) + x.shape[1:])


def shifted(x: jax.Array, offset: int) -> jax.Array:
    """`out[:, t] = x[:, t + offset]`, zero where `t + offset` falls outside the clip's frames.

    x: `(clips, frames, ...)`; with the frames split over devices (`frame_blocks() > 1`), `frames`
    is this device's block and the `|offset|` frames beyond its edge come from the neighbouring
    block's device (`ppermute`; zero past the clip's first and last block).
    """
    frames, blocks = x.shape[1], frame_blocks()
    if offset == 0:
        return x
    if blocks == 1 and abs(offset) >= frames:
        return jnp.zeros_like(x)
    if abs(offset) > frames:
        raise ValueError(f"a temporal offset of {offset} frames reaches past the neighbouring device's "
                         f"{frames} frames: split the frames over fewer devices (config.mesh_shape)")
    if blocks == 1:
        beyond = jnp.zeros_like(x[:, :abs(offset)])
    elif offset > 0:  # block b needs the first frames of block b + 1
        beyond = jax.lax.ppermute(x[:, :offset], FRAME_AXIS, [(b + 1, b) for b in range(blocks - 1)])
    else:  # block b needs the last frames of block b - 1
        beyond = jax.lax.ppermute(x[:, offset:], FRAME_AXIS, [(b - 1, b) for b in range(1, blocks)])
    if offset > 0:
        return jnp.concatenate([x[:, offset:], beyond], axis=1)
    return jnp.concatenate([beyond, x[:, :offset]], axis=1)


def temporal_mix(x: jax.Array, weights: jax.Array, offsets: Sequence[int]) -> jax.Array:
    """`out[t] = sum_k weights[k] * x[t + offsets[k]]`, zero outside the clip.

    x: `(clips, frames, height, width, channels)`; weights: `(len(offsets), channels)`.
    Written as zero-filled shifted slices, which XLA fuses into a single pass without a padded
    copy; never a depthwise convolution (slow on XLA:CPU) and never a wrap-around roll.
    """
    return sum(scale_channels(shifted(x, offset), weights[tap]) for tap, offset in enumerate(offsets))


def parity_mix(x: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`temporal_mix` over offsets `-r//2 .. r//2`, returned at the even and at the odd frames.

    x: `(clips, frames, h, w, c)`, frames even; weights: `(r, c)`. Returns two
    `(clips, frames // 2, h, w, c)` arrays, the output at frames `2k` and `2k + 1`, computed
    straight from the even and odd input frames, so the full-length output is never built and
    then split.
    """
    streams = x.reshape(x.shape[:1] + (-1, 2) + x.shape[2:])
    parities = (streams[:, :, 0], streams[:, :, 1])
    half = weights.shape[0] // 2
    outputs = []
    for parity in (0, 1):
        terms = [scale_channels(shifted(parities[(parity + offset) % 2], (parity + offset) // 2),
                                weights[offset + half])
                 for offset in range(-half, half + 1)]
        outputs.append(sum(terms))
    return outputs[0], outputs[1]


def pair_taps(weights: jax.Array) -> list[tuple[jax.Array, list[int]]]:
    """Taps that apply a temporal kernel to a clip whose frames come in identical pairs.

    The official network writes each fused feature into both frames of a pair `(2k, 2k+1)` and
    mixes over all frames. With `x[s] = pairs[s // 2]`, output frame `t = 2k + parity` is
    `sum_i w_i pairs[k + (parity + i - r//2) // 2]`: a kernel over pairs per parity, obtained by
    summing the taps that land on the same pair. Returns `[(weights, offsets)]` for parity 0
    (the little-branch frames) and 1 (the big-branch frames).
    """
    half = weights.shape[0] // 2
    taps = []
    for parity in (0, 1):
        pair_offsets = [(parity + i - half) // 2 for i in range(weights.shape[0])]
        offsets = sorted(set(pair_offsets))
        merged = jnp.stack([
            sum(weights[i] for i, o in enumerate(pair_offsets) if o == offset) for offset in offsets])
        taps.append((merged, offsets))
    return taps


class TAM(nnx.Module):
    """Temporal Aggregation Module: `out[t] = ReLU(sum_i w_i * x[t + i - r//2])`, zero-padded.

    `w_i` is a learned per-channel weight (`weight`: `(blending_frames, channels)`, row `i` is the
    official `prev`/`curr`/`next` for r = 3, `blending_layers.i` otherwise). Initialised as the
    official depthwise 1x1 convolutions: normal(0, sqrt(2 / channels)). Its methods take the
    number of clips in their input and read the frames per clip from it (`split_clips`).
    """
    applies_to_shortcut = True

    def __init__(self, channels: int, blending_frames: int = 3, *, rngs: nnx.Rngs):
        if blending_frames % 2 != 1:
            raise ValueError(f"blending_frames must be odd (3, 5, 7, ...), got {blending_frames}")
        self.weight = nnx.Param(jax.random.normal(rngs.params(), (blending_frames, channels))
                                * np.sqrt(2.0 / channels))
        self.blending_frames = blending_frames

    def __call__(self, x: jax.Array, clips: int) -> jax.Array:
        """x: `(clips * frames, height, width, channels)` -> same shape."""
        half = self.blending_frames // 2
        out = temporal_mix(split_clips(x, clips), self.weight[...], range(-half, half + 1))
        return jax.nn.relu(out).reshape(x.shape)

    def by_parity(self, x: jax.Array, clips: int) -> tuple[jax.Array, jax.Array]:
        """The TAM's output at the even and at the odd frames of x `(clips * frames, h, w, c)`:
        two `(clips * frames // 2, h, w, c)` arrays (see `parity_mix`)."""
        even, odd = parity_mix(split_clips(x, clips), self.weight[...])
        return (jax.nn.relu(even).reshape((-1,) + x.shape[1:]),
                jax.nn.relu(odd).reshape((-1,) + x.shape[1:]))

    def paired(self, pairs: jax.Array, clips: int) -> tuple[jax.Array, jax.Array]:
        """The TAM over a clip of duplicated pairs, without building the duplicated tensor.

        pairs: `(clips * frames // 2, height, width, channels)`, one feature per frame pair.
        Returns the outputs at the little (even) frames and at the big (odd) frames, each shaped
        like `pairs`.
        """
        return tuple(jax.nn.relu(temporal_mix(split_clips(pairs, clips), w, offsets)).reshape(pairs.shape)
                     for w, offsets in pair_taps(self.weight[...]))


def shift_weights(channels: int, fold_div: int = 8) -> np.ndarray:
    """TSM's shift as a fixed temporal kernel `(3, channels)` over offsets (-1, 0, +1).

    The first `channels // fold_div` channels take the next frame, the following as many the
    previous frame, the rest stay in place.
    """
    fold = channels // fold_div
    weights = np.zeros((3, channels), np.float32)
    weights[2, :fold] = 1.0
    weights[0, fold:2 * fold] = 1.0
    weights[1, 2 * fold:] = 1.0
    return weights


class TemporalShift(nnx.Module):
    """TSM: shift 1/8 of the channels one frame forward and 1/8 back, zero at clip ends.

    Lives in a bottleneck's residual branch only (the shortcut sees the unshifted input). Like
    `TAM`, its methods take the number of clips and read the frames per clip from their input.
    """
    applies_to_shortcut = False

    def __init__(self, fold_div: int = 8):
        self.fold_div = fold_div

    def __call__(self, x: jax.Array, clips: int) -> jax.Array:
        """x: `(clips * frames, height, width, channels)` -> same shape."""
        video = split_clips(x, clips)
        fold = x.shape[-1] // self.fold_div
        from_next = shifted(video[..., :fold], 1)
        from_prev = shifted(video[..., fold:2 * fold], -1)
        return jnp.concatenate([from_next, from_prev, video[..., 2 * fold:]], axis=-1).reshape(x.shape)

    def by_parity(self, x: jax.Array, clips: int) -> tuple[jax.Array, jax.Array]:
        """The shift's output at the even and at the odd frames of x (see `TAM.by_parity`)."""
        even, odd = parity_mix(split_clips(x, clips), jnp.asarray(shift_weights(x.shape[-1], self.fold_div)))
        return even.reshape((-1,) + x.shape[1:]), odd.reshape((-1,) + x.shape[1:])

    def paired(self, pairs: jax.Array, clips: int) -> tuple[jax.Array, jax.Array]:
        """The shift over a clip of duplicated pairs (see `TAM.paired`)."""
        weights = jnp.asarray(shift_weights(pairs.shape[-1], self.fold_div))
        return tuple(temporal_mix(split_clips(pairs, clips), w, offsets).reshape(pairs.shape)
                     for w, offsets in pair_taps(weights))


def avg_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`nn.AvgPool2d(3, stride=2, padding=1)` (padding counted): `(n, h, w, c)` -> `(n, ceil(h/2), ceil(w/2), c)`."""
    return flax.linen.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                               count_include_pad=True)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """`nn.MaxPool2d(3, stride=2, padding=1)`: `(n, h, w, c)` -> `(n, ceil(h/2), ceil(w/2), c)`."""
    return flax.linen.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source rows of PyTorch's default `interpolate(mode='nearest')`: floor(dst * in / out)."""
    scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def upsample_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
    """Nearest-neighbour resize of `(n, h, w, c)` to `(n, height, width, c)`, as PyTorch does it."""
    n, in_h, in_w, c = x.shape
    if (height, width) == (2 * in_h, 2 * in_w):
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, in_h, 2, in_w, 2, c))
        return x.reshape(n, height, width, c)
    x = jnp.take(x, nearest_indices(in_h, height), axis=1)
    return jnp.take(x, nearest_indices(in_w, width), axis=2)


def recompute_after_gradient(fn):
    """`fn` (array pytrees -> array pytree, no side effects) with a backward pass that keeps only
    its inputs and recomputes it once the gradient of its outputs has arrived.

    Unlike `jax.checkpoint`, the recomputation reads its inputs plus zero times one element of
    each output gradient, so XLA cannot schedule it in the forward pass, where the recomputed
    tensors would stay live through the whole backward pass (an `optimization_barrier` does not
    do it: XLA:CPU removes barriers before scheduling; docs/performance.md, step 5). Same values
    and gradients as `fn` (NaN where an output gradient's first element is not finite).
    """
    @jax.custom_vjp
    def recomputed(*args):
        return fn(*args)

    def forward(*args):
        return fn(*args), args

    def backward(args, grads):
        zero = sum(grad.reshape(-1)[0] for grad in jax.tree.leaves(grads)) * 0
        args = jax.tree.map(lambda arg: arg + zero.astype(arg.dtype), args)
        return jax.vjp(fn, *args)[1](grads)

    recomputed.defvjp(forward, backward)
    return recomputed


def call_recomputed(fn, modules, *args, **static):
    """`fn(modules, *args, **static)` differentiated by `recompute_after_gradient`: the backward
    pass keeps only the arrays `args` and the modules' state; batch-norm statistics update as in a
    plain call. `static`: Python values (such as a clip count), not traced."""
    graphdef, state = nnx.split(modules)

    def pure(state, *args):
        merged = nnx.merge(graphdef, state)
        return fn(merged, *args, **static), nnx.state(merged, nnx.BatchStat)

    outputs, batch_stats = recompute_after_gradient(pure)(state, *args)
    nnx.update(modules, batch_stats)
    return outputs
