"""The WGAN-GP training workflow: data stream, loop, checkpoints, monitoring.

:func:`train_gan` is what ``bin/train.py`` calls. It resumes from the newest
checkpoint in ``output_dir``, stops cleanly on SIGINT / SIGTERM or before a
time budget runs out (writing a checkpoint first), and leaves behind:

    output_dir/config.json          the config trained with
    output_dir/checkpoints/         training state (weights, Adam slots, iteration)
    output_dir/progress.json        iterations done, cumulative training seconds
    output_dir/quality.jsonl        with an evaluator: one line of figures per evaluation
    output_dir/samples/             sample grids from fixed noise
    output_dir/tensorboard/         scalars
    output_dir/generator.keras      the generator, for the defense
    output_dir/generator_ema.keras  the exponential moving average of its weights
                                    (``gan.ema_decay``; see training/averaging.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import threading
import time
import traceback
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf import data as data_lib
from defense_gan_tf import hardware, jsonio
from defense_gan_tf.atomic import save_model
from defense_gan_tf.config import Config
from defense_gan_tf.console import echo
from defense_gan_tf.errors import InputError
from defense_gan_tf.models import build_critic, build_generator, float32_copy
from defense_gan_tf.plots import save_image_grid
from defense_gan_tf.training.averaging import WeightAverage
from defense_gan_tf.training.checkpoints import Checkpointer
from defense_gan_tf.training.wgan_gp import WGANGP

STRATEGIES = ("default", "mirrored", "multi_worker")

# Config keys that may change between a run and its resumption. The precision may too:
# weights and Adam state are float32 in both, so a run can move to the precision a
# machine computes fastest (recorded in progress.json, see _restore).
RESUMABLE_KEYS = frozenset({"gan.train_iters", "gan.checkpoint_every",
                            "gan.sample_every", "gan.log_every", "gan.precision"})
# Sections that do not affect GAN training.
_IGNORED_SECTIONS = ("projection", "classifier", "attack")

GENERATOR_FILE = "generator.keras"
AVERAGE_FILE = "generator_ema.keras"
# The checkpoint's name of the averaged generator (absent from older checkpoints).
_AVERAGE_KEY = "generator_average"
CRITIC_FILE = "critic.keras"
QUALITY_FILE = "quality.jsonl"
# First guess of an evaluation's cost, for the time budget, until one was timed.
_EVAL_SECONDS_GUESS = 300.0
NUM_SAMPLES = 64


class ConfigMismatchError(ValueError):
    """The output folder was trained with a different config."""


class WarmStartError(ValueError):
    """The warm-start weights do not fit the run's config."""


class OutputDirBusyError(RuntimeError):
    """Another process is training into the same output folder."""


@contextlib.contextmanager
def _exclusive(output_dir: str):
    """Holds an exclusive lock on ``output_dir`` (released when the process dies)."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirBusyError(
                f"another process is training into {output_dir}; wait for it to stop "
                "or use another --output_dir") from None
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a call to :func:`train_gan` did.

    Attributes:
      start_iteration: iteration restored from a checkpoint (0 for a fresh run).
      iteration: iteration reached.
      stop_reason: ``completed``, ``time_budget``, ``signal`` or ``nan``.
      seconds: wall time of this call.
      total_train_seconds: training wall time summed over all resumptions.
      generator_path: the saved ``.keras`` generator.
      last_logs: the last step's losses.
      average_path: the saved averaged generator (None with ``gan.ema_decay=0``).
    """

    start_iteration: int
    iteration: int
    stop_reason: str
    seconds: float
    total_train_seconds: float
    generator_path: str
    last_logs: dict
    average_path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Weights a fresh run starts from when the run folder (with its optimizer state) is lost.

    The run continues at ``iteration`` (data order and random draws follow the
    iteration number, as on an exact resume), with fresh Adam moments; the
    warm start is recorded in ``progress.json`` and so in the package manifest.

    Attributes:
      generator_path, critic_path: float32 ``.keras`` models of the run's architecture.
      iteration: generator iterations the weights were trained for.
      train_seconds, eval_seconds: training and evaluation time spent before.
      warm_starts: earlier warm starts of the same lineage.
      quality_path: the earlier ``quality.jsonl``, continued by the new run.
      source: where the weights came from (recorded).
      precision: the training precision of the package's last run, if recorded.
      average_path: the package's averaged generator, if it has one (otherwise the
        average starts from the generator's weights).
    """

    generator_path: str
    critic_path: str
    iteration: int
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    warm_starts: tuple = ()
    quality_path: Optional[str] = None
    source: str = ""
    precision: Optional[str] = None
    average_path: Optional[str] = None


def load_warm_start(package_dir: str) -> WarmStart:
    """A :class:`WarmStart` from a packaged generator folder (``pretrained/<dataset>``).

    Raises:
      FileNotFoundError: the folder lacks manifest.json, generator.keras or critic.keras.
      ValueError: the manifest cannot be read.
    """
    paths = {name: os.path.join(package_dir, name)
             for name in ("manifest.json", GENERATOR_FILE, CRITIC_FILE)}
    if not os.path.isfile(paths["manifest.json"]):
        raise FileNotFoundError(f"warm start folder {package_dir} has no manifest.json")
    try:
        with open(paths["manifest.json"]) as f:
            manifest = json.load(f)
        iteration = int(manifest["iterations"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{paths['manifest.json']} cannot be read: {e}") from None
    for name in (GENERATOR_FILE, CRITIC_FILE):
        if not os.path.isfile(paths[name]):
            # A package made without its critic says why (package_generator's critic_note).
            why = manifest.get("critic_note") if name == CRITIC_FILE else None
            raise FileNotFoundError(
                f"warm start folder {package_dir} has no {name}"
                + (f" ({why}); continue from the run folder instead" if why else ""))
    quality = os.path.join(package_dir, QUALITY_FILE)
    average = os.path.join(package_dir, AVERAGE_FILE)
    return WarmStart(
        generator_path=paths[GENERATOR_FILE], critic_path=paths[CRITIC_FILE],
        iteration=iteration,
        train_seconds=float(manifest.get("train_wall_seconds", 0.0)),
        eval_seconds=float(manifest.get("eval_wall_seconds", 0.0)),
        warm_starts=tuple(manifest.get("warm_starts", ())),
        quality_path=quality if os.path.isfile(quality) else None,
        source=package_dir, precision=manifest.get("precision"),
        average_path=average if os.path.isfile(average) else None)


def _apply_warm_start(warm: WarmStart, model: WGANGP, config: Config,
                      average: Optional[WeightAverage]) -> None:
    import keras as keras_lib

    pairs = [(model.generator, warm.generator_path), (model.critic, warm.critic_path)]
    if average is not None and warm.average_path:
        pairs.append((average.target, warm.average_path))
    for target, path in pairs:
        try:
            source = keras_lib.models.load_model(path)
            target.set_weights(source.get_weights())
        except (ValueError, OSError) as e:
            raise WarmStartError(f"warm start: {path} does not fit the config's "
                             f"{target.name} ({type(e).__name__}: {str(e)[:200]})") from None
    model.g_optimizer.iterations.assign(warm.iteration)
    model.d_optimizer.iterations.assign(warm.iteration * config.gan.critic_steps)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the ``tf.distribute`` strategy called ``name``.

    ``mirrored`` mirrors over all GPUs, or over all logical CPU devices when
    there is no GPU (useful for testing with
    ``tf.config.set_logical_device_configuration``). ``multi_worker`` reads
    the cluster from the ``TF_CONFIG`` environment variable.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, except on non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def indexed_batches(images: np.ndarray, *, batch_size: int, critic_steps: int,
                    seed: int, start_iteration: int = 0) -> tf.data.Dataset:
    """An endless stream of real batches [batch, critic_steps, H, W, C] from memory.

    Each epoch is a permutation drawn statelessly from (seed, epoch), so the
    stream from ``start_iteration`` is exactly the tail of the stream from 0:
    a resumed run sees the same data an uninterrupted one would.
    """
    images = np.asarray(images)
    n = images.shape[0]
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"need at least batch_size={batch_size} training images, got {n}")
    quantised = np.round(images * 255.0)
    if images.dtype != np.uint8 and images.min() >= 0 and np.array_equal(
            quantised / 255.0, images.astype(np.float64)):
        store, divisor = quantised.astype(np.uint8), 255.0  # 4x less memory.
    else:
        store, divisor = images.astype(np.float32), 1.0
    table = tf.constant(store)
    first_batch = start_iteration * critic_steps
    seed = int(seed)

    def epoch_indices(epoch):
        keys = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64),
                                                               epoch]))
        order = tf.argsort(keys)[:per_epoch * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [per_epoch, batch_size]))

    def gather(indices):  # [critic_steps, batch] -> [batch, critic_steps, H, W, C]
        real = tf.cast(tf.gather(table, indices), tf.float32) / divisor
        return tf.transpose(real, [1, 0] + list(range(2, len(real.shape))))

    ds = tf.data.Dataset.range(first_batch // per_epoch, np.iinfo(np.int64).max)
    ds = ds.flat_map(epoch_indices).skip(first_batch % per_epoch)
    ds = ds.batch(critic_steps, drop_remainder=True)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def streaming_batches(dataset: tf.data.Dataset, *, batch_size: int, critic_steps: int,
                      seed: int, start_iteration: int = 0,
                      shuffle_buffer: int = 10_000) -> tf.data.Dataset:
    """Real batches from a dataset too large for memory (CelebA).

    The shuffle is reseeded from (seed, start_iteration) on resumption, so the
    data order after a resume differs from an uninterrupted run (weights,
    optimizer state and z draws are still restored exactly).
    """
    ds = dataset.map(lambda *element: element[0])  # (image, label) or image alone
    ds = ds.shuffle(shuffle_buffer, seed=int(seed) * 1_000_003 + int(start_iteration))
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    ds = ds.batch(critic_steps, drop_remainder=True)
    return ds.map(lambda x: tf.transpose(x, [1, 0, 2, 3, 4])).prefetch(2)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Config, current: Config) -> list[str]:
    """Keys (dotted) whose values differ in ways that forbid resuming."""
    a, b = _flatten(saved.to_dict()), _flatten(current.to_dict())
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_KEYS or key.split(".")[0] in _IGNORED_SECTIONS:
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: saved {a.get(key)!r}, now {b.get(key)!r}")
    return diffs


def _has_training_state(output_dir: str) -> bool:
    """Whether a run folder holds anything trained (a checkpoint or progress record).

    A config.json alone is what a start that failed before training leaves; it
    must not block a rerun with other settings.
    """
    checkpoints = os.path.join(output_dir, "checkpoints")
    return os.path.exists(os.path.join(output_dir, "progress.json")) or (
        os.path.isdir(checkpoints) and bool(os.listdir(checkpoints)))


def _prepare_output_dir(output_dir: str, config: Config, overwrite: bool) -> None:
    os.makedirs(output_dir, exist_ok=True)
    config_path = os.path.join(output_dir, "config.json")
    if overwrite:
        for sub in ("checkpoints", "samples", "tensorboard"):
            shutil.rmtree(os.path.join(output_dir, sub), ignore_errors=True)
        for name in ("progress.json", GENERATOR_FILE, AVERAGE_FILE, CRITIC_FILE,
                     QUALITY_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    elif os.path.exists(config_path) and _has_training_state(output_dir):
        with open(config_path) as f:
            try:
                saved = Config.from_json(f.read())
            except ValueError as e:
                raise ConfigMismatchError(
                    f"{config_path} cannot be read ({e}); pass --overwrite to start afresh"
                ) from None
        diffs = config_differences(saved, config)
        if diffs:
            raise ConfigMismatchError(
                f"{output_dir} was trained with a different config; refusing to resume "
                "(pass --overwrite to start afresh, or use another --output_dir):\n  "
                + "\n  ".join(diffs))
    jsonio.write_json(config_path, config.to_dict())


def save_float32(model, path: str, builder) -> None:
    """Saves a float32 copy of ``model`` to ``path`` atomically (see ``float32_copy``)."""
    if any(layer.compute_dtype != "float32" for layer in model.layers):
        model = float32_copy(model, builder)
    save_model(model, path)


def read_quality(path: str) -> list[dict]:
    """The entries of a ``quality.jsonl``, one per iteration (the last one written wins)."""
    if not os.path.exists(path):
        return []
    entries = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entries[int(entry["iteration"])] = entry
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}, line {number}: not a quality entry") from None
    return [entries[k] for k in sorted(entries)]


def evaluation_cost_in_iterations(entries: list[dict]) -> Optional[float]:
    """How many training iterations' time an in-run evaluation took, from quality entries.

    Consecutive entries give the training seconds per iteration between them and
    the later one's evaluation seconds; the largest ratio of the last three is
    returned (None when fewer than two entries carry the timings). Expressed in
    iterations, the cost carries over to a faster or slower machine.
    """
    timed = [e for e in entries
             if all(isinstance(e.get(k), (int, float)) for k in
                    ("iteration", "train_seconds", "eval_seconds"))]
    timed.sort(key=lambda e: e["iteration"])
    ratios = []
    for a, b in zip(timed, timed[1:]):
        iterations = b["iteration"] - a["iteration"]
        seconds = b["train_seconds"] - a["train_seconds"]
        if iterations > 0 and seconds > 0:
            ratios.append(b["eval_seconds"] / (seconds / iterations))
    return max(ratios[-3:]) if ratios else None


class _StopFlag:
    """Turns SIGINT / SIGTERM into a request to stop after the current iteration."""

    def __init__(self, log):
        self.requested = False
        self._log = log
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # A second signal: stop now.
            raise KeyboardInterrupt
        self.requested = True
        self._log(f"received signal {signum}: checkpointing and stopping "
                  "(send again to abort without saving)")

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def summarise_quality(entry: dict) -> str:
    """One line of the figures of a quality entry (those present)."""
    if "error" in entry:
        return f"failed ({entry['error'][:200]})"
    parts = []
    if "classifier_score" in entry:
        parts.append(f"score {entry['classifier_score']:.2f}")
    if "frechet_distance" in entry:
        parts.append(f"FD {entry['frechet_distance']:.1f}")
    for name, value in entry.get("defense_gan_orig", {}).items():
        parts.append(f"{name} {value['accuracy']:.2f} (n={value['n']})")
    failures = entry.get("transferred_fgsm_failures")
    if failures and failures.get("failures"):
        parts.append(f"optimisation failures {failures['optimisation_failures']}"
                     f"/{failures['failures']}")
    return ", ".join(parts)


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def train_gan(config: Config, output_dir: str, *, images: Optional[np.ndarray] = None,
              dataset: Optional[tf.data.Dataset] = None, data_dir: Optional[str] = None,
              strategy: Optional[tf.distribute.Strategy] = None,
              time_budget_minutes: Optional[float] = None, overwrite: bool = False,
              log: Optional[Callable[[str], None]] = None,
              evaluator: Optional[Callable[[keras.Model], dict]] = None,
              evaluate_every: int = 0, warm_start: Optional[WarmStart] = None,
              average_evaluator: Optional[Callable[[keras.Model], dict]] = None
              ) -> TrainResult:
    """Trains (or resumes training of) a WGAN-GP generator for ``config``.

    Args:
      config: the experiment config; ``config.gan.train_iters`` is the target.
      output_dir: folder for checkpoints, samples, logs and the generator.
      images: training images [N, H, W, C] in the generator's range (test seam);
        by default the ``train`` split of ``config.dataset`` is loaded.
      dataset: alternatively, a ``tf.data.Dataset`` of images or (image, label)
        streamed through a shuffle buffer (used for CelebA).
      data_dir: local IDX folder for MNIST / Fashion-MNIST.
      strategy: a ``tf.distribute.Strategy`` (default: the current one).
      time_budget_minutes: stop, with a checkpoint, before this much wall time.
      overwrite: discard an existing run in ``output_dir`` instead of resuming.
      log: progress output (default: flushed prints).
      evaluator: called every ``evaluate_every`` iterations with a float32 copy
        of the generator; its dict is appended, with the iteration and the
        training seconds so far, to ``output_dir/quality.jsonl``. Its time is
        not counted as training time. An evaluation the time budget has no room
        for ends the run (with a checkpoint) and runs first on resumption. An
        evaluator that raises is logged with its traceback and recorded as
        ``{"iteration", "error"}``; training goes on and a resume does not retry it.
      evaluate_every: iterations between evaluations (0: none).
      average_evaluator: scores the averaged generator at each evaluation (None: it is
        not scored); its dict goes under the entry's ``average`` key.
      warm_start: weights to start from when ``output_dir`` holds no checkpoint
        (ignored, with a message, when it does: an exact resume is better).

    Returns:
      A :class:`TrainResult`.

    Raises:
      ConfigMismatchError: ``output_dir`` holds a run with another config.
      CheckpointError: checkpoints exist but none can be restored.
      OutputDirBusyError: another process is training into ``output_dir``.
      InputError: ``output_dir`` is a file.
      WarmStartError: the warm-start weights do not fit the config's models.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(f"output_dir {output_dir} is a file, not a folder")
    if time_budget_minutes is not None and time_budget_minutes <= 0:
        raise ValueError(f"time_budget_minutes must be > 0, got {time_budget_minutes}")
    if evaluate_every < 0 or (evaluator is not None and evaluate_every == 0):
        raise ValueError(f"evaluate_every must be > 0 with an evaluator, got {evaluate_every}")
    strategy = strategy or tf.distribute.get_strategy()
    if config.gan.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"gan.batch_size={config.gan.batch_size} must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")
    chief = is_chief(strategy)
    if not chief:  # Other workers must save too (collectives), into scratch folders.
        task = strategy.cluster_resolver
        output_dir = os.path.join(output_dir, f"worker_{task.task_type}_{task.task_id}")
    with _exclusive(output_dir):
        return _train_locked(config, output_dir, chief=chief, images=images,
                             dataset=dataset, data_dir=data_dir, strategy=strategy,
                             budget_minutes=time_budget_minutes, overwrite=overwrite,
                             log=log or echo, evaluator=evaluator,
                             evaluate_every=evaluate_every, warm_start=warm_start,
                             average_evaluator=average_evaluator)


class _RunState:
    """What the training loop and its monitors share: models, files, iteration, clocks."""

    def __init__(self, *, config: Config, output_dir: str, chief: bool, model: WGANGP,
                 checkpointer: Checkpointer, log, start_iteration: int, restored: bool,
                 previous_seconds: float, previous_eval_seconds: float, warm_starts: list,
                 average: Optional[WeightAverage] = None):
        self.config, self.output_dir, self.chief = config, output_dir, chief
        self.average = average
        self.model, self.checkpointer, self.log = model, checkpointer, log
        self.iteration = self.start_iteration = self.last_saved = start_iteration
        self.restored = restored
        self.previous_seconds = previous_seconds
        self.previous_eval_seconds = previous_eval_seconds
        self.warm_starts = warm_starts
        self.eval_seconds = 0.0  # this call's, excluded from the training time
        self.save_seconds = 5.0  # the last checkpoint's cost, for the time budget
        self.t_start = self.t_loop = time.monotonic()
        self.logs: dict = {}

    @property
    def generator(self):
        return self.model.generator

    def train_seconds(self) -> float:
        """Training wall time over all calls, evaluations excluded."""
        return self.previous_seconds + time.monotonic() - self.t_loop - self.eval_seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def save_checkpoint(self) -> None:
        """Checkpoint and progress.json at the current iteration."""
        t0 = time.monotonic()
        self.checkpointer.save(self.iteration)
        self.last_saved = self.iteration
        self.write_progress()
        self.save_seconds = time.monotonic() - t0

    def write_progress(self) -> None:
        """progress.json for the checkpoint at ``last_saved``, with the wall times so far
        (rewritten after an evaluation too, so that the time of one that follows the
        last checkpoint is counted)."""
        jsonio.write_json(os.path.join(self.output_dir, "progress.json"), {
            "iteration": self.last_saved,
            "total_train_seconds": self.train_seconds(),
            "total_eval_seconds": self.previous_eval_seconds + self.eval_seconds,
            "precision": self.config.gan.precision,
            "warm_starts": self.warm_starts,
        })


class Monitor:
    """A side duty of the training loop, in the spirit of Keras callbacks.

    ``before_step`` and ``after_step`` may return a stop reason (a string) to end
    the loop; ``on_end`` runs once with the reason the loop ended.
    """

    def on_start(self, state: _RunState) -> None:
        pass

    def before_step(self, state: _RunState) -> Optional[str]:
        return None

    def after_step(self, state: _RunState) -> Optional[str]:
        return None

    def on_end(self, state: _RunState, reason: str) -> None:
        pass


class _ProgressLog(Monitor):
    """Progress lines (rate, ETA, mean losses) and TensorBoard scalars every ``log_every``."""

    def on_start(self, state):
        self.writer = tf.summary.create_file_writer(
            os.path.join(state.output_dir, "tensorboard"))
        self.restart_window(state)

    def restart_window(self, state):
        self.t_window, self.window_start = time.monotonic(), state.iteration

    def after_step(self, state):
        gan, model, it = state.config.gan, state.model, state.iteration
        model.update_trackers(state.logs)
        if it % gan.log_every and it != gan.train_iters:
            return None
        rate = (it - self.window_start) / max(time.monotonic() - self.t_window, 1e-9)
        eta = (gan.train_iters - it) / max(rate, 1e-9)
        means = {k: float(t.result()) for k, t in model.trackers.items()}
        state.log(f"iter {it}/{gan.train_iters}  {rate:.2f} it/s  "
                  f"ETA {_format_seconds(eta)}  critic {means['critic_loss']:.4f}  "
                  f"gen {means['generator_loss']:.4f}  "
                  f"gp {means['gradient_penalty']:.4f}  W {means['wasserstein']:.4f}")
        with self.writer.as_default(step=it):
            for k, v in means.items():
                tf.summary.scalar(k, v)
            tf.summary.scalar("iterations_per_second", rate)
        for t in model.trackers.values():
            t.reset_state()
        self.restart_window(state)
        return None

    def on_end(self, state, reason):
        self.writer.flush()


class _SampleGrids(Monitor):
    """Grids of G(fixed z) every ``sample_every`` iterations and at the end."""

    def on_start(self, state):
        self.z = tf.random.stateless_normal([NUM_SAMPLES, state.model.latent_dim],
                                            seed=[state.config.gan.seed, 2**31 - 1])
        self.folder = os.path.join(state.output_dir, "samples")

    def save(self, state):
        images = state.generator(self.z, training=False).numpy()
        rng = state.config.model.pixel_range
        save_image_grid(images, os.path.join(self.folder, f"iter_{state.iteration:07d}.png"),
                        pixel_range=rng)
        save_image_grid(images, os.path.join(self.folder, "latest.png"), pixel_range=rng)

    def after_step(self, state):
        if state.iteration % state.config.gan.sample_every == 0:
            self.save(state)

    def on_end(self, state, reason):
        if reason != "nan":
            self.save(state)


class _Checkpoints(Monitor):
    """Checkpoints every ``checkpoint_every`` iterations; at the end, the checkpoint and
    the float32 generator and critic files (never after a non-finite loss)."""

    def after_step(self, state):
        if state.iteration % state.config.gan.checkpoint_every == 0:
            state.save_checkpoint()

    def on_end(self, state, reason):
        if reason == "nan":  # Never overwrite good files with NaN weights.
            return
        if state.iteration != state.last_saved or (
                not state.restored and state.iteration == state.start_iteration):
            state.save_checkpoint()
        config = state.config
        save_float32(state.generator, os.path.join(state.output_dir, GENERATOR_FILE),
                     lambda: build_generator(config))
        save_float32(state.model.critic, os.path.join(state.output_dir, CRITIC_FILE),
                     lambda: build_critic(config))
        if state.average is not None:
            save_float32(state.average.target, os.path.join(state.output_dir, AVERAGE_FILE),
                         lambda: build_generator(config))


class _StopConditions(Monitor):
    """Stops on SIGINT / SIGTERM and before the time budget runs out."""

    def __init__(self, stop_flag: "_StopFlag", budget_seconds: Optional[float]):
        self.stop_flag, self.budget = stop_flag, budget_seconds
        self.iter_seconds: Optional[float] = None
        self.t_step = 0.0

    def before_step(self, state):
        if self.stop_flag.requested:
            return "signal"
        if self.budget is not None and self.iter_seconds is not None and (
                state.elapsed() + 2 * self.iter_seconds + 2 * state.save_seconds + 10.0
                > self.budget):
            return "time_budget"
        self.t_step = time.monotonic()
        return None

    def after_step(self, state):
        dt = time.monotonic() - self.t_step
        self.iter_seconds = dt if self.iter_seconds is None else (
            0.9 * self.iter_seconds + 0.1 * dt)


class _Evaluation(Monitor):
    """Runs the evaluator every ``every`` iterations into quality.jsonl (see train_gan)."""

    def __init__(self, evaluator, every: int, budget_seconds: Optional[float],
                 progress: _ProgressLog, average_evaluator=None):
        self.evaluator, self.every, self.budget = evaluator, every, budget_seconds
        self.average_evaluator = average_evaluator
        self.progress = progress
        self.estimate = _EVAL_SECONDS_GUESS

    def on_start(self, state):
        self.path = os.path.join(state.output_dir, QUALITY_FILE)
        entries = read_quality(self.path)
        self.done = {e["iteration"] for e in entries}
        self.cost_in_iterations = evaluation_cost_in_iterations(entries)
        self.timed = False
        if self.due(state):  # Left pending by the previous call's time budget.
            self.evaluate(state)

    def expected_seconds(self, state) -> float:
        """The next evaluation's expected cost: the last one timed in this call, else
        the earlier entries' cost in iterations at this call's training speed (a
        machine several times slower than the one that wrote them is so accounted
        for), else a fixed guess."""
        done = state.iteration - state.start_iteration
        if self.timed or self.cost_in_iterations is None or done < 10:
            return self.estimate
        per_iteration = (state.train_seconds() - state.previous_seconds) / done
        return max(self.estimate, self.cost_in_iterations * per_iteration)

    def due(self, state):
        it = state.iteration
        return it > 0 and it % self.every == 0 and it not in self.done

    def after_step(self, state):
        if not self.due(state):
            return None
        if self.budget is not None and (state.elapsed() + self.expected_seconds(state)
                                        + 2 * state.save_seconds + 10.0 > self.budget):
            state.log(f"no time left in the budget to evaluate iteration {state.iteration}; "
                      "stopping (the evaluation runs first when the run resumes)")
            return "time_budget"
        if state.iteration != state.last_saved:
            state.save_checkpoint()
        self.evaluate(state)
        return None

    def evaluate(self, state):
        config = state.config
        t0 = time.monotonic()
        state.log(f"evaluating the generator at iteration {state.iteration}")
        generator = state.generator
        if config.gan.precision != "float32":
            generator = float32_copy(generator, lambda: build_generator(config))
        figures = self._score(state, self.evaluator, generator)
        if state.average is not None and self.average_evaluator is not None:
            figures["average"] = self._score(state, self.average_evaluator,
                                             state.average.target)
        spent = time.monotonic() - t0
        state.eval_seconds += spent  # before train_seconds(), which excludes it
        entry = {"iteration": state.iteration, "train_seconds": round(state.train_seconds(), 1),
                 "eval_seconds": round(spent, 1), **figures}
        if state.chief:
            jsonio.append_jsonl(self.path, entry)
            if state.iteration == state.last_saved:
                state.write_progress()
        self.estimate, self.timed = spent, True
        self.done.add(state.iteration)
        state.log(f"evaluated iteration {state.iteration} in {_format_seconds(spent)}: "
                  + summarise_quality(entry)
                  + (f"; averaged generator: {summarise_quality(entry['average'])}"
                     if "average" in entry else ""))
        self.progress.restart_window(state)

    @staticmethod
    def _score(state, evaluator, generator) -> dict:
        try:
            return evaluator(generator)
        except Exception as e:  # noqa: BLE001 - a failed evaluation must not end the run
            # Recorded, so that a resume does not retry (and fail) it before training on.
            state.log(f"evaluation at iteration {state.iteration} failed; training goes "
                      f"on (the error is recorded in {QUALITY_FILE}):\n"
                      + "".join(traceback.format_exception(e)).rstrip())
            return {"error": f"{type(e).__name__}: {e}"[:2000]}


def _train_locked(config: Config, output_dir: str, *, chief: bool, images, dataset,
                  data_dir, strategy, budget_minutes, overwrite, log, evaluator,
                  evaluate_every, warm_start, average_evaluator) -> TrainResult:
    """:func:`train_gan` once the output folder is locked."""
    t_start = time.monotonic()
    gan = config.gan
    if images is None and dataset is None:  # Load before touching the run folder.
        if config.dataset == "celeba":  # too large for memory: streamed
            dataset = data_lib.load(config.dataset, "train", data_dir=data_dir)
        else:
            images, _ = data_lib.load_numpy(config.dataset, "train", data_dir=data_dir)
    if chief:
        _prepare_output_dir(output_dir, config, overwrite)
    warning = hardware.bfloat16_warning(gan.precision)
    if warning:
        log(warning)

    with strategy.scope():
        generator = build_generator(config, seed=gan.seed, precision=gan.precision)
        critic = build_critic(config, seed=gan.seed, precision=gan.precision)
        model = WGANGP(generator, critic, gan)
        model.compile()
        model.build_optimizers()
        average = None
        if gan.ema_decay > 0:  # float32 weights, whatever the training precision
            average = WeightAverage(generator, build_generator(config, seed=gan.seed),
                                    gan.ema_decay)
    averages = {_AVERAGE_KEY: average.target} if average is not None else {}
    checkpointer = Checkpointer(os.path.join(output_dir, "checkpoints"), log=log,
                                generator=generator, critic=critic,
                                g_optimizer=model.g_optimizer,
                                d_optimizer=model.d_optimizer,
                                optional=tuple(averages), **averages)
    state = _restore(config, output_dir, chief=chief, model=model, checkpointer=checkpointer,
                     warm_start=warm_start, log=log, average=average)
    state.t_start = t_start
    iterator = iter(strategy.experimental_distribute_dataset(
        _real_batches(config, images, dataset, state.start_iteration)))

    train_step = (tf.function(model.train_step, jit_compile=True) if gan.jit_compile
                  else model.train_step)

    @tf.function
    def step(batch):
        per_replica = strategy.run(train_step, args=(batch,))
        logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}
        if average is not None:  # after the generator update (automatic control deps)
            average.update(model.iteration)
        return logs

    budget = None if budget_minutes is None else budget_minutes * 60.0
    with _StopFlag(log) as stop_flag:
        progress = _ProgressLog()
        monitors = [_StopConditions(stop_flag, budget), progress, _SampleGrids(),
                    _Checkpoints()]
        if evaluator is not None:
            monitors.append(_Evaluation(evaluator, evaluate_every, budget, progress,
                                        average_evaluator))
        reason = _loop(state, step, iterator, monitors)
    generator_path = os.path.join(output_dir, GENERATOR_FILE)
    if reason == "nan":
        log(f"stopped at iteration {state.iteration} (non-finite loss); nothing saved since "
            f"iteration {state.last_saved}")
    else:
        log(f"stopped at iteration {state.iteration} ({reason}); generator saved to "
            f"{generator_path}")
    return TrainResult(start_iteration=state.start_iteration, iteration=state.iteration,
                       stop_reason=reason, seconds=time.monotonic() - t_start,
                       total_train_seconds=state.train_seconds(),
                       generator_path=generator_path, last_logs=state.logs,
                       average_path=(os.path.join(output_dir, AVERAGE_FILE)
                                     if average is not None else None))


def _loop(state: _RunState, step, iterator, monitors) -> str:
    """The training loop: one WGAN-GP iteration per pass; side duties in ``monitors``."""
    state.t_loop = time.monotonic()
    for monitor in monitors:
        monitor.on_start(state)
    reason = "completed"
    while state.iteration < state.config.gan.train_iters:
        stop = next((r for r in (m.before_step(state) for m in monitors) if r), None)
        if stop:
            reason = stop
            break
        logs = {k: float(v) for k, v in step(next(iterator)).items()}
        if not all(np.isfinite(v) for v in logs.values()):
            state.log(f"non-finite loss at iteration {state.iteration + 1}: {logs}; stopping "
                      f"without saving (last good checkpoint: iteration {state.last_saved})")
            reason = "nan"
            break
        state.iteration += 1
        state.logs = logs
        stop = None
        for monitor in monitors:
            stop = monitor.after_step(state) or stop
        if stop:
            reason = stop
            break
    for monitor in monitors:
        monitor.on_end(state, reason)
    return reason


def _restore(config: Config, output_dir: str, *, chief: bool, model: WGANGP,
             checkpointer: Checkpointer, warm_start: Optional[WarmStart], log,
             average: Optional[WeightAverage] = None) -> _RunState:
    """Restores the newest checkpoint, or applies the warm start; returns the run state.

    The averaged generator comes from the checkpoint; a checkpoint written before
    averaging existed, or a package without an averaged generator, starts it from the
    generator's weights (with a message).
    """
    restored = checkpointer.restore_latest()
    progress_path = os.path.join(output_dir, "progress.json")
    previous_seconds = previous_eval_seconds = 0.0
    warm_starts = []
    if restored:
        if os.path.exists(progress_path):
            try:
                with open(progress_path) as f:
                    progress = json.load(f)
                if not isinstance(progress, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                raise InputError(
                    f"{progress_path} cannot be read ({e}); repair or delete it to resume "
                    "(deleting it loses the recorded training time and warm starts)") from None
            previous_seconds = float(progress.get("total_train_seconds", 0.0))
            previous_eval_seconds = float(progress.get("total_eval_seconds", 0.0))
            warm_starts = list(progress.get("warm_starts", []))
            before = progress.get("precision")
            if before and before != config.gan.precision:
                iteration = int(model.iteration.numpy())
                warm_starts.append({
                    "iteration": iteration, "source": output_dir,
                    "precision": config.gan.precision, "previous_precision": before,
                    "note": "resumed exactly (weights and optimizer state) in another "
                            "precision"})
                log(f"resuming in {config.gan.precision}; iterations up to {iteration} "
                    f"trained in {before} (recorded in progress.json)")
        log(f"resumed from {restored} at iteration {int(model.iteration.numpy())}")
        if average is not None and _AVERAGE_KEY in checkpointer.missing:
            average.reset()
            log("the checkpoint holds no averaged generator; the average starts from the "
                "generator's weights")
        if warm_start is not None:
            log(f"the warm start from {warm_start.source} is not needed: resumed exactly")
    elif warm_start is not None:
        _apply_warm_start(warm_start, model, config, average)
        if average is not None and not warm_start.average_path:
            average.reset()  # a package without an average: start it from the weights
            log(f"{warm_start.source} has no {AVERAGE_FILE}; the average starts from its "
                "generator's weights")
        previous_seconds = warm_start.train_seconds
        previous_eval_seconds = warm_start.eval_seconds
        warm_starts = list(warm_start.warm_starts) + [
            {"iteration": warm_start.iteration, "source": warm_start.source,
             "precision": config.gan.precision,
             "previous_precision": warm_start.precision,
             "note": "weights only; optimizer state started afresh"}]
        if chief and warm_start.quality_path:
            shutil.copyfile(warm_start.quality_path, os.path.join(output_dir, QUALITY_FILE))
        log(f"warm start from {warm_start.source} at iteration {warm_start.iteration} "
            "(weights only; Adam moments start afresh)")
    elif average is not None:
        average.reset()  # a fresh run: the average starts at the initial weights
    return _RunState(config=config, output_dir=output_dir, chief=chief, model=model,
                     checkpointer=checkpointer, log=log,
                     start_iteration=int(model.iteration.numpy()), restored=bool(restored),
                     previous_seconds=previous_seconds,
                     previous_eval_seconds=previous_eval_seconds, warm_starts=warm_starts,
                     average=average)


def _real_batches(config: Config, images, dataset, start_iteration: int) -> tf.data.Dataset:
    """The stream of real batches from ``start_iteration`` on (in memory or streamed)."""
    gan = config.gan
    if dataset is not None:
        return streaming_batches(dataset, batch_size=gan.batch_size,
                                 critic_steps=gan.critic_steps, seed=gan.seed,
                                 start_iteration=start_iteration)
    expected = tuple(config.model.image_shape)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"training images have shape {images.shape[1:]}, the "
                         f"config's model expects {expected}")
    return indexed_batches(images, batch_size=gan.batch_size, critic_steps=gan.critic_steps,
                           seed=gan.seed, start_iteration=start_iteration)
