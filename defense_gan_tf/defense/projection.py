"""The Defense-GAN projection onto the range of the generator (paper section 3.3).

For each image x, z* = argmin_z ||G(z) - x||^2 is approximated by L steps of
gradient descent with momentum from R random starts, keeping the start whose
final reconstruction error is lowest (paper Algorithm 1 and Figure 2). The
settings are the authors': z0 ~ N(0, 1/latent_dim), momentum 0.7, learning
rate 10, L = 200, R = 10; the loss of one image is the mean over its pixels of
the squared error and the optimised total is the sum over the batch, so each
z's gradient is independent of its batch companions.

The R restarts of B images run as one [B*R, latent] batch inside a single
compiled loop over ``tf.range``; the best restart is picked with reshape +
argmin + gather.

Gradient modes (what a caller differentiating through the projection gets):
  ``full``: the exact gradient through all L unrolled steps (the paper's
            white-box setting; memory grows with L);
  ``bpda``: the backward-pass differentiable approximation of Athalye et al.
            (2018): d G(z*(x)) / dx is taken to be the identity;
  ``none``: zero: the projection is treated as a constant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import warnings
from typing import Mapping, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from defense_gan_tf import hardware
from defense_gan_tf.config import GRADIENT_MODES, ProjectionConfig
from defense_gan_tf.models.checks import check_generator

RANGE_TOLERANCE = 1e-4


class Projection(NamedTuple):
    """Result of :func:`project`.

    Attributes:
      reconstruction: G(z*), same shape as the input images.
      z: the best latent vector of each image, [B, latent].
      error: per-image reconstruction error, mean over pixels of (G(z*) - x)^2, [B].
      steps: descent steps the loop executed (fewer than L when early stopping
        ended it), a scalar.
      row_steps: generator forward-and-backward passes executed, summed over rows
        (stopped and pruned rows included while their stretch ran), a scalar: the
        work the projection did.
    """

    reconstruction: tf.Tensor
    z: tf.Tensor
    error: tf.Tensor
    steps: Optional[tf.Tensor] = None
    row_steps: Optional[tf.Tensor] = None


def generator_range(generator: keras.Model) -> tuple[float, float]:
    """The pixel range of a generator from its output activation: sigmoid [0, 1], tanh [-1, 1]."""
    activation = getattr(generator.layers[-1], "activation", None)
    name = getattr(activation, "__name__", str(activation))
    if "tanh" in name:
        return (-1.0, 1.0)
    if "sigmoid" in name:
        return (0.0, 1.0)
    # Not one of ours: a generator of images in [0, 1] is the common case.
    return (0.0, 1.0)


def validate_images(images, image_shape, pixel_range, name: str = "images") -> tf.Tensor:
    """Checks a batch of images for the projection; returns it as a float32 tensor.

    Integer images (such as uint8 in [0, 255]) are rejected rather than
    converted, since their scale is ambiguous: convert to float32 in the
    generator's range first.

    Eager inputs raise ``ValueError``; symbolic inputs (inside a
    ``tf.function``) get ``tf.debugging`` assertions whose messages say the same.

    Raises:
      ValueError: wrong rank, shape or channel count, non-float dtype,
        NaN or Inf, values outside ``pixel_range``.
    """
    dtype = getattr(images, "dtype", None)
    if dtype is None:
        images = np.asarray(images)
        dtype = images.dtype
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(f"{name} must be floating point in {tuple(pixel_range)}, got "
                         f"{dtype.name}; convert integer images (e.g. uint8 / 255.0) first")
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    shape = images.shape
    if shape.rank is not None and shape.rank != 4:
        raise ValueError(f"{name} must have rank 4 [batch, height, width, channels], "
                         f"got shape {shape}")
    expected = tuple(image_shape)
    if shape.rank == 4:
        got = tuple(shape[1:])
        if got[-1] is not None and got[-1] != expected[-1]:
            raise ValueError(f"{name} have {got[-1]} channel(s), the generator makes "
                             f"{expected[-1]}: expected shape [batch, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}]")
        if any(g is not None and g != e for g, e in zip(got, expected)):
            raise ValueError(f"{name} have shape {got} per image, the generator makes "
                             f"{expected}")
    lo, hi = pixel_range
    if tf.executing_eagerly():
        values = images.numpy()
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contain NaN or Inf")
        if values.size and (values.min() < lo - RANGE_TOLERANCE or
                            values.max() > hi + RANGE_TOLERANCE):
            raise ValueError(f"{name} have values in [{values.min():.4g}, {values.max():.4g}], "
                             f"outside the generator's range [{lo}, {hi}]")
        return images
    # Inside a graph: the same checks as assertions (empty batches pass: min is +inf).
    # Static shapes may be looser than the runtime ones (a served signature), so the
    # shape is asserted too.
    wanted = f"{name} must have shape [batch, {expected[0]}, {expected[1]}, {expected[2]}]"
    # The rank first: comparing a shape of another length would fail with a message
    # that names neither the input nor the shape it needs.
    with tf.control_dependencies([tf.debugging.assert_rank(images, 4, message=wanted)]):
        images = tf.identity(images)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(images)[1:], tf.constant(expected, tf.int32), message=wanted),
        tf.debugging.assert_all_finite(images, f"{name} contain NaN or Inf"),
        tf.debugging.assert_greater_equal(
            tf.reduce_min(images), lo - RANGE_TOLERANCE,
            message=f"{name} have values below the generator range [{lo}, {hi}]"),
        tf.debugging.assert_less_equal(
            tf.reduce_max(images), hi + RANGE_TOLERANCE,
            message=f"{name} have values above the generator range [{lo}, {hi}]"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def _per_image_error(reconstruction, images):
    return tf.reduce_mean(tf.square(reconstruction - images), axis=[1, 2, 3])


def _say_step(t, every: int, total: int, after=()):
    """Prints ``projection: step t/total`` to standard error when ``t`` is a multiple of
    ``every`` (or the last step): progress from inside a compiled loop."""
    if not every:
        return
    with tf.control_dependencies(list(after)):
        t = tf.identity(t)

    def say():
        tf.print("projection: step", t, "of", total, output_stream=sys.stderr)
        return tf.constant(True)

    tf.cond((t % every == 0) | (t == total), say, lambda: tf.constant(False))


def _momentum_steps(generator, targets, z, velocity, config: ProjectionConfig, *,
                    start: int, end: int):
    """Plain momentum steps ``start``..``end``-1 (no early stopping): (z, velocity)."""
    decay_step = int(round(config.decay_at * config.iterations))

    def body(t, z, velocity):
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_sum(_per_image_error(generator(z, training=False), targets))
        grad = tape.gradient(loss, z)
        lr = tf.constant(config.learning_rate, tf.float32)
        if config.decay:
            lr = tf.where(t >= decay_step, lr * config.decay_factor, lr)
        velocity = config.momentum * velocity + grad
        return t + 1, z - lr * velocity, velocity

    _, z, velocity = tf.while_loop(lambda t, z, v: t < end, body,
                                   (tf.constant(start), z, velocity),
                                   maximum_iterations=end - start)
    return z, velocity


def _descend_in_segments(generator, targets, z, velocity, config: ProjectionConfig, *,
                         start: int, end: int, segment: int, progress: int = 0):
    """The steps of :func:`_momentum_steps` in segments of ``segment`` steps, each one op
    with a custom gradient (:func:`_recomputed_segment`): the backward pass keeps only z
    and the velocity at segment boundaries and runs each segment again when its gradient
    is needed (gradient checkpointing, Chen et al. 2016), holding about two segments'
    activations at once. The values and gradients are those of the plain loop. The
    saving needs the gradient taken in the same graph as the descent
    (:meth:`Projector.graph` inside one ``tf.function``); under an eager tape around the
    compiled projection the peak stays near the plain loop's
    (bench/results/projection_memory.json)."""
    handoff = {}  # segment start -> the upstream gradient its backward pass received
    for s0 in range(start, end, segment):
        s1 = min(s0 + segment, end)
        z, velocity = _recomputed_segment(generator, config, s0, s1, progress,
                                          handoff=handoff, next_start=s1)(
            z, velocity, targets)
        if progress and (s1 // progress > s0 // progress or s1 == config.iterations):
            with tf.control_dependencies([z]):
                tf.print("projection: step", s1, "of", config.iterations,
                         output_stream=sys.stderr)
    return z, velocity


def _recomputed_segment(generator, config: ProjectionConfig, s0: int, s1: int,
                        progress: int = 0, handoff: Optional[dict] = None,
                        next_start: Optional[int] = None):
    """Steps s0..s1-1 as one op whose gradient runs them again from their inputs.

    (``tf.recompute_grad`` runs its forward pass with recording stopped, which would
    also blind the inner tape that takes each step's gradient; hence this.) The
    generator's weights are treated as constants: they get no gradient.
    """
    @tf.custom_gradient
    def segment(z, velocity, targets):
        out = _momentum_steps(generator, targets, z, velocity, config, start=s0, end=s1)

        def grad(dz, dvelocity, variables=None):
            # The recompute waits until the backward pass has reached the next segment
            # (the upstream gradient that segment received): nothing else orders it, and
            # a graph runs an op as soon as its inputs exist, so every segment's
            # recompute (and its saved activations) would otherwise start at once,
            # holding all L steps again. Waiting for this segment's own upstream
            # gradient instead would hold one segment, not two, but leave one core idle
            # (measured 1.7x the plain loop's time against 1.4x; bench/README.md).
            waits = [dz, dvelocity]
            if handoff is not None:
                handoff[s0] = waits
                waits = handoff.get(next_start, waits)
            with tf.control_dependencies(waits):
                z0, velocity0, targets0 = (tf.identity(t) for t in (z, velocity, targets))
            with tf.GradientTape() as tape:
                tape.watch([z0, velocity0, targets0])
                again = _momentum_steps(generator, targets0, z0, velocity0, config,
                                        start=s0, end=s1)
            inputs = tape.gradient(again, [z0, velocity0, targets0],
                                   output_gradients=[dz, dvelocity],
                                   unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if progress and (s1 // progress > s0 // progress or s0 == 0):
                with tf.control_dependencies(inputs):
                    said = tf.print(f"projection: gradient through steps {s0}-{s1} of "
                                    f"{config.iterations} done", output_stream=sys.stderr)
                with tf.control_dependencies([said] if said is not None else []):
                    inputs = [tf.identity(g) for g in inputs]
            return inputs, [None] * len(variables or ())
        return out, grad

    return segment


def _descend(generator, targets, z, config: ProjectionConfig, *, start: int, end: int,
             restarts: int, velocity, active, reference, segment: Optional[int] = None,
             progress: int = 0):
    """Momentum steps ``start``..``end``-1 on sum_i mean_pixels (G(z_i) - x_i)^2.

    The update is the one of TF1's ``MomentumOptimizer`` the authors used:
    v <- momentum * v + grad, z <- z - lr * v. With early stopping, an image whose
    best error (over its ``restarts`` rows) improved by less than the tolerance over
    the last window stops: its rows keep their z. The loop ends at ``end`` or when
    every image has stopped.

    Args:
      active, reference: per image, whether it still descends and its best error at
        the last window boundary (carried from stretch to stretch).
      segment: without early stopping, run the steps in recomputed segments of this many
        steps (:func:`_descend_in_segments`; for a gradient through the loop).
      progress: print ``projection: step t of L`` every this many steps (0: never).

    Returns:
      (z, velocity, active, reference, steps executed).
    """
    decay_step = int(round(config.decay_at * config.iterations))
    early = config.early_stop_tolerance > 0
    if segment and not early and end > start:
        z, velocity = _descend_in_segments(generator, targets, z, velocity, config,
                                           start=start, end=end, segment=segment,
                                           progress=progress)
        return z, velocity, active, reference, tf.constant(end - start)
    window, tolerance = config.early_stop_window, config.early_stop_tolerance
    batch = tf.shape(targets)[0] // restarts

    def body(t, z, velocity, active, reference):
        with tf.GradientTape() as tape:
            tape.watch(z)
            row_errors = _per_image_error(generator(z, training=False), targets)
            loss = tf.reduce_sum(row_errors)
        grad = tape.gradient(loss, z)
        lr = tf.constant(config.learning_rate, tf.float32)
        if config.decay:
            lr = tf.where(t >= decay_step, lr * config.decay_factor, lr)
        new_velocity = config.momentum * velocity + grad
        new_z = z - lr * new_velocity
        if early:
            rows = tf.repeat(active, restarts)[:, None]
            new_velocity = tf.where(rows, new_velocity, velocity)
            new_z = tf.where(rows, new_z, z)
            best = tf.reduce_min(tf.reshape(row_errors, [batch, restarts]), axis=1)
            boundary = tf.equal((t + 1 - start) % window, 0)
            stalled = reference - best < tolerance
            active = tf.where(boundary, active & ~stalled, active)
            reference = tf.where(boundary, best, reference)
        _say_step(t + 1, progress, config.iterations, after=[new_z])
        return t + 1, new_z, new_velocity, active, reference

    t = tf.constant(start)
    t, z, velocity, active, reference = tf.while_loop(
        lambda t, z, v, active, r: (t < end) & tf.reduce_any(active), body,
        (t, z, velocity, active, reference), maximum_iterations=end - start)
    return z, velocity, active, reference, t - start


def _keep_best_half(generator, targets, z, velocity, restarts: int, keep: int):
    """Each image keeps its ``keep`` restarts of lowest current error (rows stay grouped)."""
    batch = tf.shape(targets)[0] // restarts
    errors = tf.reshape(_per_image_error(generator(z, training=False), targets),
                        [batch, restarts])
    _, best = tf.math.top_k(-errors, k=keep)                    # [batch, keep]
    rows = tf.reshape(best + tf.range(batch)[:, None] * restarts, [-1])
    return tf.gather(targets, rows), tf.gather(z, rows), tf.gather(velocity, rows)


def _project_graph(generator, images, z_init, config: ProjectionConfig, *,
                   descent_generator=None, encoder=None, segment: Optional[int] = None,
                   progress: int = 0):
    """The projection proper: images [B, ...], z_init [B*R, d] -> Projection.

    An empty batch gives empty results: it is padded with one blank image (and
    R blank starts) whose results are sliced off again, because some CPU
    kernels fail on zero-row gradients. Non-empty batches are padded with nothing.
    """
    n = tf.shape(images)[0]
    pad = tf.maximum(1 - n, 0)
    images = tf.concat([images, tf.zeros(tf.concat([[pad], tf.shape(images)[1:]], 0),
                                         images.dtype)], 0)
    z_init = tf.concat([z_init, tf.zeros(tf.stack([pad * config.restarts,
                                                   tf.shape(z_init)[1]]), z_init.dtype)], 0)
    out = _project_nonempty(generator, images, z_init, config,
                            descent_generator=descent_generator or generator, encoder=encoder,
                            segment=segment, progress=progress)
    # the blank image's generator passes are not the caller's
    return Projection(reconstruction=out.reconstruction[:n], z=out.z[:n],
                      error=out.error[:n], steps=out.steps,
                      row_steps=tf.where(n > 0, out.row_steps, 0))


def _project_nonempty(generator, images, z_init, config: ProjectionConfig, *,
                      descent_generator, encoder, segment=None, progress=0) -> Projection:
    batch = tf.shape(images)[0]
    if encoder is not None:  # The first restart of each image starts at E(x).
        grouped = tf.reshape(z_init, [batch, config.restarts, -1])
        z_enc = tf.cast(encoder(images, training=False), z_init.dtype)[:, None, :]
        z_init = tf.reshape(tf.concat([z_enc, grouped[:, 1:]], axis=1), tf.shape(z_init))
    # Image i's restarts are rows i*R..i*R+R-1, at every stage of the schedule.
    targets = tf.repeat(images, config.restarts, axis=0)
    z, velocity = z_init, tf.zeros_like(z_init)
    active = tf.ones([batch], tf.bool)
    reference = tf.fill([batch], tf.constant(np.inf, tf.float32))
    steps, row_steps = tf.constant(0), tf.constant(0)
    schedule = config.restart_schedule
    for k, (start, end, restarts) in enumerate(schedule):
        z, velocity, active, reference, ran = _descend(
            descent_generator, targets, z, config, start=start, end=end, restarts=restarts,
            velocity=velocity, active=active, reference=reference, segment=segment,
            progress=progress)
        steps += ran
        row_steps += ran * batch * restarts
        if k + 1 < len(schedule) and schedule[k + 1][2] < restarts:
            targets, z, velocity = _keep_best_half(descent_generator, targets, z, velocity,
                                                   restarts, schedule[k + 1][2])
    restarts = schedule[-1][2]
    reconstructions = generator(z, training=False)          # float32, whatever descended
    errors = tf.reshape(_per_image_error(reconstructions, targets), [batch, restarts])
    best = tf.argmin(errors, axis=1, output_type=tf.int32)
    pick = lambda t: tf.gather(tf.reshape(t, tf.concat([[batch, restarts], tf.shape(t)[1:]],
                                                       0)), best, axis=1, batch_dims=1)
    return Projection(reconstruction=pick(reconstructions), z=pick(z),
                      error=tf.gather(errors, best, axis=1, batch_dims=1), steps=steps,
                      row_steps=row_steps)


def bfloat16_twin(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose layers compute in bfloat16 (float32 weights, copied), with
    the layers that produce its outputs kept in float32.

    Works for functional and sequential Keras models rebuilt from their config.
    """
    config = model.get_config()
    outputs = {entry[0] for entry in _output_layer_entries(config)}
    layers = config.get("layers", [])
    for index, layer in enumerate(layers):
        name = layer.get("config", {}).get("name", layer.get("name"))
        if layer.get("class_name") == "InputLayer":
            continue
        is_output = name in outputs or (not outputs and index == len(layers) - 1)
        layer["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                    "config": {"name": "float32" if is_output else
                                               "mixed_bfloat16"},
                                    "registered_name": None}
    twin = model.__class__.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def _output_layer_entries(config: dict) -> list:
    outputs = config.get("output_layers", [])
    if outputs and not isinstance(outputs[0], list):  # a single output: [name, 0, 0]
        outputs = [outputs]
    return outputs


def initial_latents(batch, latent_dim: int, restarts: int, seed=None) -> tf.Tensor:
    """R starts per image drawn from N(0, 1/latent_dim), shaped [batch*R, latent_dim].

    With ``seed`` (an int or a shape-[2] tensor) the draw is stateless and
    reproducible; without, it uses TensorFlow's global random state.
    """
    shape = tf.stack([tf.cast(batch, tf.int32) * restarts, latent_dim])
    stddev = float(np.sqrt(1.0 / latent_dim))
    if seed is None:
        return tf.random.normal(shape, stddev=stddev)
    if isinstance(seed, (int, np.integer)):
        seed = [int(seed), 0]
    return tf.random.stateless_normal(shape, seed=seed, stddev=stddev)


def attach_gradient(images, value, gradient: str) -> tf.Tensor:
    """``value`` in the forward pass; backward, the identity to ``images`` (``bpda``,
    Athalye et al. 2018 section 4.1) or zero (``none``)."""
    if gradient not in ("bpda", "none"):
        raise ValueError(f"attach_gradient takes bpda or none, got {gradient!r}")
    identity = gradient == "bpda"

    @tf.custom_gradient
    def attach(x):
        def grad(upstream):
            return upstream if identity else tf.zeros_like(upstream)
        return tf.identity(tf.stop_gradient(value)), grad

    return attach(images)


def as_projection_config(config) -> ProjectionConfig:
    """``config`` as a :class:`ProjectionConfig`: one as it is, None as the paper's, a
    mapping of its fields (e.g. ``{"iterations": 50}``) checked like the dataclass.

    Raises:
      ValueError: an unknown field or a bad value (named).
      TypeError: anything else.
    """
    if config is None:
        return ProjectionConfig()
    if isinstance(config, ProjectionConfig):
        return config
    if isinstance(config, Mapping):
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(ProjectionConfig)})
        if unknown:
            raise ValueError(f"unknown projection setting(s) {unknown}")
        return ProjectionConfig(**dict(config))
    raise TypeError(f"the projection's config must be a ProjectionConfig or a dict of its "
                    f"fields, got {type(config).__name__}")


_EXECUTION = {"strategy": None, "jit_compile": False}


@contextlib.contextmanager
def execution(*, strategy: Optional[tf.distribute.Strategy] = None,
              jit_compile: bool = False):
    """How the :class:`Projector` s built inside the block run, not what they compute:
    eager batches split over ``strategy``'s replicas, the compiled projection through XLA
    with ``jit_compile`` (a Projector's own arguments win). The evaluation binaries'
    ``--replicas`` and ``--rec_jit``: the workflows build their projectors inside it, and
    no run setting or record changes."""
    previous = dict(_EXECUTION)
    _EXECUTION.update(strategy=strategy, jit_compile=bool(jit_compile))
    try:
        yield
    finally:
        _EXECUTION.update(previous)


class Projector(tf.Module):
    """A compiled projection for one generator and one :class:`ProjectionConfig`.

    Calling it is :func:`project`; keep one around to avoid retracing. With
    ``gradient="full"`` the backward pass recomputes the unrolled descent in segments of
    ``checkpoint_segment`` steps (default about sqrt(L); 0 keeps every step; the gradient
    is the same; early stopping runs unsegmented). With the gradient taken in the same
    graph (:meth:`graph`, as :meth:`DefendedClassifier.loss_and_input_gradient` does) the
    backward pass holds about two segments' activations instead of L steps': at L=200,
    R=10, 0.05 GB per image against 1.04, at 1.1x the time (``defense_gan_tf/memory.py``,
    bench/results/projection_memory.json). An eager call
    with more than ``max_batch`` images projects them ``max_batch`` at a time (the
    starts of all are drawn first, so each image gets what one call would give it;
    with early stopping the stop step is decided per chunk), so that memory stays
    bounded whatever the input size.

    With a ``strategy`` of several replicas (``tf.distribute.MirroredStrategy`` over
    GPUs, or over logical CPU devices) an eager call splits its images into one
    contiguous share per replica (``max_batch`` per replica at a time); the starts are
    drawn for the whole batch first, so every image gets the starts and the result one
    device gives it. Calls inside a caller's graph (:meth:`graph`, the full gradient)
    run on one device.

    ``jit_compile=True`` compiles an eager call's projection with XLA (one compilation
    per batch size; no ``progress_every`` lines inside it): the same results within
    float32 rounding, faster or slower by device (bench/README.md, ``--variants=xla``).

    ``progress_every`` (a class attribute, 0 by default; set it before the first call)
    makes the compiled loop print ``projection: step t of L`` to standard error every
    that many steps, and the full gradient's backward pass a line per segment: a batch
    at the paper's settings does not sit silent for minutes.
    """

    max_batch = 500
    progress_every = 0

    def __init__(self, generator: keras.Model, config: Optional[ProjectionConfig] = None,
                 gradient: str = "none", name: Optional[str] = None,
                 encoder: Optional[keras.Model] = None,
                 checkpoint_segment: Optional[int] = None,
                 strategy: Optional[tf.distribute.Strategy] = None,
                 jit_compile: Optional[bool] = None):
        super().__init__(name=name)
        strategy = _EXECUTION["strategy"] if strategy is None else strategy
        jit_compile = _EXECUTION["jit_compile"] if jit_compile is None else jit_compile
        # Several replicas split an eager call's images (see __call__); one is no split.
        self.strategy = (strategy if strategy is not None
                         and strategy.num_replicas_in_sync > 1 else None)
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
        check_generator(generator, "the projection's generator")
        self.generator = generator
        self.config = as_projection_config(config)
        self.gradient = gradient
        if self.config.encoder_start and encoder is None:
            raise ValueError("projection.encoder_start needs an encoder (x -> z)")
        self.encoder = encoder if self.config.encoder_start else None
        self.descent_generator = generator
        if self.config.descent_precision == "bfloat16":
            self.descent_generator = bfloat16_twin(generator)
            reason = hardware.bfloat16_emulation()
            if reason:
                warnings.warn(
                    f"projection.descent_precision=bfloat16 {reason}, "
                    "so the descent is slower than in float32, not faster "
                    "(--projection=fast --rec_precision=float32 keeps the preset's restart "
                    "pruning)",
                    RuntimeWarning, stacklevel=2)
        if checkpoint_segment is None:
            checkpoint_segment = math.ceil(math.sqrt(self.config.iterations))
        if checkpoint_segment < 0:
            raise ValueError(f"checkpoint_segment must be >= 0, got {checkpoint_segment}")
        self.segment = checkpoint_segment if gradient == "full" else 0
        self.latent_dim = int(generator.input_shape[-1])
        self.image_shape = tuple(int(s) for s in generator.output_shape[1:])
        self.pixel_range = generator_range(generator)
        image_spec = tf.TensorSpec([None, *self.image_shape], tf.float32)
        z_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)
        self.jit_compile = bool(jit_compile)
        self._compiled = tf.function(self.graph, input_signature=(image_spec, z_spec),
                                     jit_compile=self.jit_compile or None)

    def graph(self, images, z_init) -> Projection:
        """The projection's ops, for use inside a caller's ``tf.function`` (inputs already
        checked and starts drawn, as :meth:`__call__` does): a gradient taken in the same
        graph keeps only what its backward pass needs (see
        :meth:`DefendedClassifier.loss_and_input_gradient`)."""
        config, generator = self.config, self.generator
        options = dict(descent_generator=self.descent_generator, encoder=self.encoder,
                       progress=0 if self.jit_compile else int(self.progress_every))
        if self.gradient == "full":  # Through what actually ran, options included.
            return _project_graph(generator, images, z_init, config, segment=self.segment,
                                  **options)
        result = _project_graph(generator, tf.stop_gradient(images),
                                tf.stop_gradient(z_init), config, **options)
        return Projection(attach_gradient(images, result.reconstruction, self.gradient),
                          tf.stop_gradient(result.z), tf.stop_gradient(result.error),
                          result.steps, result.row_steps)

    def initial_latents(self, batch, seed=None) -> tf.Tensor:
        """z0 for a batch: [batch*R, latent] from N(0, 1/latent)."""
        return initial_latents(batch, self.latent_dim, self.config.restarts, seed)

    def __call__(self, images, *, z_init=None, seed=None) -> Projection:
        images = validate_images(images, self.image_shape, self.pixel_range)
        batch = tf.shape(images)[0]
        if z_init is None:
            z_init = self.initial_latents(batch, seed)
        else:
            z_init = tf.convert_to_tensor(z_init, tf.float32)
            if z_init.shape.rank != 2 or (z_init.shape[-1] is not None
                                          and z_init.shape[-1] != self.latent_dim):
                raise ValueError(f"z_init must be [batch*restarts, {self.latent_dim}], "
                                 f"got shape {z_init.shape}")
            if tf.executing_eagerly() and images.shape[0] is not None and \
                    z_init.shape[0] != images.shape[0] * self.config.restarts:
                raise ValueError(
                    f"z_init has {z_init.shape[0]} rows; {images.shape[0]} images x "
                    f"{self.config.restarts} restarts need "
                    f"{images.shape[0] * self.config.restarts}")
        n, step = images.shape[0], self.max_batch
        if not tf.executing_eagerly() or n is None:
            return self._compiled(images, z_init)
        run = self._compiled if self.strategy is None else self._replicated
        if self.strategy is not None:
            step *= self.strategy.num_replicas_in_sync
        if n <= step:
            return run(images, z_init)
        r = self.config.restarts
        return _joined([run(images[i:i + step], z_init[i * r:(i + step) * r])
                        for i in range(0, n, step)])

    def _replicated(self, images, z_init) -> Projection:
        """One eager batch split over the strategy's replicas, each projecting a
        contiguous share of the images with those images' own starts, run side by side;
        the results in image order, as one device gives them (up to float rounding in
        kernels whose blocking depends on the batch size)."""
        k, r = self.strategy.num_replicas_in_sync, self.config.restarts
        n = int(images.shape[0])
        bounds = [n * i // k for i in range(k + 1)]

        def share(tensor, rows_per_image):
            def value(context):
                i = context.replica_id_in_sync_group
                return tensor[bounds[i] * rows_per_image:bounds[i + 1] * rows_per_image]
            return self.strategy.experimental_distribute_values_from_function(value)

        # A plain function, each replica's thread calling the compiled one: handed a
        # tf.function, the strategy would re-bind its signature to the per-replica values.
        out = self.strategy.run(lambda x, z: self._compiled(x, z),
                                args=(share(images, 1), share(z_init, r)))
        return _joined(list(self.strategy.experimental_local_results(out)))


def _joined(parts: list) -> Projection:
    """Projections of consecutive chunks of a batch as one: images in order, the longest
    descent's ``steps`` and the sum of ``row_steps``."""
    if len(parts) == 1:
        return parts[0]
    return Projection(*(tf.concat([getattr(p, k) for p in parts], 0)
                        for k in ("reconstruction", "z", "error")),
                      steps=tf.reduce_max([p.steps for p in parts]),
                      row_steps=tf.add_n([p.row_steps for p in parts]))


def project(generator: keras.Model, images, config: Optional[ProjectionConfig] = None, *,
            z_init=None, seed=None, gradient: str = "none",
            strategy: Optional[tf.distribute.Strategy] = None) -> Projection:
    """Projects images onto the range of ``generator`` (paper section 3.3, Algorithm 1).

    A one-off call: it compiles the projection for this call. To project many
    batches with one generator, hold a :class:`Projector` and call it instead.

    Args:
      generator: keras model z [B, latent] -> images [B, H, W, C].
      images: float images [B, H, W, C] in the generator's pixel range
        ([0, 1] for a sigmoid output, [-1, 1] for tanh). Integer dtypes are
        rejected, not converted.
      config: L, R, learning rate, momentum, decay (default: the paper's).
      z_init: optional starts [B*R, latent]; rows i*R..i*R+R-1 belong to image i.
      seed: seeds z_init when it is not given (stateless, reproducible).
      gradient: ``full``, ``bpda`` or ``none`` (see the module docstring).
      strategy: a ``tf.distribute`` strategy whose replicas (GPUs, or logical CPU
        devices) each project a share of the images (see :class:`Projector`).

    Returns:
      A :class:`Projection` (reconstruction, z, error).

    Raises:
      ValueError: bad images (rank, shape, channels, dtype, range, NaN / Inf),
        bad z_init or gradient mode.
    """
    return Projector(generator, config, gradient, strategy=strategy)(images, z_init=z_init,
                                                                     seed=seed)
