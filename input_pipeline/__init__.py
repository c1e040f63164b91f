"""Video input pipeline: tf.data on the host, uint8 clips out; normalisation is the device's job.

A `Source` (`create_source(config.data)`, built once) is a dataset: its splits, class names and
the videos each host reads. `create_train_dataset` and `create_eval_dataset` make batches of its
uint8 `(batch, frames, height, width, 3)` RGB clips in [0, 255]; the device casts them and
normalises with the ImageNet mean and std (`blvnet_jax.steps.normalize`). Training clips are
cropped, resized and flipped on the host (`train_batch_shapes`).
"""
from input_pipeline.datasets import create_eval_dataset
from input_pipeline.datasets import create_train_dataset
from input_pipeline.datasets import eval_batch_count
from input_pipeline.datasets import train_batch_shapes
from input_pipeline.faults import InputStats
from input_pipeline.sources import Source
from input_pipeline.sources import create_source

__all__ = ["InputStats", "Source", "create_eval_dataset", "create_source", "create_train_dataset",
           "eval_batch_count", "train_batch_shapes"]
