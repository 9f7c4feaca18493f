import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from binaries import loads_tensorflow, run_script

from defense_gan_tf import config as config_lib
from defense_gan_tf import training
from defense_gan_tf.errors import Interrupted
from defense_gan_tf.training import gan_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28, 1)) / 255.0).astype(np.float32)


def _with(cfg, **overrides):
    return config_lib.override(cfg, {k.replace("__", "."): v for k, v in overrides.items()})


def _weights(output_dir, cfg, average=False):
    """Generator and critic weights of the newest checkpoint in output_dir, then (with
    ``average``) the averaged generator's."""
    from defense_gan_tf import models

    parts = {"generator": models.build_generator(cfg), "critic": models.build_critic(cfg)}
    if average:
        parts["generator_average"] = models.build_generator(cfg)
    ckpt = tf.train.Checkpoint(**parts)
    ckpt.restore(tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
                 ).expect_partial()
    return [v.numpy() for model in parts.values() for v in model.weights]


def test_stream_resumes_exactly_and_epochs_are_permutations():
    images = _images(20)
    full = training.indexed_batches(images, batch_size=4, critic_steps=2, seed=3)
    first = [b.numpy() for b in full.take(6)]
    assert first[0].shape == (4, 2, 28, 28, 1)
    tail = [b.numpy() for b in training.indexed_batches(
        images, batch_size=4, critic_steps=2, seed=3, start_iteration=4).take(2)]
    np.testing.assert_array_equal(first[4], tail[0])
    np.testing.assert_array_equal(first[5], tail[1])
    # 20 images / batch 4 = 5 batches an epoch: the first 5 real batches cover every image once.
    seen = np.concatenate([b.transpose(1, 0, 2, 3, 4).reshape(-1, 28 * 28)
                           for b in first[:3]])[:20]
    keys = {row.tobytes() for row in seen}
    assert keys == {img.reshape(-1).tobytes() for img in images}


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_resume_gives_identical_weights_optimizer_and_average(tmp_path, tiny_config,
                                                              precision):
    """Two iterations, a stop, two more: the generator, the critic (so the Adam state and
    the real-batch and noise streams too) and the averaged generator are bit for bit those
    of four iterations in one go, in both precisions. Two critic steps per iteration."""
    images = _images()
    cfg4 = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=100,
                 gan__critic_steps=2, gan__ema_decay=0.9, gan__precision=precision)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    r1 = training.train_gan(_with(cfg4, gan__train_iters=2), a, images=images,
                            log=lambda m: None)
    assert (r1.iteration, r1.stop_reason) == (2, "completed")
    halfway = _weights(a, cfg4)
    r2 = training.train_gan(cfg4, a, images=images, log=lambda m: None)
    assert (r2.start_iteration, r2.iteration) == (2, 4)
    training.train_gan(cfg4, b, images=images, log=lambda m: None)
    resumed, straight = _weights(a, cfg4, average=True), _weights(b, cfg4, average=True)
    assert len(resumed) == len(straight) > len(halfway)
    for x, y in zip(resumed, straight):
        np.testing.assert_array_equal(x, y)
    # The last two iterations moved the weights, and the average is not the last
    # iterate, so the comparisons above can fail.
    assert any(not np.array_equal(x, y) for x, y in zip(resumed, halfway))
    size = len(straight) - len(halfway)  # the generator's (and so its average's) arrays
    raw, average = straight[:size], straight[-size:]
    assert any(not np.allclose(x, y) for x, y in zip(average, raw))


def test_outputs_written(tmp_path, tiny_config):
    """float32 (mixed_bfloat16: the next test)."""
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=2)
    result = training.train_gan(cfg, out, images=_images(), log=lambda m: None)
    assert result.stop_reason == "completed"
    assert all(np.isfinite(v) for v in result.last_logs.values())
    for name in ("config.json", "progress.json", "generator.keras", "samples/latest.png",
                 "samples/iter_0000002.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "tensorboard"))
    with open(os.path.join(out, "config.json")) as f:
        assert config_lib.Config.from_dict(json.load(f)) == cfg
    import keras

    g = keras.models.load_model(result.generator_path)
    assert g(np.zeros((1, 8), np.float32)).shape == (1, 28, 28, 1)


def test_refuses_to_resume_with_a_different_config(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    training.train_gan(_with(tiny_config, gan__train_iters=1), out, images=_images(),
                       log=lambda m: None)
    with pytest.raises(training.ConfigMismatchError, match="model.net_dim"):
        training.train_gan(_with(tiny_config, model__net_dim=8), out, images=_images(),
                           log=lambda m: None)
    # --overwrite starts afresh (that train_iters may change: the resume tests).
    r = training.train_gan(_with(tiny_config, model__net_dim=8, gan__train_iters=1), out,
                           images=_images(), overwrite=True, log=lambda m: None)
    assert r.start_iteration == 0


def test_corrupt_checkpoint_falls_back_then_errors(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=2)
    training.train_gan(cfg, out, images=_images(), log=lambda m: None)
    ckpt_dir = os.path.join(out, "checkpoints")
    for name in os.listdir(ckpt_dir):
        if name.startswith("ckpt-4.data"):
            with open(os.path.join(ckpt_dir, name), "r+b") as f:
                f.truncate(10)
    messages = []
    r = training.train_gan(_with(cfg, gan__train_iters=5), out, images=_images(),
                           log=messages.append)
    assert r.start_iteration == 2
    assert any("fell back" in m for m in messages)
    for name in os.listdir(ckpt_dir):
        if ".data" in name:
            with open(os.path.join(ckpt_dir, name), "r+b") as f:
                f.truncate(10)
    with pytest.raises(training.CheckpointError, match="no checkpoint"):
        training.train_gan(_with(cfg, gan__train_iters=6), out, images=_images(),
                           log=lambda m: None)


def test_checkpoint_files_without_index_is_an_error(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    training.train_gan(_with(tiny_config, gan__train_iters=1), out, images=_images(),
                       log=lambda m: None)
    os.remove(os.path.join(out, "checkpoints", "checkpoint"))
    for name in os.listdir(os.path.join(out, "checkpoints")):
        if name.endswith(".index"):
            os.remove(os.path.join(out, "checkpoints", name))
    with pytest.raises(training.CheckpointError, match="refusing to start afresh"):
        training.train_gan(_with(tiny_config, gan__train_iters=2), out, images=_images(),
                           log=lambda m: None)


def test_signal_stops_cleanly_with_a_checkpoint(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=50, gan__checkpoint_every=100)

    def log(message):
        if message.startswith("iter 2/"):
            os.kill(os.getpid(), signal.SIGINT)

    result = training.train_gan(cfg, out, images=_images(), log=log)
    assert result.stop_reason == "signal"
    assert result.iteration == 2
    with open(os.path.join(out, "progress.json")) as f:
        (stopped,) = json.load(f)["runs"]
    assert (stopped["end_iteration"], stopped["stop_reason"]) == (2, "signal")
    resumed = training.train_gan(_with(cfg, gan__train_iters=3), out, images=_images(),
                                 log=lambda m: None)
    assert resumed.start_iteration == 2
    with open(os.path.join(out, "progress.json")) as f:
        runs = json.load(f)["runs"]
    assert [(r["start"], r["start_iteration"], r["end_iteration"], r["stop_reason"])
            for r in runs] == [("fresh", 0, 2, "signal"), ("resumed", 2, 3, "completed")]


def test_time_budget_stops_before_the_end(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=100_000)
    result = training.train_gan(cfg, out, images=_images(), time_budget_minutes=0.3,
                                log=lambda m: None)
    assert result.stop_reason == "time_budget"
    assert 0 < result.iteration < 100_000
    assert result.seconds < 0.3 * 60
    assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith(
        f"ckpt-{result.iteration}")


def test_second_process_is_locked_out(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    with gan_trainer.exclusive(out):
        code = ("import fcntl, sys\n"
                f"h = open({os.path.join(out, '.lock')!r}, 'a')\n"
                "try:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
                "except BlockingIOError:\n    sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3


def test_bin_train_smoke_run(tmp_path, mnist_dir):
    out = str(tmp_path / "run")
    cmd = [os.path.join(ROOT, "bin", "train.py"), "--dataset=mnist",
           f"--output_dir={out}", "--train_iters=3", "--net_dim=4", "--latent_dim=8",
           "--batch_size=4", "--critic_steps=2", "--log_every=1", "--sample_every=3",
           "--checkpoint_every=2", "--set=gan.seed=5"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", DEFENSE_GAN_DATA_DIR=mnist_dir)
    proc = run_script(*cmd, "--precision=auto",
                      env=dict(env, DEFENSE_GAN_LAUNCHER="bash leg.sh 1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter 3/3" in proc.stdout and "it/s" in proc.stdout and "ETA" in proc.stdout
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["net_dim"] == 4 and saved["gan"]["seed"] == 5
    from defense_gan_tf import hardware  # auto: what this device computes natively

    assert saved["gan"]["precision"] == hardware.auto_precision()
    assert f"--precision=auto: {hardware.auto_precision()}" in proc.stdout
    assert os.path.exists(os.path.join(out, "generator.keras"))
    assert os.path.exists(os.path.join(out, "samples", "iter_0000003.png"))
    with open(os.path.join(out, "progress.json")) as f:  # the call records itself
        (run,) = json.load(f)["runs"]
    assert run["command"].startswith("python bin/train.py --dataset=mnist --output_dir=")
    assert "--precision=auto" in run["command"] and run["launcher"] == "bash leg.sh 1"
    assert (run["start_iteration"], run["end_iteration"], run["stop_reason"]) == (
        0, 3, "completed")
    # Resuming with a different width is refused with a clear message, before TensorFlow
    # loads (a fresh interpreter, to see what it imports).
    bad = subprocess.run([sys.executable, "-X", "importtime", *cmd[:-1], "--net_dim=8"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "model.net_dim" in bad.stderr
    assert not loads_tensorflow(bad.stderr)
    # Unknown override keys fail before any work.
    bad = run_script(*cmd, "--set=gan.bogus=1", env=env)
    assert bad.returncode != 0 and "gan.bogus" in bad.stderr
    # A time budget that stops the run before --train_iters: a checkpoint, exit status 3.
    cmd[cmd.index("--train_iters=3")] = "--train_iters=1000"
    stopped = run_script(*cmd, "--time_budget_minutes=1e-6", env=env)
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "not finished: iteration " in stopped.stdout, stopped.stdout[-1000:]
    assert " of 1000; run the same command again" in stopped.stdout, stopped.stdout[-1000:]


def test_celeba_shaped_training_from_a_streamed_dataset(tmp_path):
    # The CelebA path: 64x64x3 images in [-1, 1] streamed through a shuffle buffer.
    cfg = config_lib.override(config_lib.preset("celeba"), {
        "model.net_dim": 2, "model.latent_dim": 4, "gan.batch_size": 2,
        "gan.critic_steps": 2, "gan.train_iters": 2, "gan.log_every": 1,
        "gan.checkpoint_every": 1, "gan.sample_every": 2})
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(10, 64, 64, 3)).astype(np.float32)
    labels = rng.integers(0, 2, 10)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    out = str(tmp_path / "celeba")
    result = training.train_gan(cfg, out, dataset=ds, log=lambda m: None)
    assert result.iteration == 2
    import keras

    g = keras.models.load_model(result.generator_path)
    sample = g(np.zeros((1, 4), np.float32)).numpy()
    assert sample.shape == (1, 64, 64, 3) and -1 <= sample.min() and sample.max() <= 1
    batch = next(iter(training.streaming_batches(ds, batch_size=2, critic_steps=2, seed=0)))
    assert batch.shape == (2, 2, 64, 64, 3)
    only_images = tf.data.Dataset.from_tensor_slices(images)
    batch = next(iter(training.streaming_batches(only_images, batch_size=3, critic_steps=2,
                                                 seed=0)))
    assert batch.shape == (3, 2, 64, 64, 3)


def test_only_the_chief_writes_the_run_files():
    class Resolver:
        def __init__(self, task_type, task_id, spec):
            self.task_type, self.task_id, self._spec = task_type, task_id, spec

        def cluster_spec(self):
            return tf.train.ClusterSpec(self._spec)

    class Strategy:
        def __init__(self, resolver):
            self.cluster_resolver = resolver

    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert gan_trainer.is_chief(tf.distribute.get_strategy())
    assert gan_trainer.is_chief(Strategy(Resolver("worker", 0, workers)))
    assert not gan_trainer.is_chief(Strategy(Resolver("worker", 1, workers)))
    assert gan_trainer.is_chief(Strategy(Resolver("chief", 0, with_chief)))
    assert not gan_trainer.is_chief(Strategy(Resolver("worker", 0, with_chief)))


def test_mixed_bfloat16_trains_with_finite_losses_and_saves_float32(tmp_path, tiny_config):
    import keras

    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=2, gan__precision="mixed_bfloat16")
    result = training.train_gan(cfg, out, images=_images(), log=lambda m: None)
    assert result.stop_reason == "completed"
    assert all(np.isfinite(v) for v in result.last_logs.values())
    for name in ("generator.keras", "critic.keras"):
        model = keras.models.load_model(os.path.join(out, name))
        assert {layer.compute_dtype for layer in model.layers} == {"float32"}, name
    g = keras.models.load_model(result.generator_path)
    assert g(np.zeros((2, 8), np.float32)).dtype == tf.float32


def test_mixed_bfloat16_computes_in_bfloat16_and_differs_from_float32(tmp_path, tiny_config):
    from defense_gan_tf import models

    g = models.build_generator(tiny_config, seed=0, precision="mixed_bfloat16")
    assert g.get_layer("up1").compute_dtype == "bfloat16"
    assert g.get_layer("up1").kernel.dtype == "float32"
    assert g.get_layer("up3_sigmoid").compute_dtype == "float32"
    d = models.build_critic(tiny_config, seed=0, precision="mixed_bfloat16")
    assert d.get_layer("conv1").compute_dtype == "bfloat16"
    assert d.get_layer("score").compute_dtype == "float32"
    # Same weights, other arithmetic: the saved float32 copy is exact, not rounded.
    g32 = models.float32_copy(g, lambda: models.build_generator(tiny_config))
    for a, b in zip(g.get_weights(), g32.get_weights()):
        np.testing.assert_array_equal(a, b)
    z = tf.random.stateless_normal([4, 8], seed=[1, 2])
    assert not np.array_equal(g(z).numpy(), g32(z).numpy())
    np.testing.assert_allclose(g(z).numpy(), g32(z).numpy(), atol=0.05)
    with pytest.raises(ValueError, match="gan.precision"):
        _with(tiny_config, gan__precision="float16")


class _CountingEvaluator:
    """Stands in for the quality probe: records calls, takes `seconds` each."""

    def __init__(self, seconds=0.0):
        self.calls, self.seconds = [], seconds

    def __call__(self, generator):
        import time

        assert {layer.compute_dtype for layer in generator.layers} == {"float32"}
        self.calls.append(generator(np.zeros((1, 8), np.float32)).numpy().mean())
        time.sleep(self.seconds)
        return {"figure": len(self.calls)}


def test_evaluator_runs_every_n_iterations_and_is_not_training_time(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=5, gan__checkpoint_every=100,
                gan__precision="mixed_bfloat16")
    evaluator = _CountingEvaluator(seconds=1.5)
    result = training.train_gan(cfg, out, images=_images(), log=lambda m: None,
                                evaluator=evaluator, evaluate_every=2)
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert [e["iteration"] for e in entries] == [2, 4]
    assert [e["figure"] for e in entries] == [1, 2]
    assert all(e["eval_seconds"] >= 1.5 for e in entries)
    # An entry's training time excludes its own evaluation (and the earlier ones).
    assert entries[1]["train_seconds"] - entries[0]["train_seconds"] < 1.5
    # Two 1.5 s evaluations are excluded from the training time but counted apart.
    assert result.total_train_seconds < result.seconds - 3.0
    with open(os.path.join(out, "progress.json")) as f:
        assert json.load(f)["total_eval_seconds"] >= 3.0
    # A checkpoint is written at each evaluated iteration.
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-4.index"))
    with pytest.raises(ValueError, match="evaluate_every"):
        training.train_gan(cfg, str(tmp_path / "x"), images=_images(), log=lambda m: None,
                           evaluator=evaluator, evaluate_every=0)


def test_an_evaluation_of_the_last_iteration_is_counted_in_progress(tmp_path, tiny_config):
    # The last checkpoint comes before the final evaluation; its time must still reach
    # progress.json (and so the package manifest and a later resume).
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=100)
    training.train_gan(cfg, out, images=_images(), log=lambda m: None,
                       evaluator=_CountingEvaluator(seconds=1.0), evaluate_every=2)
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert [e["iteration"] for e in entries] == [2, 4]
    with open(os.path.join(out, "progress.json")) as f:
        progress = json.load(f)
    assert progress["iteration"] == 4
    assert progress["total_eval_seconds"] == pytest.approx(
        sum(e["eval_seconds"] for e in entries), abs=0.2)
    assert progress["total_eval_seconds"] >= 2.0
    # A resume to more iterations starts from that total.
    training.train_gan(_with(cfg, gan__train_iters=5), out, images=_images(),
                       log=lambda m: None, evaluator=_CountingEvaluator(seconds=1.0),
                       evaluate_every=2)
    with open(os.path.join(out, "progress.json")) as f:
        assert json.load(f)["total_eval_seconds"] >= progress["total_eval_seconds"]


def test_each_call_is_recorded_in_progress_even_when_killed(tmp_path, tiny_config):
    """progress.json's runs: the entry of a call is rewritten with each checkpoint, so a
    process killed during the evaluation (after the checkpoint before it) leaves the
    iterations it saved and no stop reason; the clean stop adds its reason."""
    from defense_gan_tf.errors import InputError
    from defense_gan_tf.training import run_history

    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=100)
    seen = []

    def evaluator(generator):
        with open(os.path.join(out, "progress.json")) as f:
            seen.append(json.load(f)["runs"][-1])
        return {"figure": 1}

    training.train_gan(cfg, out, images=_images(), log=lambda m: None, evaluator=evaluator,
                       evaluate_every=2, command="python bin/train.py --x=1",
                       launcher="bash chain.sh 5", time_budget_minutes=20)
    during = seen[0]
    assert (during["end_iteration"], during["stop_reason"], during["evaluated"]) == (
        2, None, [])
    assert run_history.describe(during) == (
        "python bin/train.py --x=1 (through bash chain.sh 5; started afresh, budget 20 min, "
        "iterations 0-2, ended without a clean stop (killed or crashed) after its last "
        "checkpoint)")
    with open(os.path.join(out, "progress.json")) as f:
        (done,) = json.load(f)["runs"]
    assert (done["end_iteration"], done["stop_reason"], done["evaluated"]) == (
        4, "completed", [2, 4])
    assert run_history.describe(done).endswith(
        "iterations 0-4 with the evaluations at 2 and 4, reached its train_iters)")
    # A broken record is refused on resume with the file named, before any training.
    with open(os.path.join(out, "progress.json")) as f:
        progress = json.load(f)
    progress["runs"] = {"not": "a list"}
    with open(os.path.join(out, "progress.json"), "w") as f:
        json.dump(progress, f)
    with pytest.raises(InputError, match="progress.json.*runs"):
        training.train_gan(_with(cfg, gan__train_iters=5), out, images=_images(),
                           log=lambda m: None)


def test_pending_evaluation_runs_first_on_resume(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=100)
    training.train_gan(cfg, out, images=_images(), log=lambda m: None)
    evaluator = _CountingEvaluator()
    training.train_gan(_with(cfg, gan__train_iters=5), out, images=_images(),
                       log=lambda m: None, evaluator=evaluator, evaluate_every=4)
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert [e["iteration"] for e in entries] == [4]
    # Resuming again does not evaluate iteration 4 a second time.
    training.train_gan(_with(cfg, gan__train_iters=6), out, images=_images(),
                       log=lambda m: None, evaluator=evaluator, evaluate_every=4)
    assert len(evaluator.calls) == 1


class _BatchedEvaluator:
    """Stands in for the quality probe's batches: each saved under cache_dir, loaded when
    there, and ``stop`` asked before each new one; sends SIGTERM to this process after
    computing batch ``signal_at`` (a signal arriving in the middle of an evaluation)."""

    def __init__(self, batches=3, signal_at=None):
        self.batches, self.signal_at = batches, signal_at
        self.computed = self.loaded = 0

    def __call__(self, generator, *, stop, cache_dir, log):
        os.makedirs(cache_dir, exist_ok=True)
        for b in range(self.batches):
            path = os.path.join(cache_dir, f"batch_{b}")
            if os.path.exists(path):
                self.loaded += 1
                continue  # a batch of the interrupted call
            if stop():
                raise Interrupted(f"stopped after {b} of {self.batches} batches")
            with open(path, "w") as f:
                f.write("done")
            self.computed += 1
            log(f"batch {b + 1}/{self.batches}")
            if self.computed == self.signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
        return {"figure": len(os.listdir(cache_dir))}


def test_a_signal_during_an_evaluation_stops_it_between_batches_and_loses_none(
        tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=6, gan__checkpoint_every=100)
    evaluator = _BatchedEvaluator(signal_at=1)
    messages = []
    result = training.train_gan(cfg, out, images=_images(), log=messages.append,
                                evaluator=evaluator, evaluate_every=2)
    # Stopped at the evaluated iteration, after one batch of three, nothing recorded.
    assert (result.stop_reason, result.iteration) == ("signal", 2)
    assert evaluator.computed == 1
    assert not os.path.exists(os.path.join(out, "quality.jsonl"))
    assert any("interrupted" in m and "resumes" in m for m in messages), messages
    assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith("ckpt-2")
    # The resumed run finishes that evaluation first from the saved batch, then goes on.
    evaluator.signal_at = None
    resumed = training.train_gan(cfg, out, images=_images(), log=lambda m: None,
                                 evaluator=evaluator, evaluate_every=2)
    assert (resumed.start_iteration, resumed.iteration) == (2, 6)
    assert evaluator.loaded == 1
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert [(e["iteration"], e["figure"]) for e in entries] == [(2, 3), (4, 3), (6, 3)]
    assert not os.path.exists(os.path.join(out, "evaluation_cache"))


def test_a_failing_evaluation_is_recorded_and_training_goes_on(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=4, gan__checkpoint_every=100)
    counting = _CountingEvaluator()

    def flaky(generator):
        if not counting.calls:
            counting.calls.append(None)
            raise FloatingPointError("images contain NaN")
        return counting(generator)

    messages = []
    result = training.train_gan(cfg, out, images=_images(), log=messages.append,
                                evaluator=flaky, evaluate_every=2)
    assert (result.iteration, result.stop_reason) == (4, "completed")
    entries = gan_trainer.read_quality(os.path.join(out, "quality.jsonl"))
    assert [e["iteration"] for e in entries] == [2, 4]
    assert entries[0]["error"] == "FloatingPointError: images contain NaN"
    assert entries[1]["figure"] == 2
    assert any("evaluation at iteration 2 failed" in m and "Traceback" in m
               for m in messages)
    # A resume neither retries the failed evaluation nor repeats the good one.
    training.train_gan(_with(cfg, gan__train_iters=5), out, images=_images(),
                       log=lambda m: None, evaluator=flaky, evaluate_every=2)
    assert len(counting.calls) == 2


def test_evaluation_without_time_left_stops_and_is_pending(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=100_000, gan__checkpoint_every=100)
    evaluator = _CountingEvaluator()
    # The first evaluation's cost is guessed at 300 s: a 1-minute budget cannot hold it.
    result = training.train_gan(cfg, out, images=_images(), log=lambda m: None,
                                evaluator=evaluator, evaluate_every=3,
                                time_budget_minutes=1.0)
    assert (result.iteration, result.stop_reason) == (3, "time_budget")
    assert evaluator.calls == []
    assert os.path.exists(os.path.join(out, "checkpoints", "ckpt-3.index"))
    training.train_gan(_with(cfg, gan__train_iters=3), out, images=_images(),
                       log=lambda m: None, evaluator=evaluator, evaluate_every=3)
    from defense_gan_tf.training import run_history

    with open(os.path.join(out, "progress.json")) as f:
        left, pending = run_history.train_commands(json.load(f)["runs"])
    assert left.endswith("iterations 0-3, stopped by its time budget before the evaluation "
                         "at 3)")
    assert pending.endswith("iterations 3-3 with the evaluation at 3, reached its "
                            "train_iters)")
    assert [e["iteration"] for e in gan_trainer.read_quality(
        os.path.join(out, "quality.jsonl"))] == [3]


def test_evaluation_cost_is_counted_in_iterations_of_the_earlier_entries():
    # 10 s of training for 100 iterations (0.1 s each), then a 50 s evaluation:
    # 500 iterations' worth. The last three pairs decide, the dearest wins.
    entries = [{"iteration": 100 * i, "train_seconds": 10.0 * i, "eval_seconds": 50.0}
               for i in range(1, 6)]
    entries[-1]["eval_seconds"] = 80.0
    assert gan_trainer.evaluation_cost_in_iterations(entries) == pytest.approx(800.0)
    assert gan_trainer.evaluation_cost_in_iterations(entries[:1]) is None
    assert gan_trainer.evaluation_cost_in_iterations([{"iteration": 5}] * 3) is None


def test_time_budget_expects_an_evaluation_as_dear_as_the_earlier_ones(tmp_path,
                                                                        tiny_config):
    # Earlier entries (say, of the package a warm start continues) show an evaluation
    # costing 100,000 training iterations. At this machine's speed that is far more than
    # a 10-minute budget holds, though the fixed 300 s guess would fit: no evaluation runs.
    out = tmp_path / "run"
    out.mkdir()
    (out / "quality.jsonl").write_text(
        json.dumps({"iteration": 1000, "train_seconds": 100.0, "eval_seconds": 1.0}) + "\n"
        + json.dumps({"iteration": 2000, "train_seconds": 110.0, "eval_seconds": 1000.0})
        + "\n")
    cfg = _with(tiny_config, gan__train_iters=100_000, gan__checkpoint_every=100)
    evaluator = _CountingEvaluator()
    messages = []
    result = training.train_gan(cfg, str(out), images=_images(), log=messages.append,
                                evaluator=evaluator, evaluate_every=12,
                                time_budget_minutes=10.0)
    assert (result.iteration, result.stop_reason) == (12, "time_budget")
    assert evaluator.calls == []
    assert any("no time left" in m for m in messages)


def test_non_finite_loss_stops_without_overwriting_good_files(tmp_path, tiny_config):
    out = str(tmp_path / "run")
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100)
    training.train_gan(cfg, out, images=_images(), log=lambda m: None)
    good = _weights(out, cfg)
    with open(os.path.join(out, "generator.keras"), "rb") as f:
        good_generator = f.read()
    poisoned = _images()
    poisoned[:, 0, 0, 0] = np.nan
    messages = []
    r = training.train_gan(_with(cfg, gan__train_iters=4), out, images=poisoned,
                           log=messages.append)
    assert (r.stop_reason, r.iteration) == ("nan", 2)
    assert any("non-finite loss at iteration 3" in m for m in messages)
    for a, b in zip(good, _weights(out, cfg)):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(out, "generator.keras"), "rb") as f:
        assert f.read() == good_generator


def test_a_run_moves_to_another_precision_on_resume_and_records_it(tmp_path, tiny_config):
    """Weights and Adam state are float32 in both precisions, so a run may continue in
    the one a machine computes fastest; the optimizer state carries over and the
    iterations of each precision are recorded."""
    from defense_gan_tf.generators.package import precision_segments

    images = _images()
    cfg = _with(tiny_config, gan__train_iters=2, gan__checkpoint_every=100)
    out = str(tmp_path / "run")
    training.train_gan(cfg, out, images=images, log=lambda m: None)
    messages = []
    mixed = _with(cfg, gan__train_iters=3, gan__precision="mixed_bfloat16")
    result = training.train_gan(mixed, out, images=images, log=messages.append)
    # Resumed, not restarted: the iteration is the generator optimizer's own step count.
    assert (result.start_iteration, result.iteration) == (2, 3)
    assert any("iterations up to 2 trained in float32" in m for m in messages)
    with open(os.path.join(out, "progress.json")) as f:
        progress = json.load(f)
    assert progress["precision"] == "mixed_bfloat16"
    assert precision_segments(progress["warm_starts"], 3, "mixed_bfloat16") == [
        {"from": 0, "to": 2, "precision": "float32"},
        {"from": 2, "to": 3, "precision": "mixed_bfloat16"}]
