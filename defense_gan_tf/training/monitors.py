"""The side duties of the training loop (progress, samples, checkpoints, stopping,
in-run evaluation), each a :class:`Monitor` the loop calls around every iteration."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Optional

import tensorflow as tf

from defense_gan_tf import jsonio
from defense_gan_tf.errors import Interrupted
from defense_gan_tf.models import build_critic, build_generator, float32_copy
from defense_gan_tf.plots import save_image_grid
from defense_gan_tf.training.run_files import (AVERAGE_FILE, CRITIC_FILE, GENERATOR_FILE,
                                               QUALITY_FILE, evaluation_cost_in_iterations,
                                               read_quality, save_float32, summarise_quality)

if TYPE_CHECKING:  # the state is gan_trainer's, which imports this module
    from defense_gan_tf.training.gan_trainer import RunState

# Under output_dir: the finished batches of an interrupted evaluation.
EVALUATION_CACHE = "evaluation_cache"
# First guess of an evaluation's cost, for the time budget, until one was timed.
_EVAL_SECONDS_GUESS = 300.0
NUM_SAMPLES = 64


class StopFlag:
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


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Monitor:
    """A side duty of the training loop, in the spirit of Keras callbacks.

    ``before_step`` and ``after_step`` may return a stop reason (a string) to end
    the loop; ``on_end`` runs once with the reason the loop ended.
    """

    def on_start(self, state: "RunState") -> None:
        pass

    def before_step(self, state: "RunState") -> Optional[str]:
        return None

    def after_step(self, state: "RunState") -> Optional[str]:
        return None

    def on_end(self, state: "RunState", reason: str) -> None:
        pass


class ProgressLog(Monitor):
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
                  f"ETA {format_seconds(eta)}  critic {means['critic_loss']:.4f}  "
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


class SampleGrids(Monitor):
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


class Checkpoints(Monitor):
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


class StopConditions(Monitor):
    """Stops on SIGINT / SIGTERM and before the time budget runs out."""

    def __init__(self, stop_flag: "StopFlag", budget_seconds: Optional[float]):
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


class Evaluation(Monitor):
    """Runs the evaluator every ``every`` iterations into quality.jsonl (see train_gan).

    An evaluator that takes the keywords ``stop``, ``deadline``, ``cache_dir`` and ``log``
    (a :class:`~defense_gan_tf.generators.training_curve.DefenseQualityProbe` does) is
    asked to stop between its batches on SIGINT / SIGTERM or at the time budget, saving
    its finished batches under ``output_dir/evaluation_cache``: it raises
    :class:`~defense_gan_tf.errors.Interrupted`, the run stops (its checkpoint was saved
    before the evaluation), nothing is recorded, and the resumed run finishes the
    evaluation from the saved batches first.
    """

    def __init__(self, evaluator, every: int, budget_seconds: Optional[float],
                 progress: ProgressLog, average_evaluator=None,
                 stop_flag: Optional[StopFlag] = None):
        self.evaluator, self.every, self.budget = evaluator, every, budget_seconds
        self.average_evaluator = average_evaluator
        self.progress = progress
        self.stop_flag = stop_flag
        self.estimate = _EVAL_SECONDS_GUESS
        self.pending_stop: Optional[str] = None

    def on_start(self, state):
        self.path = os.path.join(state.output_dir, QUALITY_FILE)
        entries = read_quality(self.path)
        self.done = {e["iteration"] for e in entries}
        self.cost_in_iterations = evaluation_cost_in_iterations(entries)
        self.timed = False
        if self.due(state):  # Left pending by the previous call (budget or signal).
            self.pending_stop = self.evaluate(state)

    def before_step(self, state):
        return self.pending_stop

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
            state.run["evaluation_left"] = state.iteration  # progress.json's runs
            return "time_budget"
        if state.iteration != state.last_saved:
            state.save_checkpoint()
        return self.evaluate(state)

    def evaluate(self, state) -> Optional[str]:
        """Scores the generator (and the average); returns a stop reason when it was
        interrupted (nothing recorded then), else None."""
        config = state.config
        t0 = time.monotonic()
        state.log(f"evaluating the generator at iteration {state.iteration}")
        generator = state.generator
        if config.gan.precision != "float32":
            generator = float32_copy(generator, lambda: build_generator(config))
        cache = os.path.join(state.output_dir, EVALUATION_CACHE)
        try:
            figures = self._score(state, self.evaluator, generator, cache)
            if state.average is not None and self.average_evaluator is not None:
                figures["average"] = self._score(state, self.average_evaluator,
                                                 state.average.target, cache)
        except Interrupted as e:
            reason = "signal" if self.stop_flag and self.stop_flag.requested else "time_budget"
            state.log(f"evaluation of iteration {state.iteration} interrupted ({e}); "
                      "it is finished first when the run resumes")
            self.progress.restart_window(state)
            return reason
        spent = time.monotonic() - t0
        state.eval_seconds += spent  # before train_seconds(), which excludes it
        entry = {"iteration": state.iteration, "train_seconds": round(state.train_seconds(), 1),
                 "eval_seconds": round(spent, 1), **figures}
        state.run["evaluated"].append(state.iteration)  # progress.json's runs
        if state.chief:
            jsonio.append_jsonl(self.path, entry)
            if state.iteration == state.last_saved:
                state.write_progress()
        self.estimate, self.timed = spent, True
        self.done.add(state.iteration)
        if state.chief:
            shutil.rmtree(cache, ignore_errors=True)
        state.log(f"evaluated iteration {state.iteration} in {format_seconds(spent)}: "
                  + summarise_quality(entry)
                  + (f"; averaged generator: {summarise_quality(entry['average'])}"
                     if "average" in entry else ""))
        self.progress.restart_window(state)

    def _score(self, state, evaluator, generator, cache: str) -> dict:
        options = {"stop": lambda: bool(self.stop_flag and self.stop_flag.requested),
                   "deadline": (None if self.budget is None else
                                state.t_start + self.budget - 2 * state.save_seconds - 10.0),
                   "cache_dir": cache, "log": state.log}
        try:
            accepted = inspect.signature(evaluator).parameters
        except (TypeError, ValueError):
            accepted = {}
        options = {k: v for k, v in options.items() if k in accepted}
        try:
            return evaluator(generator, **options)
        except Interrupted:
            raise
        except Exception as e:  # noqa: BLE001 - a failed evaluation must not end the run
            # Recorded, so that a resume does not retry (and fail) it before training on.
            state.log(f"evaluation at iteration {state.iteration} failed; training goes "
                      f"on (the error is recorded in {QUALITY_FILE}):\n"
                      + "".join(traceback.format_exception(e)).rstrip())
            return {"error": f"{type(e).__name__}: {e}"[:2000]}
