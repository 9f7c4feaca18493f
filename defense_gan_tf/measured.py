"""Machine costs measured on the reference machine, read from ``measured_costs.json``
beside this module: each figure there says what it means and where it was measured, so
a figure is replaced by measuring again, not by editing code."""

from __future__ import annotations

import functools
import json
import os

COSTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured_costs.json")


@functools.lru_cache(maxsize=None)
def _costs() -> dict:
    with open(COSTS_FILE) as f:
        return json.load(f)


def measured_cost(name: str):
    """The value of the measured figure ``name``.

    Raises:
      KeyError: naming the figure and the file when it is not there.
    """
    try:
        return _costs()[name]["value"]
    except KeyError:
        raise KeyError(f"no measured figure {name!r} in {COSTS_FILE}") from None
