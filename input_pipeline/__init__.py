"""Video input pipeline: tf.data on the host, uint8 clips out; normalisation is the device's job.

A `Source` (`create_source(config.data)`, built once) is a dataset: its splits, class names and
the videos each host reads. `create_train_dataset` and `create_eval_dataset` make batches of its
uint8 `(batch, frames, height, width, 3)` RGB clips in [0, 255]; the device casts them and
normalises with the ImageNet mean and std (`blvnet_jax.steps.normalize`). Training clips are
cropped, resized and flipped on the host (`train_batch_shapes`).

The names below are imported when first used, so that the tools that need no TensorFlow (the
video decoding of `prepare_tfds`' worker processes) do not import it.
"""
import importlib

_MODULE_OF = {"create_eval_dataset": "datasets", "create_train_dataset": "datasets", "eval_batch_count": "datasets",
              "train_batch_shapes": "datasets", "DataError": "faults", "InputStats": "faults", "Source": "sources",
              "create_source": "sources"}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'input_pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"input_pipeline.{_MODULE_OF[name]}"), name)
