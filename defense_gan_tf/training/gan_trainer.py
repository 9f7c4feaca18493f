"""The WGAN-GP training workflow: data stream, loop, checkpoints, monitoring.

:func:`train_gan` is what ``bin/train.py`` calls. It resumes from the newest
checkpoint in ``output_dir``, stops cleanly on SIGINT / SIGTERM or before a
time budget runs out (writing a checkpoint first), and leaves behind:

    output_dir/config.json          the config trained with
    output_dir/checkpoints/         training state (weights, Adam slots, iteration)
    output_dir/progress.json        iterations done, cumulative training seconds
    output_dir/samples/             sample grids from fixed noise
    output_dir/tensorboard/         scalars
    output_dir/generator.keras      the generator, for the defense
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
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from defense_gan_tf import data as data_lib
from defense_gan_tf.config import Config
from defense_gan_tf.console import echo
from defense_gan_tf.models import build_critic, build_generator
from defense_gan_tf.plots import save_image_grid
from defense_gan_tf.training.checkpoints import Checkpointer
from defense_gan_tf.training.wgan_gp import WGANGP

STRATEGIES = ("default", "mirrored", "multi_worker")

# Config keys that may change between a run and its resumption.
RESUMABLE_KEYS = frozenset({"gan.train_iters", "gan.checkpoint_every",
                            "gan.sample_every", "gan.log_every"})
# Sections that do not affect GAN training.
_IGNORED_SECTIONS = ("projection", "classifier", "attack")

GENERATOR_FILE = "generator.keras"
NUM_SAMPLES = 64


class ConfigMismatchError(ValueError):
    """The output folder was trained with a different config."""


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
    """

    start_iteration: int
    iteration: int
    stop_reason: str
    seconds: float
    total_train_seconds: float
    generator_path: str
    last_logs: dict


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


def _prepare_output_dir(output_dir: str, config: Config, overwrite: bool) -> None:
    os.makedirs(output_dir, exist_ok=True)
    config_path = os.path.join(output_dir, "config.json")
    if overwrite:
        for sub in ("checkpoints", "samples", "tensorboard"):
            shutil.rmtree(os.path.join(output_dir, sub), ignore_errors=True)
        for name in ("progress.json", GENERATOR_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    elif os.path.exists(config_path):
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
    _write_json(config_path, config.to_dict())


def _write_json(path: str, payload) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


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


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def train_gan(config: Config, output_dir: str, *, images: Optional[np.ndarray] = None,
              dataset: Optional[tf.data.Dataset] = None, data_dir: Optional[str] = None,
              strategy: Optional[tf.distribute.Strategy] = None,
              time_budget_minutes: Optional[float] = None, overwrite: bool = False,
              log: Optional[Callable[[str], None]] = None) -> TrainResult:
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

    Returns:
      A :class:`TrainResult`.

    Raises:
      ConfigMismatchError: ``output_dir`` holds a run with another config.
      CheckpointError: checkpoints exist but none can be restored.
      OutputDirBusyError: another process is training into ``output_dir``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    if not chief:  # Other workers must save too (collectives), into scratch folders.
        task = strategy.cluster_resolver
        output_dir = os.path.join(output_dir, f"worker_{task.task_type}_{task.task_id}")
    with _exclusive(output_dir):
        return _train_gan(config, output_dir, chief=chief, images=images, dataset=dataset,
                          data_dir=data_dir, strategy=strategy,
                          time_budget_minutes=time_budget_minutes, overwrite=overwrite,
                          log=log)


def _train_gan(config: Config, output_dir: str, *, chief: bool,
               images: Optional[np.ndarray] = None,
               dataset: Optional[tf.data.Dataset] = None, data_dir: Optional[str] = None,
               strategy: Optional[tf.distribute.Strategy] = None,
               time_budget_minutes: Optional[float] = None, overwrite: bool = False,
               log: Optional[Callable[[str], None]] = None) -> TrainResult:
    t_start = time.monotonic()
    log = log or echo
    gan = config.gan
    if gan.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"gan.batch_size={gan.batch_size} must be divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")
    if time_budget_minutes is not None and time_budget_minutes <= 0:
        raise ValueError(f"time_budget_minutes must be > 0, got {time_budget_minutes}")
    if chief:
        _prepare_output_dir(output_dir, config, overwrite)

    with strategy.scope():
        generator = build_generator(config, seed=gan.seed)
        critic = build_critic(config, seed=gan.seed)
        model = WGANGP(generator, critic, gan)
        model.compile()
        model.build_optimizers()
    checkpointer = Checkpointer(os.path.join(output_dir, "checkpoints"), log=log,
                                generator=generator, critic=critic,
                                g_optimizer=model.g_optimizer,
                                d_optimizer=model.d_optimizer)
    restored = checkpointer.restore_latest()
    start_iteration = int(model.iteration.numpy())
    progress_path = os.path.join(output_dir, "progress.json")
    previous_seconds = 0.0
    if restored:
        if os.path.exists(progress_path):
            with open(progress_path) as f:
                previous_seconds = float(json.load(f).get("total_train_seconds", 0.0))
        log(f"resumed from {restored} at iteration {start_iteration}")

    if dataset is not None:
        stream = streaming_batches(dataset, batch_size=gan.batch_size,
                                   critic_steps=gan.critic_steps, seed=gan.seed,
                                   start_iteration=start_iteration)
    else:
        if images is None:
            images, _ = data_lib.load_numpy(config.dataset, "train", data_dir=data_dir)
        expected = tuple(config.model.image_shape)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"training images have shape {images.shape[1:]}, the "
                             f"config's model expects {expected}")
        stream = indexed_batches(images, batch_size=gan.batch_size,
                                 critic_steps=gan.critic_steps, seed=gan.seed,
                                 start_iteration=start_iteration)
    iterator = iter(strategy.experimental_distribute_dataset(stream))

    @tf.function
    def step(batch):
        per_replica = strategy.run(model.train_step, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    fixed_z = tf.random.stateless_normal([NUM_SAMPLES, model.latent_dim],
                                         seed=[gan.seed, 2**31 - 1])
    samples_dir = os.path.join(output_dir, "samples")
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
    generator_path = os.path.join(output_dir, GENERATOR_FILE)
    budget = None if time_budget_minutes is None else time_budget_minutes * 60.0

    def save_samples(iteration):
        images_out = generator(fixed_z, training=False).numpy()
        rng = config.model.pixel_range
        save_image_grid(images_out, os.path.join(samples_dir, f"iter_{iteration:07d}.png"),
                        pixel_range=rng)
        save_image_grid(images_out, os.path.join(samples_dir, "latest.png"), pixel_range=rng)

    def save_state(iteration):
        t0 = time.monotonic()
        checkpointer.save(iteration)
        _write_json(progress_path, {
            "iteration": iteration,
            "total_train_seconds": previous_seconds + time.monotonic() - t_loop,
        })
        return time.monotonic() - t0

    iteration, last_saved, logs = start_iteration, start_iteration, {}
    stop_reason = "completed"
    iter_seconds, save_seconds = None, 5.0
    t_loop = time.monotonic()
    t_window, window_start = t_loop, iteration
    with _StopFlag(log) as stop:
        while iteration < gan.train_iters:
            if stop.requested:
                stop_reason = "signal"
                break
            if budget is not None and iter_seconds is not None:
                elapsed = time.monotonic() - t_start
                if elapsed + 2 * iter_seconds + 2 * save_seconds + 10.0 > budget:
                    stop_reason = "time_budget"
                    break
            t_iter = time.monotonic()
            out = step(next(iterator))
            logs = {k: float(v) for k, v in out.items()}
            if not all(np.isfinite(v) for v in logs.values()):
                stop_reason = "nan"
                log(f"non-finite loss at iteration {iteration + 1}: {logs}; stopping "
                    f"without saving (last good checkpoint: iteration {last_saved})")
                break
            iteration += 1
            dt = time.monotonic() - t_iter
            iter_seconds = dt if iter_seconds is None else 0.9 * iter_seconds + 0.1 * dt
            model.update_trackers(logs)
            if iteration % gan.log_every == 0 or iteration == gan.train_iters:
                rate = (iteration - window_start) / max(time.monotonic() - t_window, 1e-9)
                eta = (gan.train_iters - iteration) / max(rate, 1e-9)
                means = {k: float(t.result()) for k, t in model.trackers.items()}
                log(f"iter {iteration}/{gan.train_iters}  {rate:.2f} it/s  "
                    f"ETA {_format_seconds(eta)}  critic {means['critic_loss']:.4f}  "
                    f"gen {means['generator_loss']:.4f}  "
                    f"gp {means['gradient_penalty']:.4f}  W {means['wasserstein']:.4f}")
                with writer.as_default(step=iteration):
                    for k, v in means.items():
                        tf.summary.scalar(k, v)
                    tf.summary.scalar("iterations_per_second", rate)
                for t in model.trackers.values():
                    t.reset_state()
                t_window, window_start = time.monotonic(), iteration
            if iteration % gan.sample_every == 0:
                save_samples(iteration)
            if iteration % gan.checkpoint_every == 0:
                save_seconds = save_state(iteration)
                last_saved = iteration

    writer.flush()
    if stop_reason != "nan":  # Never overwrite good files with NaN weights.
        if iteration != last_saved or (not restored and iteration == 0):
            save_state(iteration)
        save_samples(iteration)
        tmp_path = generator_path + ".tmp.keras"
        generator.save(tmp_path)
        os.replace(tmp_path, generator_path)
    total = previous_seconds + time.monotonic() - t_loop
    if stop_reason == "nan":
        log(f"stopped at iteration {iteration} (non-finite loss); nothing saved since "
            f"iteration {last_saved}")
    else:
        log(f"stopped at iteration {iteration} ({stop_reason}); generator saved to "
            f"{generator_path}")
    return TrainResult(start_iteration=start_iteration, iteration=iteration,
                       stop_reason=stop_reason, seconds=time.monotonic() - t_start,
                       total_train_seconds=total, generator_path=generator_path,
                       last_logs=logs)
