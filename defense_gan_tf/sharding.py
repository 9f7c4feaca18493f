"""One job spread over many workers (machines, GPUs or processes) that share a folder.

A worker is told its :class:`Shard` (``--shard=I/N``, or the scheduler's array index)
and takes the items of a job (table cells, adaptive cells) in the order
:meth:`Shard.order` gives: its own share first, every N-th item starting at I, then the
other shards' items, so workers that finish early help the slow ones. Before computing
an item it :meth:`Claims.claim` s it: a claim is a small file created atomically in the
shared folder, so two workers never compute the same item at once. A claim is held
fresh by a heartbeat while its item runs; one whose heartbeat stopped for
``timeout`` seconds (the worker died or lost the filesystem), or whose process is gone
(same machine), is broken by the next worker that wants the item.

Claims save work, they do not guard correctness: every result file is written whole
(:mod:`defense_gan_tf.atomic`) and a computation gives the same result wherever it
runs, so the rare item computed twice (a claim broken while its holder was merely
stalled past the timeout) is written twice with the same content.

This module imports nothing that loads TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Iterable, Mapping, Optional

from defense_gan_tf.errors import ConfigError, InputError

# A claim whose file has not been touched for this long is taken for abandoned. The
# heartbeat touches it four times per timeout, so only a worker stalled (or cut off
# from the filesystem) for the whole timeout loses a claim it still wants.
CLAIM_TIMEOUT_SECONDS = 600.0
# How often a worker waiting for an item another worker holds looks for it again.
POLL_SECONDS = 5.0

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclasses.dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError("shard", f"shard must be I/N with 0 <= I < N, got "
                                       f"{self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str, env: Optional[Mapping[str, str]] = None) -> "Shard":
        """``"I/N"``, or ``"auto"`` for the index a SLURM job array gives
        (``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN``, of
        ``SLURM_ARRAY_TASK_COUNT``)."""
        if text.strip() == "auto":
            return cls.from_slurm(os.environ if env is None else env)
        m = _SHARD.fullmatch(text)
        if not m:
            raise ConfigError("shard", f"shard must be I/N (as 0/4) or auto, got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def from_slurm(cls, env: Mapping[str, str]) -> "Shard":
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
        missing = [n for n in names if n not in env]
        if missing:
            raise ConfigError("shard", "shard=auto needs a SLURM job array "
                                       f"({', '.join(missing)} not set); give I/N instead")
        try:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            return cls(int(env["SLURM_ARRAY_TASK_ID"]) - first,
                       int(env["SLURM_ARRAY_TASK_COUNT"]))
        except ValueError:
            raise ConfigError("shard", "shard=auto: SLURM_ARRAY_TASK_* are not integers") \
                from None

    def owns(self, position: int) -> bool:
        """Whether the item at ``position`` of the job's list is in this shard's share."""
        return position % self.count == self.index

    def order(self, n: int) -> list:
        """The positions 0..n-1 in the order this worker takes them: its share, then the
        next shard's, and so on round the shards."""
        return [p for k in range(self.count) for p in range(n)
                if p % self.count == (self.index + k) % self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie, dead but not yet
    reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc here: alive as far as we can tell
        return True


class Claims:
    """Claims on a job's items, as files ``<name>.claim`` in ``folder`` (shared by the
    workers; any filesystem with atomic rename: local, NFS, Lustre).

    Args:
      folder: where the claim files live; created on the first claim.
      timeout: seconds after which a claim whose heartbeat stopped may be broken.
    """

    def __init__(self, folder: str, *, timeout: float = CLAIM_TIMEOUT_SECONDS):
        if not timeout > 0:
            raise InputError(f"claim timeout must be > 0 seconds, got {timeout}")
        self.folder, self.timeout = folder, float(timeout)
        self.host = socket.gethostname()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, f"{name}.claim")

    def holder(self, name: str) -> Optional[dict]:
        """Who holds ``name`` (host, pid, token, claimed_at), or None when nobody does
        or the claim is stale."""
        held = self._read(self.path(name))
        return None if held is None or self._stale(self.path(name), held) else held

    def claim(self, name: str) -> Optional["Claim"]:
        """A held :class:`Claim` on ``name``, or None while another worker holds it."""
        path = self.path(name)
        record = {"host": self.host, "pid": os.getpid(), "token": uuid.uuid4().hex,
                  "claimed_at": time.time()}
        for _ in range(3):
            if self._create(path, record):
                return Claim(self, name, record["token"])
            held = self._read(path)
            if held is not None and not self._stale(path, held):
                return None
            if held is not None:
                self._break(path, held)
        return None

    def _create(self, path: str, record: dict) -> bool:
        """Writes ``record`` to ``path`` unless it exists; True when this call made it.
        The record is written beside it first and linked into place, so a reader never
        sees a half-written claim."""
        tmp = f"{path}.{record['token']}.tmp"
        for _ in range(5):  # the folder may vanish: the last claim out removes it
            os.makedirs(self.folder, exist_ok=True)
            try:
                with open(tmp, "w") as f:
                    json.dump(record, f)
                break
            except FileNotFoundError:
                continue
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: an exclusive create instead
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            return True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @staticmethod
    def _read(path: str) -> Optional[dict]:
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written (no-link fallback): held
            return {"token": None}

    def _stale(self, path: str, held: dict) -> bool:
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return True
        if age > self.timeout:
            return True
        pid = held.get("pid")
        return (held.get("host") == self.host and isinstance(pid, int)
                and pid != os.getpid() and not _pid_alive(pid))

    def _break(self, path: str, held: dict) -> None:
        """Removes the stale claim ``held`` at ``path``, and only that one: the file is
        moved aside first, and put back if a fresh claim took its place meanwhile."""
        aside = f"{path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = self._read(aside)
        if moved is not None and moved.get("token") != held.get("token"):
            try:
                os.link(aside, path)  # a fresh claim: back in place unless a newer one
            except OSError:
                pass
        os.remove(aside)


class Claim:
    """A held claim: a heartbeat keeps it fresh until :meth:`release` (or the end of a
    ``with`` block). ``lost`` turns true when the file no longer holds this claim."""

    def __init__(self, claims: Claims, name: str, token: str):
        self.claims, self.name, self.token = claims, name, token
        self.path = claims.path(name)
        self.lost = False
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"claim {name}")
        self._beat.start()

    def _ours(self) -> bool:
        held = self.claims._read(self.path)
        return held is not None and held.get("token") == self.token

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.claims.timeout / 4):
            if not self._ours():
                self.lost = True
                return
            try:
                os.utime(self.path)
            except OSError:
                self.lost = True
                return

    def release(self) -> None:
        """Stops the heartbeat and removes the claim file if it is still this claim's."""
        self._stop.set()
        self._beat.join()
        if self._ours():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.claims.folder)  # the last claim out removes the folder
        except OSError:
            pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def share_summary(shard_count: int, estimates: Iterable[Optional[float]]) -> list:
    """[(shard, items to do, estimated seconds)] of each shard's share, from the job's
    items' estimates in job order (None for an item already done)."""
    estimates = list(estimates)
    out = []
    for i in range(shard_count):
        shard = Shard(i, shard_count)
        mine = [e for p, e in enumerate(estimates) if shard.owns(p) and e is not None]
        out.append((shard, len(mine), float(sum(mine))))
    return out


def claim_unless_ready(claims: Optional[Claims], name: str, ready, *,
                       poll_seconds: float = POLL_SECONDS):
    """For work one worker does and the others wait for (training a classifier they all
    need): a held :class:`Claim` when this worker is to do it, None once ``ready()``
    (another worker did it). Without ``claims``: a claim-less go-ahead (a context that
    does nothing) unless ready."""
    while not ready():
        if claims is None:
            return contextlib.nullcontext()
        claim = claims.claim(name)
        if claim is not None:
            if ready():  # finished just before the claim
                claim.release()
                return None
            return claim
        time.sleep(poll_seconds)
    return None

