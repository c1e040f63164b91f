"""Replacing unreadable videos inside tf.data without breaking determinism.

TensorFlow cannot catch an op's error inside a graph: the only way to survive a corrupt JPEG is
`ignore_errors`, which drops the failed element. To keep example k at position k, each example
becomes a tiny dataset of its candidates (the video, then its substitutes), loaded one after the
other until one loads; a lazily built fallback marks the example when all of them fail.
Candidates after the first are only read when the ones before fail, so a clean dataset pays one
decode per example.
"""
import tensorflow as tf


def first_readable(candidates, load, fallback):
    """One-element dataset: `load(candidate)` of the first candidate that raises no error.

    `candidates` is a dataset; `fallback()` builds the element when every candidate fails, with
    the structure `load` returns. Neither runs more than needed.
    """
    loaded = candidates.map(load).ignore_errors()
    gave_up = tf.data.Dataset.from_tensors(0).map(lambda _: fallback())
    return loaded.concatenate(gave_up).take(1)


def map_examples(examples, to_dataset, num_parallel_calls):
    """`examples` mapped through `to_dataset` (element -> one-element dataset) in parallel, in
    order; `num_parallel_calls` -1 = tf.data.AUTOTUNE.

    Each one-element dataset is read inside a parallel map rather than by `interleave`, which
    costs less per example for the same elements.
    """
    return examples.map(lambda *element: to_dataset(*element).get_single_element(),
                        num_parallel_calls=num_parallel_calls, deterministic=True)
