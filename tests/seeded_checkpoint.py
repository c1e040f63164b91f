"""The parity fixtures' seeded-weights rule (shared/parity/README.md), written for our tests.

Each official state-dict tensor is drawn from numpy's `default_rng(crc32(key))` by kind, so a
manifest of (key, shape) rows plus the stored batch-norm statistics rebuilds the exact weights.
"""
import json
import zlib

import numpy as np


def seeded_tensor(key: str, shape: tuple) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    kind = key.rsplit(".", 1)[-1]
    if kind == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if kind == "running_mean":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if kind == "running_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if kind == "bias":
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if len(shape) == 1:
        return rng.uniform(0.2, 0.6, shape).astype(np.float32)
    if len(shape) == 2:
        return rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape).astype(np.float32)
    out_channels, in_channels, kernel_h, kernel_w = shape
    if in_channels == 1 and kernel_h == kernel_w == 1:
        return rng.normal(1.0 / 3.0, 0.1, shape).astype(np.float32)
    return rng.normal(0.0, np.sqrt(2.0 / (in_channels * kernel_h * kernel_w)), shape).astype(np.float32)


def seeded_clip_batch(batch: int, frames: int, size: int) -> np.ndarray:
    """The fixtures' input, `(batch, frames, 3, size, size)` float32 from default_rng(0)."""
    return np.random.default_rng(0).standard_normal((batch, frames, 3, size, size)).astype(np.float32)


def load_fixture(path: str) -> dict:
    """`{'config', 'state_dict', 'input' (official layout (batch, 3*frames, H, W)), 'logits'}`."""
    with np.load(path) as fixture:
        config = json.loads(str(fixture["config_json"]))
        manifest = json.loads(str(fixture["manifest_json"]))
        stats = {name[len("stats/"):]: fixture[name] for name in fixture.files if name.startswith("stats/")}
        logits = fixture["logits"]
    state_dict = {key: stats[key] if key in stats else seeded_tensor(key, tuple(shape))
                  for key, shape in manifest}
    return dict(config=config, state_dict=state_dict, logits=logits)
