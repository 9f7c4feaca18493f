"""Console output for long-running work."""

import sys


def echo(message: str) -> None:
    """Prints one progress line and flushes, so logs piped to a file stay current."""
    print(message, file=sys.stdout, flush=True)


def _repository_root() -> str:
    import os

    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def relative_path(path: str, root: str = None) -> str:
    """``path`` relative to ``root`` (the repository root by default) if it is absolute."""
    import os

    if not os.path.isabs(path):
        return path
    return os.path.relpath(path, root or _repository_root())


def command_line(argv, root: str = None) -> str:
    """A recordable ``python ...`` command: absolute paths become relative to the repository.

    Recorded commands must not carry the absolute paths of the machine that ran
    them: ``/home/u/defense_gan_tf/runs/x`` becomes ``runs/x`` and a data folder
    beside the repository ``../shared/data``. Arguments are shell-quoted.
    """
    import shlex

    return "python " + " ".join(shlex.quote(relative_argument(a, root)) for a in argv)


def relative_argument(arg: str, root: str = None) -> str:
    """One command-line word with an absolute path (alone or as ``--flag=path``) made relative."""
    if arg.startswith("--") and "=" in arg:
        name, value = arg.split("=", 1)
        return f"{name}={relative_path(value, root)}"
    return relative_path(arg, root)


def interrupt_on_sigterm() -> None:
    """Makes SIGTERM (``kill``, a job scheduler's stop) raise ``KeyboardInterrupt``.

    Long loops save their progress when interrupted (the Defense-GAN-Rec
    reconstructions, for one); a plain SIGTERM would end the process without
    running that code. Call it in a binary's main thread.
    """
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)


# TensorFlow start-up and graph-optimizer lines that say nothing about a CPU run's
# results: the CUDA stubs of a GPU build on a machine without a GPU, the CPU-feature and
# oneDNN notices, and the remapper's "failed" report (the pass is skipped for that
# graph; the results are the same). Lines written before TensorFlow's logging starts
# ignore TF_CPP_MIN_LOG_LEVEL, so they are filtered out of standard error instead.
TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "cudart_stub.cc", "cuda_platform.cc", "cuda_executor.cc", "cuda_dnn.cc",
    "cuda_fft.cc", "cuda_blas.cc", "failed call to cuInit", "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags", "oneDNN custom operations",
    "remapper failed", "computation placer already registered",
    "Unable to register cu", "TF-TRT Warning",
)
# Set to 1 to see every TensorFlow line (and keep TensorFlow's own log level).
VERBOSE_VARIABLE = "DEFENSE_GAN_TF_LOGS"


# The filter process: copies its input to its output line by line, leaving out the lines
# that hold one of its arguments.
_FILTER = """
import sys
noise = [a.encode() for a in sys.argv[1:]]
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not any(n in line for n in noise):
        out.write(line)
        out.flush()
"""


def quiet_tensorflow(noise=TENSORFLOW_NOISE) -> bool:
    """Keeps TensorFlow's start-up noise out of a binary's standard error.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it, and passes file
    descriptor 2 through a small filter process that drops the lines containing one of
    ``noise``; everything else (Python's warnings and tracebacks included) goes through
    in order. The filter runs in its own session, so a Ctrl-C meant for the binary does
    not stop it, and it drains what the binary wrote even if the binary crashes. Call it
    once, in a binary, before TensorFlow loads; with ``DEFENSE_GAN_TF_LOGS=1`` it does
    nothing. Returns True if the filter is on.
    """
    import atexit
    import os
    import subprocess

    if os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0"):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        real = os.dup(2)
        proc = subprocess.Popen([sys.executable, "-c", _FILTER, *noise],
                                stdin=subprocess.PIPE, stdout=real, start_new_session=True)
    except (OSError, ValueError):  # no standard error to filter, or no process to do it
        return False
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # this process's write end closes: the filter drains and ends
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of ours still holds the pipe
            pass

    atexit.register(restore)
    return True
