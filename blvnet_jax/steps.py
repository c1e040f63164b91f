"""Pure train and eval steps over explicit state: `(state, batch, rng) -> (state, metrics)`.

The model is split once into a graph definition (static) and its `params` / `batch_stats`
(pytrees); the steps merge them inside `jax.jit`, so no Python walks the graph per step.
A batch is `{'video': uint8 (batch, frames, height, width, channels), 'label': int32 (batch,)}`;
the cast and ImageNet normalisation run on the device, and for a training batch from
`config.data.resize_on_device` also the resize and flip of its crop windows (`model_input`).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def standardize(pixels: jax.Array) -> jax.Array:
    """float32 RGB `(..., 3)` in [0, 255] -> normalised with the ImageNet mean/std."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
    std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0
    return (pixels - mean) / std


def normalize(video: jax.Array) -> jax.Array:
    """uint8 `(..., 3)` RGB in [0, 255] -> float32 normalised with ImageNet mean/std.

    Float inputs (already normalised clips, stacked optical flow) pass through as float32.
    """
    if video.dtype != jnp.uint8:
        return video.astype(jnp.float32)
    return standardize(video.astype(jnp.float32))


def _bilinear_taps(length: jax.Array, size: int):
    """TF's half-pixel bilinear sampling of `length` (batch,) input pixels at `size` outputs:
    (lower, upper) int32 `(batch, size)` input indices, clamped to the input, and the float32
    weight of `upper`."""
    position = (jnp.arange(size, dtype=jnp.float32) + 0.5) * (
        length.astype(jnp.float32)[:, None] / size) - 0.5
    floor = jnp.floor(position)
    lower = jnp.maximum(floor, 0.0).astype(jnp.int32)
    upper = jnp.minimum(jnp.ceil(position).astype(jnp.int32), length[:, None] - 1)
    return lower, upper, position - floor


def resize_windows(video: jax.Array, window: jax.Array, flip: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of each clip's top-left window to `(size, size)`, mirrored where `flip`.

    video: uint8 `(batch, frames, side, side, 3)`; window: int32 `(batch, 2)` [height, width];
    flip: bool `(batch,)` -> float32 `(batch, frames, size, size, 3)` in [0, 255]. The arithmetic
    of `tf.image.resize` (half-pixel centres, no antialiasing, edge pixels repeated), so pixels
    outside the window are never read and a window of `(size, size)` comes out unchanged.
    """
    left, right, right_weight = _bilinear_taps(window[:, 1], size)
    mirrored = lambda taps: jnp.where(flip[:, None], taps[:, ::-1], taps)
    left, right, right_weight = map(mirrored, (left, right, right_weight))
    top, bottom, bottom_weight = _bilinear_taps(window[:, 0], size)

    def lerp(pixels, lower, upper, weight, axis):
        shape = [len(weight), 1, 1, 1, 1]
        shape[axis] = size
        gather = lambda index: jnp.take_along_axis(pixels, index.reshape(shape), axis)
        low = gather(lower)
        return low + (gather(upper) - low) * weight.reshape(shape)

    columns = lerp(video.astype(jnp.float32), left, right, right_weight, axis=3)
    return lerp(columns, top, bottom, bottom_weight, axis=2)


def model_input(batch: dict, crop_size: int | None) -> jax.Array:
    """The float32 model input `(batch, frames, crop, crop, channels)` of a training batch.

    A batch with 'window' and 'flip' (`config.data.resize_on_device`) holds decoded windows that
    are resized to `crop_size` and flipped here; otherwise 'video' is only normalised.
    """
    if "window" not in batch:
        return normalize(batch["video"])
    if crop_size is None:
        raise ValueError("a batch of windows to resize needs the train step's crop_size")
    return standardize(resize_windows(batch["video"], batch["window"], batch["flip"], crop_size))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a train step reads and writes."""
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy; logits `(batch, classes)`, labels int `(batch,)`."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing) \
        if label_smoothing else jax.nn.one_hot(labels, logits.shape[-1])
    return optax.softmax_cross_entropy(logits, targets).mean()


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation
                     ) -> tuple[nnx.GraphDef, TrainState]:
    """Splits a model (switched to training mode) into its graph definition and a TrainState."""
    model.train()
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return graphdef, TrainState(params, batch_stats, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    label_smoothing: float = 0.0, skip_nonfinite: bool = False, crop_size: int | None = None):
    """`train_step(state, batch, rng) -> (state, {'loss', 'accuracy', 'grad_norm', 'skipped'})`, to be jitted.

    `crop_size`: the side the windows of a `resize_on_device` batch are resized to (`model_input`).

    `skip_nonfinite`: a step whose loss or gradient norm is NaN/inf leaves parameters, batch
    statistics and optimizer state as they were (`skipped` = 1) instead of applying the update.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        video = model_input(batch, crop_size)
        dropout_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params, batch_stats):
            model = nnx.merge(graphdef, params, batch_stats, copy=True)
            logits = model(video, rngs=nnx.Rngs(dropout=dropout_rng))
            loss = cross_entropy(logits, batch["label"], label_smoothing)
            return loss, (logits, nnx.state(model, nnx.BatchStat))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.global_norm(grads)
        skip = skip_nonfinite & jnp.logical_not(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
        if skip_nonfinite:
            params, batch_stats, opt_state = jax.tree.map(
                lambda new, old: jnp.where(skip, old, new),
                (params, batch_stats, opt_state), (state.params, state.batch_stats, state.opt_state))
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return (TrainState(params, batch_stats, opt_state, state.step + 1),
                {"loss": loss, "accuracy": accuracy, "grad_norm": grad_norm, "skipped": skip.astype(jnp.float32)})

    return train_step


def make_eval_step(graphdef: nnx.GraphDef):
    """`eval_step(params, batch_stats, video) -> logits (batch, classes)` with running statistics.

    `graphdef` may come from a model in either mode; evaluation always runs in eval mode.
    """

    def eval_step(params, batch_stats, video):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        model.eval()
        return model(normalize(video))

    return eval_step


def memory_figures(compiled) -> dict:
    """XLA's memory analysis of a compiled step, in bytes per device; `step_bytes` is what it needs
    at once: arguments + outputs + temporaries, less the outputs written over donated arguments."""
    memory = compiled.memory_analysis()
    figures = {"argument_bytes": int(memory.argument_size_in_bytes),
               "output_bytes": int(memory.output_size_in_bytes),
               "temp_bytes": int(memory.temp_size_in_bytes),
               "alias_bytes": int(memory.alias_size_in_bytes)}
    figures["step_bytes"] = (figures["argument_bytes"] + figures["output_bytes"] + figures["temp_bytes"]
                             - figures["alias_bytes"])
    return figures
