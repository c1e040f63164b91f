"""The device mesh and how host batches become global arrays on it."""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def create_mesh() -> jax.sharding.Mesh:
    """All devices of all hosts on one `data` axis (XLA propagates the shardings: Auto axes)."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The leading (batch) axis split over the `data` axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(local: dict, mesh: jax.sharding.Mesh) -> dict:
    """Host-local numpy arrays `(local_batch, ...)` -> global arrays sharded on the `data` axis."""
    return {key: jax.make_array_from_process_local_data(data_sharding(mesh), np.asarray(value))
            for key, value in local.items()}
