"""Kill -9 and SIGTERM during training, a checkpoint damaged on disk before the last restart, and
the run still ends bit-identical to an uninterrupted one."""
import os

import numpy as np

from benchmarks import kill_resume
from test_train import main_command


def test_kill_anywhere_and_resume_bit_identically(tmp_path):
    # The tiny setting of test_train.main_command, 8 steps, a checkpoint every 2.
    overrides = [flag.removeprefix("--config.") for flag in main_command("", tmp_path / "data")
                 if flag.startswith("--config.") and not flag.startswith("--config=")]
    overrides += ["num_train_steps=8", "checkpoint_every_steps=2"]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    straight = tmp_path / "straight"
    kill_resume.run_to_end(kill_resume.demo_command(str(straight), overrides), env, str(straight) + ".log")
    # Seed 1: SIGTERM at step 4, then SIGKILL while a checkpoint is written, the newest damaged before the restart.
    kills = kill_resume.killed_run(str(tmp_path / "killed"), overrides, total_steps=8, kills=2, seed=1)
    assert [(kill["signal"], kill["killed"]) for kill in kills] == [("SIGTERM", True), ("SIGKILL", True)], \
        "the runs ended before they could be stopped"
    damaged = [kill for kill in kills if "damaged_step" in kill]
    assert len(damaged) == 1, "the last stop left fewer than two checkpoints to damage one of"
    for kill in kills:  # a restart resumes from the newest intact checkpoint: only later steps are redone
        if kill in damaged:
            assert [aside["step"] for aside in kill["set_aside"]] == [kill["damaged_step"]] == [kill["last_complete"]]
            assert kill["resumed_from"] == kill["complete_checkpoints"][-2]
        else:
            assert kill["resumed_from"] == kill["last_complete"] <= kill["reached_step"] and not kill["set_aside"]
    preempted = [kill for kill in kills if kill["signal"] == "SIGTERM"]
    assert len(preempted) == 1 and preempted[0]["killed"]
    assert preempted[0]["exit_code"] == 0 and preempted[0]["redone_steps"] == 0  # it saved the step it reached
    step_a, state_a = kill_resume.final_state(str(straight))
    step_b, state_b = kill_resume.final_state(str(tmp_path / "killed"))
    assert step_a == step_b == 8
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name], err_msg=name)
