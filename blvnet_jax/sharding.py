"""The device mesh and how host batches become global arrays on it.

The mesh is `data` x `frames`: clips are split over `data`; with `frames` > 1 the frames of each
clip are split too (for clips too long for one device), and XLA moves the neighbouring frames that
the temporal modules and the big/little pairing need across devices.
"""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def create_mesh(mesh_shape: tuple[int, int] = (-1, 1)) -> jax.sharding.Mesh:
    """`(data, frames)` devices; -1 takes the remaining devices. Auto axes: XLA propagates shardings."""
    data, frames = mesh_shape
    devices = jax.device_count()
    data = devices // frames if data == -1 else data
    if data * frames != devices:
        raise ValueError(f"config.mesh_shape={tuple(mesh_shape)} does not cover the {devices} devices")
    return jax.make_mesh((data, frames), ("data", "frames"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh, key: str) -> NamedSharding:
    """`video` `(batch, frames, ...)` over `data` x `frames`; other batch arrays over `data`."""
    return NamedSharding(mesh, PartitionSpec("data", "frames") if key == "video" else PartitionSpec("data"))


def global_batch(local: dict, mesh: jax.sharding.Mesh) -> dict:
    """Host-local numpy arrays `(local_batch, ...)` -> global arrays sharded as `batch_sharding`."""
    return {key: jax.make_array_from_process_local_data(batch_sharding(mesh, key), np.asarray(value))
            for key, value in local.items()}
