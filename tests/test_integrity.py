"""Checkpoints you can trust: real files damaged on disk are detected by their digests, set aside
by training, skipped by evaluation and prediction (read-only), and refused when asked for; old
steps are renamed before they are deleted."""
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from blvnet_jax import checkpoint, integrity, predict, steps, train
from blvnet_jax.models import create_model
from configs import base
from test_train import final_params, tiny_config


def largest_file(directory):
    return max((path for path in directory.rglob("*") if path.is_file()), key=lambda path: path.stat().st_size)


def flip_bytes(path, count=20):
    data = bytearray(path.read_bytes())
    for i in np.random.default_rng(0).choice(len(data), count, replace=False):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_lines(caplog):
    return [record.getMessage() for record in caplog.records if "is damaged (" in record.getMessage()]


@pytest.fixture
def run_copy(straight_run, tmp_path):
    """A copy of the straight run's workdir (checkpoints 2 and 4) and its data root."""
    data_root, straight = straight_run
    shutil.copytree(straight, tmp_path / "run")
    return data_root, tmp_path / "run"


def test_training_sets_a_step_with_flipped_bytes_aside_and_resumes_exactly_from_the_previous_one(
        straight_run, run_copy, caplog):
    data_root, run = run_copy
    flip_bytes(largest_file(run / "checkpoints" / "4" / "params"))
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(tiny_config(data_root), str(run))  # resumes from 2, redoes steps 3 and 4
    line, = damage_lines(caplog)
    assert line.startswith(f"Checkpoint step 4 in {run / 'checkpoints'} is damaged (")
    assert line.endswith("): set aside as 4.damaged; trying the previous step")
    assert (run / "checkpoints" / "4.damaged" / "params").is_dir()
    step, resumed = final_params(run)
    _, expected = final_params(straight_run[1])
    assert step == 4
    jax.tree.map(np.testing.assert_array_equal, expected, resumed)


def test_evaluation_and_prediction_skip_a_step_missing_a_file_and_refuse_it_by_number(run_copy, caplog):
    data_root, run = run_copy
    largest_file(run / "checkpoints" / "4" / "params").unlink()
    listing = sorted(os.listdir(run / "checkpoints"))
    config = tiny_config(data_root)
    with caplog.at_level(logging.WARNING):
        assert train.evaluate_checkpoint(config, str(run))["step"] == 2
        video = next(data_root.rglob("*.jpg")).parent
        assert predict.predict(str(run), str(video))["step"] == 2
    assert [line.split(" is damaged (")[0] for line in damage_lines(caplog)] == \
        [f"Checkpoint step 4 in {run / 'checkpoints'}"] * 2
    assert all(line.endswith("): skipped (training in this workdir sets it aside); trying the previous step")
               for line in damage_lines(caplog))
    assert sorted(os.listdir(run / "checkpoints")) == listing  # read-only: nothing renamed
    for which in (4, "best"):  # step 4 is also the best evaluated one
        with pytest.raises(checkpoint.DamagedCheckpointError,
                           match=f"^checkpoint step 4 in {re.escape(str(run / 'checkpoints'))} is damaged: "):
            train.evaluate_checkpoint(config, str(run), which)
    with pytest.raises(checkpoint.NoCheckpointError, match=r"no checkpoint step 3 in .* \(steps: 2, 4\)"):
        checkpoint.restore_model(str(run), 3)


def test_digests_catch_a_changed_value_that_reads_back_cleanly(tmp_path):
    config = base.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=5))
    checkpoint.save_model(str(tmp_path), 1, create_model(config.model, rngs=nnx.Rngs(0)), config)
    with checkpoint.open_reader(str(tmp_path)) as manager:
        items, metadata = checkpoint.read_step(manager, 1, checkpoint.model_items(
            nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0)))))
        digests = manager.restore(1, args=checkpoint.ocp.args.Composite(
            digests=checkpoint.ocp.args.JsonRestore()))["digests"]
    assert integrity.problems(items, metadata, digests) is None
    changed = jax.tree.map(np.array, items)
    changed["params"]["head"]["bias"][3] += 1e-6
    assert integrity.problems(changed, metadata, digests) == \
        "params.head.bias differs from its digest (changed on disk)"
    changed = jax.tree.map(np.array, items)
    changed["batch_stats"]["backbone"]["bn1"]["mean"][0] = np.nan
    digests_of_nan = integrity.digests_of(changed, metadata)
    assert integrity.problems(changed, metadata, digests_of_nan).startswith(
        "non-finite values in batch_stats.backbone.bn1.mean (1 of 8 values)")
    assert integrity.problems(items, dict(metadata, class_names=["x"]), digests) == \
        "its metadata (config, class names) differs from its digest"


def test_old_steps_are_renamed_before_deletion_and_a_half_deleted_one_is_set_aside(tmp_path, monkeypatch, caplog):
    config = tiny_config(tmp_path / "data", keep_checkpoints=2)
    optimizer = steps.make_optimizer(config, optax.constant_schedule(0.1))
    graphdef, state = steps.init_train_state(create_model(config.model, rngs=nnx.Rngs(0)), optimizer)
    directory = tmp_path / "run" / "checkpoints"
    kept = []
    with monkeypatch.context() as patch:  # as if killed before the removal of the renamed steps
        patch.setattr(checkpoint, "remove_deleted_steps", lambda manager: kept.extend(os.listdir(manager.directory)))
        with checkpoint.open_training_manager(str(tmp_path / "run"), config) as manager:
            for step in (1, 2, 3):
                checkpoint.save_train_state(manager, step, state, config, None, None)
                checkpoint.confirm_saved(manager, step)
    assert sorted(os.listdir(directory)) == ["2", "3", checkpoint.DELETING_SUBDIR]
    assert os.listdir(directory / checkpoint.DELETING_SUBDIR) == ["1"]  # renamed whole, never listed

    shutil.rmtree(directory / "3" / "opt_state")  # a step half-deleted in place (Orbax on GCS)
    with caplog.at_level(logging.WARNING), checkpoint.open_training_manager(str(tmp_path / "run"), config) as manager:
        assert not (directory / checkpoint.DELETING_SUBDIR).exists()  # removed when training opens the workdir
        restored, step = checkpoint.restore_latest_train_state(manager, jax.tree.map(jnp.zeros_like, state))
    assert step == 2 and sorted(os.listdir(directory)) == ["2", "3.damaged"]
    assert damage_lines(caplog) == [f"Checkpoint step 3 in {directory} is damaged (FileNotFoundError: its opt_state "
                                    "item is missing): set aside as 3.damaged; trying the previous step"]
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(state.params), nnx.to_pure_dict(restored.params))


def test_every_step_damaged_is_an_error_not_a_silent_restart(run_copy):
    data_root, run = run_copy
    for step in ("2", "4"):
        flip_bytes(largest_file(run / "checkpoints" / step / "params"))
    with pytest.raises(checkpoint.NoCheckpointError, match=r"no intact checkpoint in .*: step\(s\) 4, 2 failed "
                       r"verification \(see the log\), set aside as <step>\.damaged; run again to start from step 0"):
        train.train_and_evaluate(tiny_config(data_root), str(run))
    assert sorted(os.listdir(run / "checkpoints")) == ["2.damaged", "4.damaged"]
