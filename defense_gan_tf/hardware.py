"""What the CPU can do: the bfloat16 warning, the oneDNN switch, the machine record.

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


def emulates_bfloat16(*, accelerators: Optional[int] = None,
                      flags: Optional[frozenset] = None) -> bool:
    """True if bfloat16 would run emulated: no GPU or TPU and a CPU known to lack it."""
    if accelerators is None:
        import tensorflow as tf

        accelerators = (len(tf.config.list_physical_devices("GPU"))
                        + len(tf.config.list_physical_devices("TPU")))
    return not accelerators and native_bfloat16(flags) is False


def bfloat16_warning(precision: str, *, accelerators: Optional[int] = None,
                     flags: Optional[frozenset] = None) -> Optional[str]:
    """A warning when training ``precision`` asks for bfloat16 on a CPU that would emulate it."""
    if precision != "mixed_bfloat16" or not emulates_bfloat16(accelerators=accelerators,
                                                               flags=flags):
        return None
    return (f"warning: precision mixed_bfloat16 {EMULATED_BFLOAT16}, which was measured "
            "about 10x slower than float32 on such a machine; pass --precision=float32 (an "
            "exact resume keeps the run's precision; a warm start may change it)")


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
