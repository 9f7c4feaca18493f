"""Shards and claims: every item taken by exactly one worker, abandoned claims taken over."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from defense_gan_tf.errors import ConfigError
from defense_gan_tf.sharding import Claims, Shard, share_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_shard_parsing_and_its_refusals():
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard.parse(" 0 / 1 ")) == "0/1"
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
           "SLURM_ARRAY_TASK_COUNT": "3"}
    assert Shard.parse("auto", env) == Shard(2, 3)
    for bad in ("4/4", "1/0", "-1/2", "1", "a/b", "1/2/3"):
        with pytest.raises(ConfigError, match="shard") as e:
            Shard.parse(bad)
        assert e.value.fields == ("shard",)
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_COUNT"):
        Shard.parse("auto", {"SLURM_ARRAY_TASK_ID": "0"})


def test_shares_cover_every_item_once_and_each_worker_takes_its_own_first():
    n, count = 11, 3
    shares = [[p for p in range(n) if Shard(i, count).owns(p)] for i in range(count)]
    assert sorted(sum(shares, [])) == list(range(n))
    for i in range(count):
        order = Shard(i, count).order(n)
        assert sorted(order) == list(range(n))
        assert order[:len(shares[i])] == shares[i]
        # then the next shard's share, round the shards
        nxt = shares[(i + 1) % count]
        assert order[len(shares[i]):len(shares[i]) + len(nxt)] == nxt
    summary = share_summary(2, [10.0, None, 5.0, 1.0, 2.0])
    assert [(str(s), k, sec) for s, k, sec in summary] == [("0/2", 3, 17.0), ("1/2", 1, 1.0)]


def test_a_held_claim_excludes_others_until_released(tmp_path):
    a, b = Claims(str(tmp_path / "c")), Claims(str(tmp_path / "c"))
    first = a.claim("cell")
    assert first is not None and b.claim("cell") is None
    assert b.holder("cell")["pid"] == os.getpid()
    other = b.claim("another cell")
    assert other is not None
    first.release()
    assert b.holder("cell") is None
    with b.claim("cell") as again:
        assert a.claim("cell") is None and not again.lost
    other.release()
    assert not os.path.exists(tmp_path / "c")  # the last claim out removes the folder


def test_a_claim_whose_heartbeat_stopped_is_broken_and_a_live_one_is_kept_fresh(tmp_path):
    claims = Claims(str(tmp_path / "c"), timeout=0.4)
    held = claims.claim("cell")
    time.sleep(1.0)  # the heartbeat (every 0.1 s) keeps it younger than the timeout
    assert claims.claim("cell") is None and not held.lost
    held._stop.set()
    held._beat.join()  # a worker stalled: its heartbeat stops
    old = time.time() - 5
    os.utime(held.path, (old, old))
    taker = claims.claim("cell")
    assert taker is not None
    assert json.load(open(taker.path))["token"] == taker.token
    held.release()  # the stalled worker wakes up: it must not remove the new claim
    assert os.path.exists(taker.path) and claims.claim("cell") is None
    taker.release()


def test_a_killed_workers_claim_on_this_machine_is_taken_over_at_once(tmp_path):
    folder = str(tmp_path / "c")
    code = ("import sys, time; from defense_gan_tf.sharding import Claims; "
            f"c = Claims({folder!r}).claim('cell'); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert proc.stdout.readline().strip() == "held"
        claims = Claims(folder)  # the default timeout: ten minutes
        assert claims.claim("cell") is None
        proc.send_signal(signal.SIGKILL)
        time.sleep(0.5)  # dead, not yet reaped (a zombie): taken over all the same
        taken = claims.claim("cell")
        assert taken is not None
        taken.release()
    finally:
        proc.kill()


def test_racing_workers_claim_each_item_exactly_once(tmp_path):
    folder, log = str(tmp_path / "c"), str(tmp_path / "log")
    os.makedirs(log)
    code = (
        "import os, sys, time\n"
        "from defense_gan_tf.sharding import Claims, Shard\n"
        "claims, me = Claims(sys.argv[1]), int(sys.argv[3])\n"
        "held = []\n"
        "for p in Shard(me, 4).order(40):\n"
        "    c = claims.claim(f'item{p}')\n"
        "    if c is not None:\n"
        "        open(os.path.join(sys.argv[2], f'{p}-{me}'), 'w').close()\n"
        "        held.append(c)\n"  # held to the end: nobody may take an item twice
        "time.sleep(1)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, folder, log, str(i)],
                              env=dict(os.environ, PYTHONPATH=ROOT)) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    done = [name.split("-")[0] for name in os.listdir(log)]
    assert sorted(map(int, done)) == list(range(40))
