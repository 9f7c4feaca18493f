"""Running the binaries of bin/ (and the scripts of bench/) from tests.

Importing TensorFlow takes a new Python process several seconds of CPU, more than most
smoke runs of a binary on tiny inputs. So one helper process imports what the runs need
first, then runs each command line in a forked child as ``python <script> ...`` would:
``__main__``, its own flags defined afresh, the working directory and environment it was
given, its exit code, standard output and error. Forking is safe there: the helper has
run no TensorFlow op (no thread pools, no devices), only imported it.

- ``run_script(path, *args)``: one helper per test process that has imported TensorFlow
  and Keras too, for runs that do real work. Tests of what happens *before* TensorFlow
  loads (``-X importtime``), of TensorFlow's own start-up lines, of signals sent to a
  running binary or of a fresh interpreter keep using ``subprocess``.
- ``Refusals(name)``: for tests that feed a binary hundreds of bad flag values, a helper
  that imports only what every binary imports before its flag checks (absl,
  bin/flags.py, the package's config; not TensorFlow). A child still running after
  ``timeout`` seconds (a job that started instead of a refusal) is killed, and ``run``
  fails the test.

Run as a script, this file is a helper: requests in, results out, one JSON object per
line.
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


class _Helper:
    """A helper process (``python binaries.py MODE``) and its request pipe."""

    def __init__(self, mode: str, env=None):
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=ROOT, env=env)

    def request(self, script, args, timeout, cwd=None, env=None) -> dict:
        self._proc.stdin.write(json.dumps({
            "script": script, "args": [str(a) for a in args], "timeout": timeout,
            "cwd": None if cwd is None else str(cwd),
            "env": None if env is None else dict(env)}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the helper running {script} died "
                               f"(exit status {self._proc.poll()})")
        return json.loads(line)

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self):
        if self.alive():
            self._proc.stdin.close()
            self._proc.wait(timeout=30)


class Refusals:
    """``run(*args)`` -> Result of ``python bin/<name> *args`` (cwd ROOT)."""

    def __init__(self, name: str, env=None, timeout: float = 60.0):
        self.name, self.timeout = name, timeout
        self._helper = _Helper("refusals", env=env)

    def run(self, *args) -> Result:
        out = self._helper.request(os.path.join(BIN, self.name), args, self.timeout)
        if out["returncode"] is None:
            raise AssertionError(f"bin/{self.name} {' '.join(args)} was still running after "
                                 f"{self.timeout:g} s (not refused): {out['stderr'][-600:]}")
        return Result(out["returncode"], out["stdout"], out["stderr"])

    def close(self):
        self._helper.close()


_WARM = []  # this test process's helper with TensorFlow imported, started on first use


def run_script(script: str, *args, cwd=None, env=None, timeout: float = 300) -> Result:
    """``python <script> *args`` (``script`` a path, or relative to the repository), in a
    child of a helper that has TensorFlow imported; the child's working directory is
    ``cwd`` (default the repository) and its environment ``env`` (default this
    process's). Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds, as
    ``subprocess.run`` would."""
    path = script if os.path.isabs(script) else os.path.join(ROOT, script)
    if not _WARM or not _WARM[0].alive():  # the first run, or the helper was killed
        import atexit

        _WARM[:] = [_Helper("tensorflow", env=dict(os.environ))]
        atexit.register(_WARM[0].close)
    out = _WARM[0].request(path, args, timeout, cwd=cwd,
                           env=os.environ if env is None else env)
    if out["returncode"] is None:
        raise subprocess.TimeoutExpired([script, *args], timeout, out["stdout"],
                                        out["stderr"])
    return Result(out["returncode"], out["stdout"], out["stderr"])


def _run_child(request, out_path, err_path):
    """In the forked child: the script as __main__, then exit with its code."""
    import runpy

    if request["env"] is not None:
        os.environ.clear()
        os.environ.update(request["env"])
    if request["cwd"] is not None:
        os.chdir(request["cwd"])
    path = request["script"]
    sys.path.insert(0, os.path.dirname(path))  # as for ``python <path>``
    with open(out_path, "w") as out, open(err_path, "w") as err, \
            open(os.devnull) as nothing:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        os.dup2(nothing.fileno(), 0)  # the requests stay the helper's
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # on fds 1 and 2 again
    code = 0
    try:
        sys.argv = [path, *request["args"]]
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


def _preload(mode: str) -> None:
    """What the helper imports once, before serving: what every binary imports before
    its flag checks (absl, bin/flags.py, which asks for oneDNN and GPU memory growth
    before TensorFlow loads, the package's config), then for "tensorflow" TensorFlow and
    Keras too."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, BIN)
    import absl.app  # noqa: F401
    import flags  # noqa: F401 - bin/flags.py
    from defense_gan_tf import config  # noqa: F401

    if mode == "tensorflow":
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    elif mode != "refusals":
        raise SystemExit(f"unknown helper mode {mode!r}")


def _serve(mode: str) -> None:
    _preload(mode)
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
                _run_child(request, out_path, err_path)
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
