"""Parameter and multiply-add counts against the paper; the summary command's JSON line."""
import json
import os
import subprocess
import sys

import pytest

from blvnet_jax.summary import summarize
from configs import base


@pytest.mark.parametrize("depth,num_frames,paper_gmacs", [
    (50, 16, 23.8), (50, 32, 47.7), (101, 16, 32.1), (101, 32, 64.3), (101, 48, 96.4), (101, 64, 128.6)])
def test_gmacs_match_the_paper(depth, num_frames, paper_gmacs):
    config = base.get_config()
    config.model.update(dict(depth=depth, num_frames=num_frames))
    result = summarize(config, with_memory=False)
    assert abs(result["gmacs"] / paper_gmacs - 1) < 0.02
    assert round(result["params"] / 1e6, 2) == {50: 25.02, 101: 40.18}[depth]


def test_summary_command_prints_json_last():
    result = subprocess.run(
        [sys.executable, "-m", "blvnet_jax.summary", "--config=configs/ssv1_8x2.py", "--config.model.width=8",
         "--config.model.num_frames=4", "--config.data.crop_size=64", "--json"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["params"] > 0 and figures["gmacs"] > 0
    assert figures["train_step_bytes"] >= figures["temp_bytes"] > 0
