"""Strict JSON files: every result, manifest and curve the package writes parses anywhere.

Python's ``json`` module writes ``NaN`` and ``Infinity`` for non-finite floats, which
JSON (RFC 8259) does not have: jq, JavaScript's ``JSON.parse`` and most other readers
reject such a file. A gradient that overflows float32 in the unrolled projection is
enough to produce one. :func:`strict` turns non-finite floats into ``null`` (where it
matters, a companion field counts the values that were not finite, see
``stats.gradient_norm_summary``), numpy scalars and arrays into numbers and lists,
and tuples into lists; the writers refuse anything else that JSON cannot hold.

This module imports only ``atomic`` of the package, so every layer may use it.
"""

from __future__ import annotations

import json
import math


import numpy as np

from defense_gan_tf.atomic import write_text


def strict(obj):
    """``obj`` with numpy values as Python ones, tuples as lists and non-finite floats
    as None, ready for ``json.dumps(..., allow_nan=False)``.

    Raises:
      TypeError: a value JSON cannot hold (the message names its type and key).
    """
    return _strict(obj, "")


def _strict(obj, where: str):
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist(), where)
    if isinstance(obj, dict):
        return {str(k): _strict(v, f"{where}.{k}" if where else str(k))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}"
                    + (f" at {where}" if where else ""))


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`strict` (``obj``): never writes NaN or Infinity."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def write_json(path: str, payload, *, indent: int = 2, sort_keys: bool = True) -> str:
    """Writes ``payload`` as strict JSON, atomically (a temporary file, then a rename),
    creating the folder; returns ``path``."""
    return write_text(path, dumps(payload, indent=indent, sort_keys=sort_keys) + "\n")


def append_jsonl(path: str, entry) -> None:
    """Appends ``entry`` as one strict JSON line to ``path``."""
    with open(path, "a") as f:
        f.write(dumps(entry, sort_keys=True) + "\n")


def write_jsonl(path: str, entries) -> str:
    """Writes ``entries`` as strict JSON lines, atomically; returns ``path``."""
    return write_text(path, "".join(dumps(entry, sort_keys=True) + "\n"
                                    for entry in entries))
