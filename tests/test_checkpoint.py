"""Orbax checkpoint I/O: round trip, and a loud error for another architecture."""
import jax
import numpy as np
import pytest
from flax import nnx

from blvnet_jax import checkpoint
from blvnet_jax.models import create_model
from configs import base


def tiny_config():
    config = base.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=5))
    return config


def test_save_restore_round_trip(tmp_path):
    config = tiny_config()
    model = create_model(config.model, rngs=nnx.Rngs(3))
    model.backbone.bn1.mean[...] = np.arange(8, dtype=np.float32)
    checkpoint.save_model(str(tmp_path), 7, model, config, class_names=["a", "b", "c", "d", "e"])
    restored, metadata = checkpoint.restore_model(str(tmp_path))
    assert metadata["step"] == 7 and metadata["class_names"][4] == "e"
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model), nnx.state(restored))


def test_restore_into_another_architecture_names_the_parameter(tmp_path):
    config = tiny_config()
    checkpoint.save_model(str(tmp_path), 0, create_model(config.model, rngs=nnx.Rngs(0)), config)
    config.model.num_classes = 6
    with pytest.raises(ValueError, match=r"head\.bias is \(5,\) in the checkpoint but \(6,\) in the model"):
        checkpoint.restore_model(str(tmp_path), config=config)


def test_missing_checkpoint_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        checkpoint.restore_model(str(tmp_path))
