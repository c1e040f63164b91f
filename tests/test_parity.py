"""Parity with the official PyTorch bLVNet-TAM on seeded weights (tests/data/README.md).

Each fixture holds the official model's logits; the weights are rebuilt from their seeds, written
to a checkpoint file, read back by the converter and run in float32 by `convert.verify`, whose
convolutions and dots run at HIGHEST precision on any platform (checked on its lowered program).
"""
import re

import jax
import numpy as np
import pytest
from flax import nnx

from blvnet_jax import convert
from blvnet_jax.models import create_model
from configs import base
from seeded_checkpoint import load_fixture, seeded_clip_batch

FIXTURES = [
    "blvnet_tam_r50_f16_b3_c174_s224",            # official fixture, new_fc head
    "blvnet_tam_r50_f16_b5_c400_s160_nodropout",  # official fixture, r = 5, baseline_model.fc head
    "blvnet_tam_r50_f8_b3_c174_s112",             # 4x2 frames at 112: 7x7 -> 4x4 big branch in layer3
    "blvnet_tam_r50_f8_b3_c174_s100",             # 100: odd sizes from the stem on, non-2x upsampling
]


def fixture_config(fixture_config: dict):
    config = base.get_model_config()
    config.update(dict(depth=fixture_config["depth"], num_frames=fixture_config["frames"],
                       num_classes=fixture_config["num_classes"],
                       blending_frames=fixture_config["blending_frames"], dropout=fixture_config["dropout"]))
    return config


@pytest.mark.parametrize("name", FIXTURES)
def test_official_logits_reproduced(name, tmp_path):
    fixture = load_fixture(f"tests/data/{name}.npz")
    settings = fixture["config"]
    checkpoint_file = tmp_path / "official.npz"
    np.savez(checkpoint_file, **fixture["state_dict"])
    config = fixture_config(settings)
    model = create_model(config, rngs=nnx.Rngs(0))
    convert.convert_into(model, convert.load_state_dict(str(checkpoint_file)), config)
    size = settings["input_size"]
    official_input = seeded_clip_batch(settings["batch"], settings["frames"], size).reshape(
        settings["batch"], -1, size, size)
    _, max_rel_err = convert.verify(model, official_input, fixture["logits"], config.num_frames)
    assert max_rel_err <= 1e-4


def operand_precisions(module_text: str) -> list[list[str]]:
    """The operand precisions of each convolution and dot_general in a StableHLO module's text
    (`[]` for one without a precision attribute)."""
    precisions = []
    for line in module_text.splitlines():
        if "stablehlo.convolution" in line or "stablehlo.dot_general" in line:
            attribute = re.search(r"precision(?:_config)? = \[([^\]]*)\]", line)
            precisions.append(re.findall(r"DEFAULT|HIGHEST|HIGH", attribute.group(1)) if attribute else [])
    return precisions


def test_verification_runs_every_convolution_and_dot_at_highest_precision(monkeypatch):
    config = base.get_model_config()
    config.update(dict(width=8, num_frames=4, num_classes=3))
    model = create_model(config, rngs=nnx.Rngs(0))
    official_input = np.random.default_rng(0).standard_normal((1, 3 * 4, 32, 32)).astype(np.float32)
    model.eval()
    graphdef, state = nnx.split(model)
    plain = jax.jit(lambda state, video: nnx.merge(graphdef, state)(video)).lower(
        state, convert.official_to_clips(official_input, 4)).as_text()
    modules_verify_ran, jit = [], jax.jit

    def recording_jit(fun, **kwargs):
        jitted = jit(fun, **kwargs)

        def call(*args):
            modules_verify_ran.append(jitted.lower(*args).as_text())
            return jitted(*args)
        return call

    monkeypatch.setattr(jax, "jit", recording_jit)
    convert.verify(model, official_input, np.ones((1, 3), np.float32), config.num_frames)
    [verified] = modules_verify_ran
    default_precisions = operand_precisions(plain)
    assert default_precisions and all("HIGHEST" not in p for p in default_precisions)
    assert operand_precisions(verified) == [["HIGHEST", "HIGHEST"]] * len(default_precisions)
