"""A trained or converted checkpoint as a serving artifact: `jax.export` and a TF SavedModel.

    python -m blvnet_jax.export --workdir=DIR --output=OUT_DIR [--format=jax_export,saved_model]
        [--batch=polymorphic|N] [--checkpoint=latest|best|STEP] [--overwrite]

Both artifacts hold one function, `video -> logits`: uint8 RGB `(batch, frames, crop, crop, 3)`
(float32 `(..., channels)` for a flow model) to float32 `(batch, classes)`, in eval mode, with
the ImageNet normalisation inside, as `steps.make_eval_step`. The batch is symbolic by default
(any size runs). `OUT_DIR` (a local path or a URL such as `gs://...`) receives:

- `model.jax_export`: `jax.export.Exported.serialize()`, with the weights as constants of the
  module: one self-contained file (~4 bytes per parameter), read back by `load_jax`;
- `saved_model/`: `jax2tf` inside a `tf.Module`, the weights as `tf.Variable`s (so the graph stays
  small), signature `serving_default(video) -> {'logits'}` and a `class_names` variable;
- `signature.json`: input shape and dtype, class names, frames, crop size, step and model name.

Both are lowered for CPU, CUDA and TPU at once (StableHLO with a platform argument; no such
device is needed to export), so one artifact serves on any of them. A video's prediction, as in
evaluation, averages the softmax over its views (crops x clips, the batch rows of one video).
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx

from blvnet_jax import checkpoint, cli, quiet, steps

FORMATS = ("jax_export", "saved_model")
PLATFORMS = ("cpu", "cuda", "tpu")
JAX_FILE = "model.jax_export"
SAVED_MODEL_DIR = "saved_model"
SIGNATURE_FILE = "signature.json"


class UsageError(ValueError):
    """A wrong argument of the export (format, batch, output folder); the message says what to do."""


@dataclasses.dataclass
class Servable:
    """A checkpoint ready to export: `graphdef` and its weights as numpy (host) arrays, and what a
    server needs to know (`signature`, written as `signature.json`)."""
    graphdef: nnx.GraphDef
    params: dict
    batch_stats: dict
    signature: dict

    def input_spec(self, batch: int | None) -> jax.ShapeDtypeStruct:
        """The video argument: batch `None` is symbolic (`b`, any size >= 1)."""
        video = self.signature["input"]
        shape = ", ".join(["b" if batch is None else str(batch)] + [str(d) for d in video["shape"][1:]])
        return jax.ShapeDtypeStruct(jax.export.symbolic_shape(shape), np.dtype(video["dtype"]))

    def apply(self, params: dict, batch_stats: dict, video: jax.Array) -> jax.Array:
        """`video (batch, frames, crop, crop, channels) -> float32 logits (batch, classes)`."""
        return steps.make_eval_step(self.graphdef)(params, batch_stats, video).astype(jnp.float32)


def load_servable(workdir: str, step: int | str | None = None) -> Servable:
    """The checkpoint `step` of `workdir` (`checkpoint.restore_model`'s: None is the latest intact one);
    raises `checkpoint.NoCheckpointError` or `checkpoint.DamagedCheckpointError`."""
    model, metadata = checkpoint.restore_model(workdir, step)
    config = ml_collections.ConfigDict(metadata["config"])
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    params, batch_stats = jax.device_get((nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)))
    model_config, crop = config.model, config.data.crop_size
    channels = model_config.input_channels
    signature = {
        "input": {"name": "video", "shape": [None, model_config.num_frames, crop, crop, channels],
                  "dtype": "uint8" if channels == 3 else "float32",
                  "layout": "(batch, frames, height, width, channels); uint8 RGB in [0, 255], normalised inside"
                            if channels == 3 else "(batch, frames, height, width, channels); stacked flow"},
        "output": {"name": "logits", "shape": [None, model_config.num_classes], "dtype": "float32"},
        "class_names": metadata.get("class_names") or [str(i) for i in range(model_config.num_classes)],
        "num_frames": model_config.num_frames, "crop_size": crop,
        "step": int(metadata["step"]), "model": model_config.name, "depth": model_config.depth}
    return Servable(graphdef, params, batch_stats, signature)


def check_output(output_dir: str, overwrite: bool) -> None:
    """Refuses an `output_dir` that holds anything unless `overwrite`."""
    path = epath.Path(output_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output={output_dir} is a file; name a folder")
    if not overwrite and path.exists() and any(path.iterdir()):
        raise UsageError(f"--output={output_dir} is not empty; name a new folder or add --overwrite")


def write_signature(servable: Servable, output_dir: str, batch: int | None, platforms: tuple[str, ...]) -> None:
    """`signature.json`: the servable's signature with the exported batch size (null: any)."""
    signature = json.loads(json.dumps(servable.signature))
    for tensor in ("input", "output"):
        signature[tensor]["shape"][0] = batch
    path = epath.Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / SIGNATURE_FILE).write_text(json.dumps(dict(signature, platforms=list(platforms)), indent=2) + "\n")


def write_jax(servable: Servable, output_dir: str, batch: int | None = None,
              platforms: tuple[str, ...] = PLATFORMS) -> str:
    """Writes `model.jax_export` (weights as constants) and `signature.json`; returns the file."""
    fn = jax.jit(lambda video: servable.apply(servable.params, servable.batch_stats, video))
    exported = jax.export.export(fn, platforms=platforms)(servable.input_spec(batch))
    write_signature(servable, output_dir, batch, platforms)
    path = epath.Path(output_dir) / JAX_FILE
    path.write_bytes(exported.serialize())
    return str(path)


def write_saved_model(servable: Servable, output_dir: str, batch: int | None = None,
                      platforms: tuple[str, ...] = PLATFORMS) -> str:
    """Writes `saved_model/` (jax2tf, weights as `tf.Variable`s) and `signature.json`; returns the folder."""
    import tensorflow as tf
    from jax.experimental import jax2tf
    try:  # TensorFlow only traces here: keep it off the accelerators JAX uses.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised by the caller
        pass
    leaves, treedef = jax.tree.flatten((servable.params, servable.batch_stats))
    weights = [tf.Variable(leaf, trainable=False) for leaf in leaves]

    def apply(leaves, video):
        return servable.apply(*jax.tree.unflatten(treedef, leaves), video)

    converted = jax2tf.convert(apply, polymorphic_shapes=[None, "(b, ...)" if batch is None else None],
                               with_gradient=False, native_serialization_platforms=platforms)
    video = servable.signature["input"]
    spec = tf.TensorSpec([batch] + video["shape"][1:], video["dtype"], name=video["name"])
    serve = tf.function(lambda video: {"logits": converted(weights, video)}, input_signature=[spec],
                        jit_compile=True, autograph=False)
    module = tf.Module()  # the signature only: a tf.function attribute would be traced (converted) again
    module.weights = weights
    module.class_names = tf.Variable(servable.signature["class_names"], trainable=False)
    write_signature(servable, output_dir, batch, platforms)
    path = epath.Path(output_dir) / SAVED_MODEL_DIR
    if path.exists():
        path.rmtree()
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
    return str(path)


def export_jax(workdir: str, output_dir: str, batch: int | None = None, step: int | str | None = None,
               platforms: tuple[str, ...] = PLATFORMS) -> str:
    """`workdir`'s checkpoint as `output_dir/model.jax_export`; `batch` None: any batch size."""
    return write_jax(load_servable(workdir, step), output_dir, batch, platforms)


def export_saved_model(workdir: str, output_dir: str, batch: int | None = None, step: int | str | None = None,
                       platforms: tuple[str, ...] = PLATFORMS) -> str:
    """`workdir`'s checkpoint as the TF SavedModel `output_dir/saved_model/`; `batch` None: any size."""
    return write_saved_model(load_servable(workdir, step), output_dir, batch, platforms)


def load_jax(path: str):
    """`video -> logits`, jitted, from a `model.jax_export` file or the folder holding it."""
    path = epath.Path(path)
    if path.is_dir():
        path = path / JAX_FILE
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    return jax.jit(exported.call)


def parse_formats(formats: list[str]) -> tuple[str, ...]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"--format={','.join(formats)}: use one or both of {','.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def parse_batch(batch: str) -> int | None:
    if batch == "polymorphic":
        return None
    if batch.isdigit() and int(batch) > 0:
        return int(batch)
    raise UsageError(f"--batch={batch}: use 'polymorphic' (any batch size) or a positive number")


def parse_platforms(platforms: list[str]) -> tuple[str, ...]:
    unknown = [p for p in platforms if p not in ("cpu", "cuda", "rocm", "tpu")]
    if unknown or not platforms:
        raise UsageError(f"--platforms={','.join(platforms)}: use some of cpu,cuda,rocm,tpu")
    return tuple(dict.fromkeys(platforms))


def parse_checkpoint(which: str) -> int | str:
    try:
        return checkpoint.parse_step(which)
    except ValueError as error:
        raise UsageError(str(error)) from None


def export(workdir: str, output_dir: str, formats: tuple[str, ...] = FORMATS, batch: int | None = None,
           step: int | str | None = None, overwrite: bool = False, platforms: tuple[str, ...] = PLATFORMS) -> list[str]:
    """Every format of `formats` into `output_dir` (checked first), from one restore; returns the paths."""
    check_output(output_dir, overwrite)
    servable = load_servable(workdir, step)
    writers = {"jax_export": write_jax, "saved_model": write_saved_model}
    return [writers[name](servable, output_dir, batch, platforms) for name in formats]


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    flags.DEFINE_string("workdir", None, "Workdir with checkpoints/ (trained, or written by blvnet_jax.convert).")
    flags.DEFINE_string("output", None, "Folder (or gs:// URL) for the artifacts; must be new or empty.")
    flags.DEFINE_list("format", list(FORMATS), f"Which artifacts: {', '.join(FORMATS)}.")
    flags.DEFINE_string("batch", "polymorphic", "'polymorphic' (any batch size) or a fixed batch size.")
    flags.DEFINE_string("checkpoint", "latest", "'latest' (the newest intact one), 'best' (the best evaluation "
                        "top-1 saved) or a step number (fails if it is damaged).")
    flags.DEFINE_list("platforms", list(PLATFORMS), "Platforms to lower for: cpu, cuda, rocm, tpu.")
    flags.DEFINE_bool("overwrite", False, "Write into a non-empty --output, replacing earlier artifacts.")


def main(argv):
    del argv
    quiet.quiet_libraries()
    try:
        paths = export(FLAGS.workdir, FLAGS.output, parse_formats(FLAGS.format), parse_batch(FLAGS.batch),
                       parse_checkpoint(FLAGS.checkpoint), FLAGS.overwrite, parse_platforms(FLAGS.platforms))
    except checkpoint.NoCheckpointError as error:
        raise SystemExit(f"Workdir error (--workdir={FLAGS.workdir}): {error}") from None
    except checkpoint.DamagedCheckpointError as error:
        raise SystemExit(f"Checkpoint error (--workdir={FLAGS.workdir}): {error}") from None
    except UsageError as error:
        raise SystemExit(f"Export error: {error}") from None
    for path in paths + [str(epath.Path(FLAGS.output) / SIGNATURE_FILE)]:
        print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "output"])
    app.run(main, flags_parser=cli.parse_flags)
