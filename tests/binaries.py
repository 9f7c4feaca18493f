"""Running the binaries of bin/ from tests.

``Refusals(name)`` runs one binary many times cheaply, for tests that feed it hundreds of
bad flag values: one helper process imports what every binary imports before its flag
checks (absl, bin/flags.py, the package's config; not TensorFlow), then runs each command
line in a forked child as ``python bin/<name> ...`` would (``__main__``, its own flags
defined afresh, its exit code, standard output and error). A child still running after
``timeout`` seconds (a job that started instead of a refusal) is killed, and ``run``
fails the test.

Run as a script, this file is that helper: command lines in, results out, one JSON object
per line.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")


def loads_tensorflow(importtime_stderr: str) -> bool:
    """Whether a ``python -X importtime`` run, by its standard error, imported TensorFlow
    or Keras."""
    return any(re.search(r"\|\s+(tensorflow|keras)$", line.rstrip())
               for line in importtime_stderr.splitlines())


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Refusals:
    """``run(*args)`` -> Result of ``python bin/<name> *args`` (cwd ROOT)."""

    def __init__(self, name: str, env=None, timeout: float = 60.0):
        self.name, self.timeout = name, timeout
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), name], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)

    def run(self, *args) -> Result:
        self._proc.stdin.write(json.dumps({"args": list(args), "timeout": self.timeout})
                               + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the helper running bin/{self.name} died")
        out = json.loads(line)
        if out["returncode"] is None:
            raise AssertionError(f"bin/{self.name} {' '.join(args)} was still running after "
                                 f"{self.timeout:g} s (not refused): {out['stderr'][-600:]}")
        return Result(out["returncode"], out["stdout"], out["stderr"])

    def close(self):
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def _run_child(path, args, out_path, err_path):
    """In the forked child: bin/<name> as __main__, then exit with its code."""
    import runpy

    with open(out_path, "w") as out, open(err_path, "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # on fds 1 and 2 again
    code = 0
    try:
        sys.argv = [path, *args]
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - a traceback, as the interpreter prints it
        import traceback

        traceback.print_exc()
        code = 1
    import atexit

    atexit._run_exitfuncs()  # as at interpreter exit: the binary's stderr filter drains
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(name: str) -> None:
    path = os.path.join(BIN, name)
    sys.path.insert(0, BIN)
    import absl.app  # noqa: F401 - what each binary imports before checking its flags
    import flags  # noqa: F401 - bin/flags.py
    from defense_gan_tf import config  # noqa: F401

    answers = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    # mkdtemp, not TemporaryDirectory: a child runs the exit handlers it inherits.
    tmp = tempfile.mkdtemp()
    try:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        for line in sys.stdin:
            request = json.loads(line)
            answers.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(path, request["args"], out_path, err_path)
            deadline = time.monotonic() + request["timeout"]
            returncode = None
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    returncode = os.waitstatus_to_exitcode(status)
                    break
                time.sleep(0.005)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            with open(out_path) as f_out, open(err_path) as f_err:
                result = {"returncode": returncode, "stdout": f_out.read(),
                          "stderr": f_err.read()}
            answers.write(json.dumps(result) + "\n")
            answers.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
