"""The helper that runs scripts in children of a process with TensorFlow imported runs
them as ``python <script>`` would."""

import os
import subprocess

import pytest
from binaries import run_script

SCRIPT = """
import json, os, sys
import numpy as np
import tensorflow as tf
print(json.dumps({"name": __name__, "argv": sys.argv[1:], "cwd": os.getcwd(),
                  "marker": os.environ.get("HELPER_MARKER"), "path0": sys.path[0],
                  "sum": float(tf.reduce_sum(tf.constant(np.arange(4.0))))}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("HELPER_EXIT", "0")))
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "bin" / "probe.py"
    path.parent.mkdir()
    path.write_text(SCRIPT)
    return str(path)


def test_a_script_runs_as_main_with_its_arguments_folder_and_environment(script, tmp_path):
    import json

    env = dict(os.environ, HELPER_MARKER="m1")
    r = run_script(script, "--a=1", "b c", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"name": "__main__", "argv": ["--a=1", "b c"], "cwd": str(tmp_path),
                   "marker": "m1", "path0": os.path.dirname(script), "sum": 6.0}
    assert "to stderr" in r.stderr and "to stderr" not in r.stdout
    # A second run sees its own environment, not the first one's.
    env.pop("HELPER_MARKER")
    again = run_script(script, env=dict(env, HELPER_EXIT="4"))
    assert again.returncode == 4
    assert json.loads(again.stdout.strip().splitlines()[-1])["marker"] is None


def test_a_run_past_its_timeout_is_killed_and_raises(tmp_path):
    path = tmp_path / "sleep.py"
    path.write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(str(path), timeout=1)


def test_a_killed_helper_is_replaced_by_a_new_one(script):
    import binaries

    assert run_script(script).returncode == 0
    helper = binaries._WARM[0]
    helper._proc.kill()
    helper._proc.wait()
    assert run_script(script).returncode == 0  # a new helper ran it
    assert binaries._WARM[0] is not helper and binaries._WARM[0].alive()
