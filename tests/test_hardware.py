"""CPU feature detection behind the bfloat16 warning, and the warning in training."""

import os
import subprocess
import sys

import pytest

from defense_gan_tf import hardware
from defense_gan_tf import training

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
WITH_BF16 = ("processor\t: 0\nmodel name\t: Intel Xeon\n"
             "flags\t\t: fpu avx2 avx512f avx512_bf16\n")


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text + text.replace(": 0", ": 1"))
    return str(path)


def test_cpu_info_reads_the_model_and_flags(tmp_path):
    model, flags = hardware.cpu_info(_cpuinfo(tmp_path, AVX2_ONLY))
    assert model == "AMD EPYC"
    assert {"avx2", "fma"} <= flags and "avx512_bf16" not in flags
    assert hardware.native_bfloat16(flags) is False
    assert hardware.native_bfloat16(hardware.cpu_info(_cpuinfo(tmp_path, WITH_BF16))[1])
    assert hardware.native_bfloat16(frozenset({"amx_bf16"}))
    # No readable cpuinfo: unknown, never a false claim either way.
    model, flags = hardware.cpu_info(str(tmp_path / "missing"))
    assert model and flags == frozenset()
    assert hardware.native_bfloat16(flags) is None


def test_bfloat16_warning_only_where_bfloat16_would_be_emulated():
    avx2, bf16 = frozenset({"avx2"}), frozenset({"avx512_bf16"})
    assert "--precision=float32" in hardware.bfloat16_warning(
        "mixed_bfloat16", accelerators=0, flags=avx2)
    assert hardware.bfloat16_warning("mixed_bfloat16", accelerators=0, flags=bf16) is None
    assert hardware.bfloat16_warning("mixed_bfloat16", accelerators=1, flags=avx2) is None
    assert hardware.bfloat16_warning("float32", accelerators=0, flags=avx2) is None
    assert hardware.bfloat16_warning("mixed_bfloat16", accelerators=0,
                                     flags=frozenset()) is None
    # On a GPU the GPU decides, whatever the CPU: Ampere (8.0) and later compute bfloat16.
    assert hardware.bfloat16_warning("mixed_bfloat16", accelerators=1, flags=avx2,
                                     gpu_capabilities=[(8, 0)]) is None
    old = hardware.bfloat16_warning("mixed_bfloat16", accelerators=2, flags=bf16,
                                    gpu_capabilities=[(8, 6), (7, 0)])
    assert "compute capability 7.0" in old and "--precision=float32" in old
    assert "10x" not in old  # that figure was measured on a CPU


@pytest.mark.parametrize("flags,warned", [({"avx2"}, True), ({"avx512_bf16"}, False)])
def test_training_in_bfloat16_warns_on_a_cpu_that_emulates_it(tmp_path, tiny_config,
                                                                monkeypatch, flags, warned):
    import numpy as np

    from defense_gan_tf import config as config_lib

    monkeypatch.setattr(hardware, "cpu_info", lambda: ("cpu", frozenset(flags)))
    cfg = config_lib.override(tiny_config, {"gan.train_iters": 1,
                                            "gan.precision": "mixed_bfloat16"})
    images = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype(np.float32)
    messages = []
    training.train_gan(cfg, str(tmp_path / "run"), images=images, log=messages.append)
    assert any("AVX512-BF16" in m for m in messages) == warned



def test_onednn_is_asked_for_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(hardware.ONEDNN_VARIABLE, raising=False)
    assert hardware.enable_onednn() == ("tensorflow" not in sys.modules)
    assert os.environ[hardware.ONEDNN_VARIABLE] == "1"
    monkeypatch.setenv(hardware.ONEDNN_VARIABLE, "0")
    hardware.enable_onednn()
    assert os.environ[hardware.ONEDNN_VARIABLE] == "0"
    assert hardware.describe()[hardware.ONEDNN_VARIABLE] == "0"


def test_binaries_ask_for_onednn_before_tensorflow_loads():
    # bin/flags.py is what every evaluation binary imports first.
    # GPU memory growth too, so that several workers can share a card.
    code = ("import sys; sys.path.insert(0, 'bin'); import flags, os; "
            "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'], "
            "os.environ['TF_FORCE_GPU_ALLOW_GROWTH'])")
    env = {k: v for k, v in os.environ.items()
           if k not in (hardware.ONEDNN_VARIABLE, hardware.GPU_GROWTH_VARIABLE)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["False", "1", "true"]
    env[hardware.GPU_GROWTH_VARIABLE] = "false"  # the user's choice stands
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out[-1] == "false"


def test_the_machine_record_names_tensorflow_without_loading_it():
    import tensorflow as tf

    assert hardware.describe()["tensorflow"] == tf.__version__
    code = ("import sys; from defense_gan_tf import hardware; "
            "print(hardware.describe()['tensorflow'], 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [tf.__version__, "False"]


def test_auto_precision_picks_bfloat16_only_where_the_device_computes_it():
    avx2, bf16 = frozenset({"avx2"}), frozenset({"amx_bf16"})
    assert hardware.auto_precision(accelerators=0, flags=bf16) == "mixed_bfloat16"
    assert hardware.auto_precision(accelerators=0, flags=avx2) == "float32"
    assert hardware.auto_precision(accelerators=0, flags=frozenset()) == "float32"  # unknown
    assert hardware.auto_precision(accelerators=1, flags=avx2,
                                   gpu_capabilities=[(9, 0)]) == "mixed_bfloat16"
    assert hardware.auto_precision(accelerators=1, flags=bf16,
                                   gpu_capabilities=[(7, 5)]) == "float32"
