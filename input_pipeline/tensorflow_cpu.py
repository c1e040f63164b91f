"""TensorFlow as the input pipeline uses it: on the host's CPU only, leaving accelerators to JAX.

Every module here that runs TensorFlow imports it from this one (`from input_pipeline.tensorflow_cpu
import tf`), so that TensorFlow's GPUs are hidden before any of its ops runs, whichever module a
program imports first: TensorFlow would otherwise reserve most of a GPU's memory.
"""
import tensorflow as tf

tf.config.set_visible_devices([], "GPU")
