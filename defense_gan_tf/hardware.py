"""What the hardware can do: the bfloat16 warning, the oneDNN switch, GPU memory growth,
the machine record.

``mixed_bfloat16`` pays off only where the hardware computes in bfloat16: on
x86 CPUs that is AVX512-BF16 or AMX-BF16. Elsewhere TensorFlow emulates the
bfloat16 kernels, and the same WGAN-GP iteration of the paper's MNIST model was
measured at 28.9 s against 2.8 s in float32 on a 2-core AVX2-only machine
(``bench/train_step.py``), against 0.31 s vs 0.41 s on a 2-core AVX512-BF16 one.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Optional

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"

BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# The start of both bfloat16 warnings (training precision, projection descent).
EMULATED_BFLOAT16 = ("on a CPU without AVX512-BF16 or AMX-BF16: TensorFlow emulates "
                     "bfloat16 here")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """(model name, instruction-set flags) of the first CPU; flags empty when unknown."""
    model, flags = None, None
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = frozenset(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    flags = flags or frozenset()
    return model, flags


def native_bfloat16(flags: Optional[frozenset] = None) -> Optional[bool]:
    """True if the CPU computes bfloat16 natively, False if not, None if its flags are unknown."""
    if flags is None:
        flags = cpu_info()[1]
    if not flags:
        return None
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def gpu_compute_capabilities() -> list:
    """(major, minor) of each GPU TensorFlow sees (none on a CPU-only machine)."""
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability:
            out.append(tuple(capability))
    return out


def _accelerator_count() -> int:
    """GPUs and TPUs TensorFlow sees."""
    import tensorflow as tf

    return (len(tf.config.list_physical_devices("GPU"))
            + len(tf.config.list_physical_devices("TPU")))


def bfloat16_emulation(*, accelerators: Optional[int] = None,
                       flags: Optional[frozenset] = None,
                       gpu_capabilities: Optional[list] = None) -> Optional[str]:
    """Why bfloat16 would run emulated on the device in use, as a phrase, or None when it
    runs natively there (or the hardware is unknown). The device in use is the
    accelerators when there are any (a TPU, or GPUs from compute capability 8.0, Ampere,
    compute bfloat16; older GPUs do not), else the CPU (AVX512-BF16 or AMX-BF16)."""
    if accelerators is None:
        accelerators = _accelerator_count()
    if accelerators:
        if gpu_capabilities is None:
            gpu_capabilities = gpu_compute_capabilities()
        old = sorted({c for c in gpu_capabilities if tuple(c) < (8, 0)})
        return (f"on a GPU of compute capability {'.'.join(map(str, old[0]))} (before "
                "8.0): it has no bfloat16 arithmetic") if old else None
    return EMULATED_BFLOAT16 if native_bfloat16(flags) is False else None


def native_bfloat16_device(*, accelerators: Optional[int] = None,
                           flags: Optional[frozenset] = None,
                           gpu_capabilities: Optional[list] = None) -> bool:
    """True only where the device in use is known to compute bfloat16 natively (a TPU,
    GPUs from compute capability 8.0, or a CPU with AVX512-BF16 or AMX-BF16)."""
    if accelerators is None:
        accelerators = _accelerator_count()
    if accelerators:
        return bfloat16_emulation(accelerators=accelerators,
                                  gpu_capabilities=gpu_capabilities) is None
    return native_bfloat16(flags) is True


def auto_precision(**device) -> str:
    """The training precision for the device in use: ``mixed_bfloat16`` where it computes
    bfloat16 natively, else ``float32`` (``device``: as :func:`native_bfloat16_device`)."""
    return "mixed_bfloat16" if native_bfloat16_device(**device) else "float32"


def emulates_bfloat16(*, accelerators: Optional[int] = None,
                      flags: Optional[frozenset] = None,
                      gpu_capabilities: Optional[list] = None) -> bool:
    """True if bfloat16 would run emulated on the device in use
    (:func:`bfloat16_emulation`)."""
    return bfloat16_emulation(accelerators=accelerators, flags=flags,
                              gpu_capabilities=gpu_capabilities) is not None


def bfloat16_warning(precision: str, *, accelerators: Optional[int] = None,
                     flags: Optional[frozenset] = None,
                     gpu_capabilities: Optional[list] = None) -> Optional[str]:
    """A warning when training ``precision`` asks for bfloat16 on a device that would
    emulate it."""
    reason = None if precision != "mixed_bfloat16" else bfloat16_emulation(
        accelerators=accelerators, flags=flags, gpu_capabilities=gpu_capabilities)
    if reason is None:
        return None
    measured = (", which was measured about 10x slower than float32 on such a machine"
                if reason == EMULATED_BFLOAT16 else "")
    return (f"warning: precision mixed_bfloat16 {reason}{measured}; pass "
            "--precision=float32 (an exact resume keeps the run's precision; a warm start "
            "may change it)")


GPU_GROWTH_VARIABLE = "TF_FORCE_GPU_ALLOW_GROWTH"


def enable_gpu_memory_growth() -> bool:
    """Asks TensorFlow to take GPU memory as it needs it instead of all at start, so that
    several workers (shards) can share a card, unless the user chose otherwise. Read
    when TensorFlow first uses a GPU; the binaries call this before importing it.

    Returns:
      True if the setting can still take effect (TensorFlow not yet imported).
    """
    os.environ.setdefault(GPU_GROWTH_VARIABLE, "true")
    return "tensorflow" not in sys.modules


def enable_onednn() -> bool:
    """Asks TensorFlow for its oneDNN CPU kernels unless the user chose otherwise.

    TensorFlow turns oneDNN on by default only on CPUs with AVX-512 neural-network
    features; on an AVX2-only CPU the packaged WGAN-GP iteration of the paper's
    MNIST model took 1.66 s with it against 3.48 s without (one run each, same
    machine). The variable is read when TensorFlow loads, so the binaries call
    this before importing it. An explicit ``TF_ENABLE_ONEDNN_OPTS`` is kept.

    Returns:
      True if the setting can still take effect (TensorFlow not yet imported).
    """
    os.environ.setdefault(ONEDNN_VARIABLE, "1")
    return "tensorflow" not in sys.modules


def describe() -> dict:
    """The machine a figure was measured on: CPU model, cores, native bfloat16, the
    oneDNN setting and versions."""
    cpu, flags = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "native_bfloat16": native_bfloat16(flags),
            ONEDNN_VARIABLE: os.environ.get(ONEDNN_VARIABLE, "(TensorFlow's default)"),
            "python": platform.python_version(), "tensorflow": tensorflow_version()}


def tensorflow_version() -> str:
    """TensorFlow's version; read from the installed package's metadata when TensorFlow
    is not loaded (importing it takes seconds, and a parent process that only starts
    measuring children need not)."""
    loaded = sys.modules.get("tensorflow")
    if loaded is not None:
        return loaded.__version__
    from importlib import metadata

    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:  # installed under another name: ask it
        import tensorflow as tf

        return tf.__version__
