"""How many images a gradient through the projection can take at once, from a memory
budget (the white-box attack of paper section 4.1, with the attacker's gradient
through all L steps of the projection).

The full-gradient mode keeps, for the backward pass, the activations of the descent
steps for each of the R restart rows of each image (and the inner gradient's, for the
second-order terms). The cost per (row, step) is the plain mode's measured slope:
1.08 GB per image at L=200, R=10 with the paper's MNIST generator (peaks of 3.26, 4.27,
6.44 and 10.77 GB for 1, 2, 4 and 8 images), over a base of 2.1 GB (TensorFlow, the
models, the data). Other image sizes scale it by their number of pixels.

The attacks' FGSM and PGD steps take their gradient in one compiled graph
(``DefendedClassifier.loss_and_input_gradient``), where the segmented recompute
(``Projector.checkpoint_segment``, about sqrt(L) steps) holds about two segments' steps
at roughly half the eager tape's cost per step: estimated as one segment at the eager
cost, 0.08 GB per image at L=200, R=10; measured 0.05 (against 1.04 for an eager tape
around the plain loop; ``bench/results/projection_memory.json``, bench/README.md).
A gradient taken with an eager tape around the compiled projection (CW-L2, and any model
without that method) holds about all L steps, segmented or not (measured 0.99 GB per
image), and is estimated as the plain loop. ``bench/projection_memory.py`` writes the
estimate beside the peaks it measures.
"""

from __future__ import annotations

import math
from typing import Optional

from defense_gan_tf.measured import measured_cost

GB = 1e9
# The measured slope of the full-gradient mode at L=200, R=10, per restart row and kept
# step, and its base (defense_gan_tf/measured_costs.json).
ROW_STEP_GB = measured_cost("full_gradient_gb_per_image") / (200 * 10)
BASE_GB = measured_cost("full_gradient_base_gb")
MNIST_PIXELS = 28 * 28


def held_steps(iterations: int, segment: int, gradient: str, fused: bool = True) -> int:
    """Descent steps whose activations the backward pass is estimated to hold at once:
    one segment for the full gradient taken in one graph (``fused``) with segments, all L
    for the full gradient otherwise, one for BPDA or no gradient (the descent runs
    outside any outer tape)."""
    if gradient != "full":
        return 1
    return min(segment, iterations) if fused and segment > 0 else iterations


def gb_per_image(iterations: int, restarts: int, *, gradient: str = "full",
                 segment: Optional[int] = None, fused: bool = True,
                 image_shape=(28, 28, 1)) -> float:
    """The estimated peak memory one more image adds to a gradient through the
    projection, in GB. ``segment`` None is the projection's default (about sqrt(L)),
    0 no segments; ``fused`` whether the gradient is taken in the projection's graph
    (the FGSM and PGD steps) rather than by an eager tape around it (CW-L2)."""
    if segment is None:
        segment = math.ceil(math.sqrt(iterations))
    pixels = math.prod(int(s) for s in image_shape)
    return (ROW_STEP_GB * restarts * held_steps(iterations, segment, gradient, fused)
            * pixels / MNIST_PIXELS)


def available_gb(meminfo: str = "/proc/meminfo") -> Optional[float]:
    """Memory available to a new process now (MemAvailable), in GB; None if unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GB
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_budget_gb() -> Optional[float]:
    """Half the memory available when the run starts (None if unknown)."""
    available = available_gb()
    return None if available is None else available / 2


def batch_for_budget(budget_gb: float, per_image_gb: float, wanted: int,
                     base_gb: float = BASE_GB) -> int:
    """The largest batch of at most ``wanted`` images estimated to fit ``budget_gb``
    (at least 1)."""
    if per_image_gb <= 0:
        return wanted
    return max(1, min(wanted, int((budget_gb - base_gb) // per_image_gb)))
