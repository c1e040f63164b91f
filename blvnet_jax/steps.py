"""Pure train and eval steps over explicit state: `(state, batch, rng) -> (state, metrics)`.

The model is split once into a graph definition (static) and its `params` / `batch_stats`
(pytrees); the steps merge them inside `jax.jit`, so no Python walks the graph per step.
A batch is `{'video': uint8 (batch, frames, height, width, channels), 'label': int32 (batch,)}`;
the cast and ImageNet normalisation run on the device.
`build_train_step` is the one training program, with the config's optimizer and learning-rate
schedule: the training loop, the cost summary and the speed benchmark all compile it.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from blvnet_jax.layers import FRAME_AXIS
from blvnet_jax.sharding import replicated

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(video: jax.Array) -> jax.Array:
    """uint8 `(..., 3)` RGB in [0, 255] -> float32 normalised with ImageNet mean/std.

    Float inputs (already normalised clips, stacked optical flow) pass through as float32.
    """
    if video.dtype != jnp.uint8:
        return video.astype(jnp.float32)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
    std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0
    return (video.astype(jnp.float32) - mean) / std


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


def model_forward(graphdef: nnx.GraphDef, train: bool):
    """`forward(params, batch_stats, video, rng) -> (logits, batch_stats)`: the model in training
    mode (dropout from `rng`, batch statistics updated) or in eval mode (running statistics)."""

    def forward(params, batch_stats, video, rng):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        if train:
            logits = model(video, rngs=nnx.Rngs(dropout=rng))
        else:
            model.eval()
            logits = model(video)
        return logits, nnx.state(model, nnx.BatchStat)

    return forward


def split_frames(forward, mesh: jax.sharding.Mesh | None):
    """`forward` (`model_forward`'s) with each clip's frames split over the mesh's `frames` axis.

    An explicit `shard_map`: every device runs the model on its clips' block of frames; temporal
    modules exchange one-frame halos with the neighbouring blocks' devices (`layers.shifted`),
    batch norm averages its statistics over all devices, and the classifier its frames'
    features over the blocks. Dropout draws per device. Unchanged without a mesh or with one
    device on `frames` (XLA then shards the batch over `data` by itself). `check_vma=False`: our
    custom VJPs return each device's part of a replicated parameter's gradient, which the typed
    mode rejects; the transpose of the replicated inputs sums them (tests/test_train.py compares
    with one device).
    """
    if mesh is None or mesh.shape[FRAME_AXIS] == 1:
        return forward
    blocks = mesh.shape[FRAME_AXIS]

    def per_device(params, batch_stats, video, rng):
        device = jax.lax.axis_index("data") * blocks + jax.lax.axis_index(FRAME_AXIS)
        return forward(params, batch_stats, video, jax.random.fold_in(rng, device))

    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P("data", FRAME_AXIS), P()),
                         out_specs=(P("data"), P()), check_vma=False)


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    label_smoothing: float = 0.0, skip_nonfinite: bool = False,
                    mesh: jax.sharding.Mesh | None = None):
    """`train_step(state, batch, rng) -> (state, {'loss', 'accuracy', 'grad_norm', 'skipped'})`, to be jitted.

    `mesh`: with more than one device on its `frames` axis, the model runs on split frames
    (`split_frames`).

    `skip_nonfinite`: a step whose loss or gradient norm is NaN/inf leaves parameters, batch
    statistics and optimizer state as they were (`skipped` = 1) instead of applying the update.
    """

    forward = split_frames(model_forward(graphdef, train=True), mesh)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        video = normalize(batch["video"])
        dropout_rng = jax.random.fold_in(rng, state.step)

        def loss_fn(params, batch_stats):
            logits, batch_stats = forward(params, batch_stats, video, dropout_rng)
            return cross_entropy(logits, batch["label"], label_smoothing), (logits, batch_stats)

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


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Warm-up, then cosine to 0 or x`lr_decay_factor` at each epoch of `lr_decay_epochs`."""
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    if config.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, max(1, total_steps - warmup_steps))
    elif config.lr_schedule == "multistep":
        main = optax.piecewise_constant_schedule(config.learning_rate, {
            int(epoch * steps_per_epoch) - warmup_steps: config.lr_decay_factor for epoch in config.lr_decay_epochs})
    else:
        raise ValueError(f"config.lr_schedule={config.lr_schedule!r}: use 'cosine' or 'multistep'")
    if not warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, config.learning_rate, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def measurement_schedule(config) -> optax.Schedule:
    """`config`'s schedule at a nominal 1000 steps per epoch, for programs compiled to be measured
    (memory, speed) without a dataset: the same operations as training, other constants."""
    return learning_rate_schedule(config, 1000, int(1000 * config.num_epochs))


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and L2 weight decay on every parameter, as the official code."""
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    parts += [optax.add_decayed_weights(config.weight_decay),
              optax.sgd(schedule, momentum=config.momentum, nesterov=True)]
    optimizer = optax.chain(*parts)
    if config.grad_accumulation_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=config.grad_accumulation_steps)
    return optimizer


def build_train_step(config, model: nnx.Module, schedule: optax.Schedule,
                     mesh: jax.sharding.Mesh | None = None) -> tuple[nnx.GraphDef, TrainState, Any]:
    """The training program of `config`: `(graphdef, state, train_step)`.

    `state` is the model's TrainState under `make_optimizer(config, schedule)`; `train_step` is
    `make_train_step` with the config's label smoothing and non-finite skipping, jitted
    with the state donated and, on a `mesh`, state and metrics replicated over it.
    """
    optimizer = make_optimizer(config, schedule)
    graphdef, state = init_train_state(model, optimizer)
    step_fn = make_train_step(graphdef, optimizer, config.label_smoothing, config.skip_nonfinite_steps, mesh)
    placement = {} if mesh is None else {"out_shardings": (replicated(mesh), replicated(mesh))}
    return graphdef, state, jax.jit(step_fn, donate_argnums=0, **placement)


def make_eval_step(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh | None = None):
    """`eval_step(params, batch_stats, video) -> logits (batch, classes)` with running statistics.

    `graphdef` may come from a model in either mode; evaluation always runs in eval mode. `mesh`:
    as `make_train_step`'s.
    """
    forward = split_frames(model_forward(graphdef, train=False), mesh)

    def eval_step(params, batch_stats, video):
        return forward(params, batch_stats, normalize(video), jax.random.key(0))[0]

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
