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
