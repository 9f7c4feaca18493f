"""Copies of the pretrained/*.sh scripts run with a stand-in for Python, for the tests of
train_chain.sh, package_chain.sh and measure_chain.sh."""

import os
import shutil
import stat
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_scripts(root, *names) -> None:
    """Copies pretrained/<name> for each name into ``root``/pretrained."""
    os.makedirs(root / "pretrained", exist_ok=True)
    for name in names:
        shutil.copy(os.path.join(ROOT, "pretrained", name), root / "pretrained")


def stand_in(tmp_path, text: str):
    """An executable script ``tmp_path``/python holding ``text``; returns its path."""
    python = tmp_path / "python"
    python.write_text(text)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return python


def run(root, script: str, python, *args, cwd="/", **env) -> subprocess.CompletedProcess:
    """``bash root/pretrained/script args`` with PYTHON the stand-in (REAL_PYTHON this
    interpreter) and only PATH from the environment besides ``env``."""
    return subprocess.run(
        ["bash", str(root / "pretrained" / script), *args], cwd=cwd, capture_output=True,
        text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHON": str(python),
             "REAL_PYTHON": sys.executable, **env})


def calls(root) -> list:
    """The argument lines the stand-in wrote to ``root``/calls.txt, in order."""
    path = root / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []
