"""What a checkpoint proves before it is used: a SHA-256 digest of every array it stores, taken
from the values in memory when the save starts and stored in the same step (an Orbax step is
complete only once every item is written), and finite parameters and optimizer state.

Reading a step back recomputes the digests from the values restored, so a flipped byte, a lost
file or a decompression error shows as a `DamagedCheckpointError` naming the step, the array and
the reason, never as silently different weights.
"""
import hashlib
import json

import jax
import numpy as np

SCHEME = "sha256-per-array-v1"  # the metadata's `integrity` field; absent in checkpoints written before


class DamagedCheckpointError(ValueError):
    """A checkpoint step that cannot be read back as it was written."""

    def __init__(self, step: int, where: str, reason: str):
        super().__init__(f"checkpoint step {step} in {where} is damaged: {reason}")
        self.step, self.reason = step, reason


def flat_leaves(tree) -> dict[str, object]:
    """`{'backbone.layer1.big.0.conv1.kernel': leaf}` for a nested tree (dicts, optax states)."""
    return {jax.tree_util.keystr(path, simple=True, separator="."): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def host_copy(leaf) -> np.ndarray:
    """The full value of `leaf` on this host: a numpy array, or a replicated `jax.Array`'s local copy."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            raise ValueError("checkpoint digests need the state replicated on every host")
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of the dtype, the shape and the bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def metadata_digest(metadata: dict) -> str:
    return hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()


def nonfinite_arrays(tree) -> list[str]:
    """`['params.head.kernel (39 of 1024 values)', ...]` for the floating arrays of `tree` that are not finite."""
    found = []
    for key, leaf in flat_leaves(tree).items():
        array = host_copy(leaf)
        if np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16":
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array.astype(np.float32))))
            if bad:
                found.append(f"{key} ({bad} of {array.size} values)")
    return found


def digests_of(items: dict, metadata: dict) -> dict:
    """`{item: {array key: digest}, 'metadata': digest}` for `items` (`{'params': tree, ...}`)."""
    digests = {name: {key: array_digest(host_copy(leaf)) for key, leaf in flat_leaves(tree).items()}
               for name, tree in items.items()}
    return dict(digests, metadata=metadata_digest(metadata))


def problems(items: dict, metadata: dict, digests: dict) -> str | None:
    """Why `items` and `metadata` read back from a step differ from what its `digests` say was
    written, or hold non-finite values; None when they do not."""
    if metadata_digest(metadata) != digests.get("metadata"):
        return "its metadata (config, class names) differs from its digest"
    for name, tree in items.items():
        expected = digests.get(name)
        if expected is None:
            return f"no digests for its {name}"
        found = flat_leaves(tree)
        if set(found) != set(expected):
            return f"its {name} holds other arrays than its digests list"
        for key, leaf in found.items():
            if array_digest(host_copy(leaf)) != expected[key]:
                return f"{name}.{key} differs from its digest (changed on disk)"
    nonfinite = nonfinite_arrays(items)
    if nonfinite:
        return f"non-finite values in {nonfinite[0]}" + (f" and {len(nonfinite) - 1} more arrays" if
                                                          len(nonfinite) > 1 else "")
    return None
