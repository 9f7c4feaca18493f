"""The WGAN-GP training workflow: the loop, its restore and its result.

:func:`train_gan` is what ``bin/train.py`` calls. The run folder's locking and config
check live in run_folder.py, warm starts in warm_start.py, the real-batch streams in
batches.py, the loop's side duties in monitors.py and the files that outlive a run in
run_files.py. It resumes from the newest
checkpoint in ``output_dir``, stops cleanly on SIGINT / SIGTERM or before a
time budget runs out (writing a checkpoint first), and leaves behind:

    output_dir/config.json          the config trained with
    output_dir/checkpoints/         training state (weights, Adam slots, iteration)
    output_dir/progress.json        iterations done, cumulative training seconds, and
                                    each call's command and iterations (run_history.py)
    output_dir/quality.jsonl        with an evaluator: one line of figures per evaluation
    output_dir/samples/             sample grids from fixed noise
    output_dir/tensorboard/         scalars
    output_dir/generator.keras      the generator, for the defense
    output_dir/generator_ema.keras  the exponential moving average of its weights
                                    (``gan.ema_decay``; see training/averaging.py)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf import data as data_lib
from defense_gan_tf import hardware, jsonio
from defense_gan_tf.config import Config
from defense_gan_tf.console import echo
from defense_gan_tf.errors import InputError
from defense_gan_tf.models import build_critic, build_generator
from defense_gan_tf.training.averaging import WeightAverage
from defense_gan_tf.training import run_history
from defense_gan_tf.training.batches import indexed_batches, real_batches, streaming_batches
from defense_gan_tf.training.checkpoints import Checkpointer
from defense_gan_tf.training.monitors import (Checkpoints, Evaluation, Monitor, ProgressLog,
                                              SampleGrids, StopConditions, StopFlag)
from defense_gan_tf.training.run_files import (AVERAGE_FILE, CRITIC_FILE, GENERATOR_FILE,
                                               QUALITY_FILE, evaluation_cost_in_iterations,
                                               read_quality, save_float32, summarise_quality)
from defense_gan_tf.training.run_folder import (ConfigMismatchError, OutputDirBusyError,
                                                RESUMABLE_KEYS, config_differences,
                                                exclusive, prepare_output_dir)
from defense_gan_tf.training.warm_start import (WarmStart, WarmStartError, apply_warm_start,
                                                load_warm_start)
from defense_gan_tf.training.wgan_gp import WGANGP

# Re-exported: the names this module has always offered (the rest of its old contents
# now live in run_files, run_folder, warm_start, batches and monitors).
__all__ = ["AVERAGE_FILE", "CRITIC_FILE", "ConfigMismatchError", "GENERATOR_FILE", "Monitor",
           "OutputDirBusyError", "QUALITY_FILE", "RESUMABLE_KEYS", "STRATEGIES",
           "TrainResult", "WarmStart", "WarmStartError", "config_differences",
           "evaluation_cost_in_iterations", "exclusive", "indexed_batches", "is_chief",
           "load_warm_start", "make_strategy", "read_quality", "save_float32",
           "streaming_batches", "summarise_quality", "train_gan"]

STRATEGIES = ("default", "mirrored", "multi_worker")

# The checkpoint's name of the averaged generator (absent from older checkpoints).
_AVERAGE_KEY = "generator_average"


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


def train_gan(config: Config, output_dir: str, *, images: Optional[np.ndarray] = None,
              dataset: Optional[tf.data.Dataset] = None, data_dir: Optional[str] = None,
              strategy: Optional[tf.distribute.Strategy] = None,
              time_budget_minutes: Optional[float] = None, overwrite: bool = False,
              log: Optional[Callable[[str], None]] = None,
              evaluator: Optional[Callable[[keras.Model], dict]] = None,
              evaluate_every: int = 0, warm_start: Optional[WarmStart] = None,
              average_evaluator: Optional[Callable[[keras.Model], dict]] = None,
              command: Optional[str] = None, launcher: Optional[str] = None
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
      command, launcher: the command line of this call and the script that ran it,
        recorded with the call's iterations and stop reason in the ``runs`` list of
        ``progress.json`` (see :mod:`~defense_gan_tf.training.run_history`).

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
    with exclusive(output_dir):
        return _train_locked(config, output_dir, chief=chief, images=images,
                             dataset=dataset, data_dir=data_dir, strategy=strategy,
                             budget_minutes=time_budget_minutes, overwrite=overwrite,
                             log=log or echo, evaluator=evaluator,
                             evaluate_every=evaluate_every, warm_start=warm_start,
                             average_evaluator=average_evaluator, command=command,
                             launcher=launcher)


class RunState:
    """What the training loop and its monitors share: models, files, iteration, clocks."""

    def __init__(self, *, config: Config, output_dir: str, chief: bool, model: WGANGP,
                 checkpointer: Checkpointer, log, start_iteration: int, restored: bool,
                 previous_seconds: float, previous_eval_seconds: float, warm_starts: list,
                 runs: list, average: Optional[WeightAverage] = None):
        self.config, self.output_dir, self.chief = config, output_dir, chief
        self.average = average
        self.model, self.checkpointer, self.log = model, checkpointer, log
        self.iteration = self.start_iteration = self.last_saved = start_iteration
        self.restored = restored
        self.previous_seconds = previous_seconds
        self.previous_eval_seconds = previous_eval_seconds
        self.warm_starts = warm_starts
        self.runs = runs  # the earlier calls' entries, then this call's (run_history)
        self.run = runs[-1]
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
        last checkpoint is counted, and at the end with this call's stop reason)."""
        self.run["end_iteration"] = self.last_saved
        jsonio.write_json(os.path.join(self.output_dir, "progress.json"), {
            "iteration": self.last_saved,
            "total_train_seconds": self.train_seconds(),
            "total_eval_seconds": self.previous_eval_seconds + self.eval_seconds,
            "precision": self.config.gan.precision,
            "warm_starts": self.warm_starts,
            "runs": self.runs,
        })


def _train_locked(config: Config, output_dir: str, *, chief: bool, images, dataset,
                  data_dir, strategy, budget_minutes, overwrite, log, evaluator,
                  evaluate_every, warm_start, average_evaluator, command,
                  launcher) -> TrainResult:
    """:func:`train_gan` once the output folder is locked."""
    t_start = time.monotonic()
    gan = config.gan
    if images is None and dataset is None:  # Load before touching the run folder.
        if config.dataset == "celeba":  # too large for memory: streamed
            dataset = data_lib.load(config.dataset, "train", data_dir=data_dir)
        else:
            images, _ = data_lib.load_numpy(config.dataset, "train", data_dir=data_dir)
    if chief:
        prepare_output_dir(output_dir, config, overwrite)
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
                     warm_start=warm_start, log=log, average=average,
                     run=dict(command=command, budget_minutes=budget_minutes,
                              launcher=launcher))
    state.t_start = t_start
    iterator = iter(strategy.experimental_distribute_dataset(
        real_batches(config, images, dataset, state.start_iteration)))

    train_step = (tf.function(model.train_step, jit_compile=True) if gan.jit_compile
                  else model.train_step)

    @tf.function
    def step(batch):
        logs = _summed(strategy, train_step, batch)
        if average is not None:  # after the generator update (automatic control deps)
            average.update(model.iteration)
        return logs

    if warm_start is not None and not state.restored and warm_start.critic_warmup:
        # Before the first checkpoint: an interrupted warm-up is redone on the rerun.
        state.previous_seconds += _warm_up_critic(
            model, strategy, real_batches(config, images, dataset, 0),
            warm_start.critic_warmup, log)

    budget = None if budget_minutes is None else budget_minutes * 60.0
    with StopFlag(log) as stop_flag:
        progress = ProgressLog()
        monitors = [StopConditions(stop_flag, budget), progress, SampleGrids(),
                    Checkpoints()]
        if evaluator is not None:
            monitors.append(Evaluation(evaluator, evaluate_every, budget, progress,
                                        average_evaluator, stop_flag))
        reason = _loop(state, step, iterator, monitors)
    state.run["stop_reason"] = reason
    state.write_progress()
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


def _summed(strategy, fn, *args) -> dict:
    """``fn`` run on every replica; its logs summed over the replicas."""
    per_replica = strategy.run(fn, args=args)
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}


def _warm_up_critic(model: WGANGP, strategy, batches, rounds: int, log) -> float:
    """Trains a new critic alone against the warm-started generator for ``rounds``
    rounds of critic_steps updates, so that the generator's first updates follow a
    critic that tells real from generated images rather than a random one; returns the
    seconds it took."""
    t0 = time.monotonic()

    @tf.function
    def critic_step(batch, round_):
        return _summed(strategy, model.critic_step, batch, round_)

    iterator = iter(strategy.experimental_distribute_dataset(batches))
    every = max(1, rounds // 10)
    for r in range(rounds):
        logs = critic_step(next(iterator), tf.constant(r, tf.int64))
        if (r + 1) % every == 0 or r + 1 == rounds:
            log(f"critic warm-up {r + 1}/{rounds}: critic {float(logs['critic_loss']):.4f}"
                f"  W {float(logs['wasserstein']):.4f}  gp "
                f"{float(logs['gradient_penalty']):.4f}")
    return time.monotonic() - t0


def _loop(state: RunState, step, iterator, monitors) -> str:
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
             average: Optional[WeightAverage] = None, run: Optional[dict] = None
             ) -> RunState:
    """Restores the newest checkpoint, or applies the warm start; returns the run state.

    The averaged generator comes from the checkpoint; a checkpoint written before
    averaging existed, or a package without an averaged generator, starts it from the
    generator's weights (with a message). ``run`` holds this call's command,
    budget_minutes and launcher, for its entry in the ``runs`` list.
    """
    restored = checkpointer.restore_latest()
    progress_path = os.path.join(output_dir, "progress.json")
    previous_seconds = previous_eval_seconds = 0.0
    warm_starts, runs, start = [], [], "fresh"
    if restored:
        start = "resumed"
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
            try:
                runs = run_history.read_runs(progress, progress_path)
            except ValueError as e:
                raise InputError(f"{e}; repair it to resume") from None
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
        apply_warm_start(warm_start, model, config, average)
        if average is not None and not warm_start.average_path:
            average.reset()  # a package without an average: start it from the weights
            log(f"{warm_start.source} has no {AVERAGE_FILE}; the average starts from its "
                "generator's weights")
        previous_seconds = warm_start.train_seconds
        previous_eval_seconds = warm_start.eval_seconds
        start = f"warm start from {warm_start.source} at iteration {warm_start.iteration}"
        runs = run_history.from_package(warm_start.train_commands,
                                        os.path.join(warm_start.source, "manifest.json"))
        warm_starts = list(warm_start.warm_starts) + [
            {"iteration": warm_start.iteration, "source": warm_start.source,
             "precision": config.gan.precision,
             "previous_precision": warm_start.precision,
             "note": "weights only; optimizer state started afresh"
                     + ("" if warm_start.critic_path else
                        "; critic started from fresh initial weights"
                        + (f" and trained alone for {warm_start.critic_warmup} rounds of "
                           f"{config.gan.critic_steps} updates"
                           if warm_start.critic_warmup else ""))}]
        if chief and warm_start.quality_path:
            shutil.copyfile(warm_start.quality_path, os.path.join(output_dir, QUALITY_FILE))
        log(f"warm start from {warm_start.source} at iteration {warm_start.iteration} "
            "(weights only; Adam moments start afresh"
            + ("" if warm_start.critic_path else "; a new critic") + ")")
    elif average is not None:
        average.reset()  # a fresh run: the average starts at the initial weights
    iteration = int(model.iteration.numpy())
    runs.append(run_history.new_run(start_iteration=iteration, start=start, **(run or {})))
    return RunState(config=config, output_dir=output_dir, chief=chief, model=model,
                     checkpointer=checkpointer, log=log,
                     start_iteration=iteration, restored=bool(restored),
                     previous_seconds=previous_seconds,
                     previous_eval_seconds=previous_eval_seconds, warm_starts=warm_starts,
                     runs=runs, average=average)
