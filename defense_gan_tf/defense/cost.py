"""What a projection costs, counted from the work it did (for benchmarks and reports)."""

from __future__ import annotations

import keras


def generator_macs(generator: keras.Model) -> int:
    """Forward multiply-accumulates per sample of the Dense and (transposed) conv layers."""
    total = 0
    for layer in generator.layers:
        if isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0] * layer.kernel.shape[1])
        elif isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv2D)):
            kh, kw = layer.kernel_size
            in_shape, out_shape = layer.input.shape, layer.output.shape
            if isinstance(layer, keras.layers.Conv2DTranspose):  # each input pixel scatters
                total += int(in_shape[1] * in_shape[2] * in_shape[3] * out_shape[3] * kh * kw)
            else:
                total += int(out_shape[1] * out_shape[2] * out_shape[3] * in_shape[3] * kh * kw)
    return total


def projection_gflops(generator: keras.Model, row_steps: int, final_rows: int = 0) -> float:
    """GFLOPs of a projection that ran ``row_steps`` descent passes and ``final_rows``
    plain forward passes: a descent pass is a forward and a backward to z, 4 FLOPs per
    MAC; a forward pass 2."""
    macs = generator_macs(generator)
    return (4 * macs * row_steps + 2 * macs * final_rows) / 1e9
