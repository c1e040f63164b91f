"""Training, the cost summary and the speed benchmark compile one program: `steps.build_train_step`."""
import importlib

import jax
import jax.numpy as jnp
import optax
import pytest

from blvnet_jax import steps, summary, train
from test_train import tiny_config


class Built(Exception):
    """Raised once a caller has built its training program, before anything compiles."""


def full_recipe_config(data_root):
    """`tiny_config` with every optimizer and loss option of the recipe switched on."""
    return tiny_config(data_root, batch_size=2, eval_batch_size=2, grad_clip_norm=1.0, label_smoothing=0.1,
                       skip_nonfinite_steps=True, grad_accumulation_steps=2, warmup_epochs=1.0)


def test_summary_speed_and_training_build_the_same_train_step(tmp_path, monkeypatch):
    builds, build = [], steps.build_train_step

    def recording_build(*args, **kwargs):
        builds.append(build(*args, **kwargs))
        raise Built

    # The schedule's step counts differ by design (training counts its dataset); pinned here, every
    # other constant and operation of the program must agree.
    schedule = steps.learning_rate_schedule
    pinned_schedule = lambda config, steps_per_epoch, total_steps: schedule(config, 10, 100)
    monkeypatch.setattr(steps, "learning_rate_schedule", pinned_schedule)
    monkeypatch.setattr(steps, "build_train_step", recording_build)
    monkeypatch.setenv("BLVNET_XLA_ENV", "0")
    speed = importlib.import_module("benchmarks.speed")
    config = full_recipe_config(tmp_path / "data")
    with pytest.raises(Built):
        summary.compiled_train_step(config, batch_size=2)
    with pytest.raises(Built):
        speed.build(config, "train", batch_size=2)
    with pytest.raises(Built):
        train.train_and_evaluate(config, str(tmp_path / "run"))

    abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    states = [abstract(state) for _, state, _ in builds]
    assert len(states) == 3 and states[1] == states[0] and states[2] == states[0]
    assert isinstance(states[0].opt_state, optax.MultiStepsState)
    assert len(states[0].opt_state.inner_opt_state) == 3  # clipping, weight decay, SGD + momentum
    crop = config.data.crop_size
    batch = {"video": jax.ShapeDtypeStruct((2, 4, crop, crop, 3), jnp.uint8),
             "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    args = (states[0], batch, jax.random.key(0))
    programs = [str(jax.make_jaxpr(train_step.__wrapped__)(*args)) for _, _, train_step in builds]
    assert programs[1] == programs[0] and programs[2] == programs[0]
    for _, _, train_step in builds:
        state_info = train_step.lower(*args).args_info[0][0]
        assert all(info.donated for info in jax.tree.leaves(state_info))
