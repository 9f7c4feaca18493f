"""Shipped packages (``pretrained/<dataset>/``) are written only when asked to.

A package folder is one holding the ``manifest.json`` that ``bin/package_generator.py``
writes; everything at or below it (the generator, critic, classifiers, encoder, the
MagNet folder) was made by a documented command and is tracked. The binaries refuse to
write there unless given ``--overwrite``, so that a run with tiny settings cannot
replace a shipped file while the manifest goes on describing the old one.

This module imports nothing else of the package (no TensorFlow), so that the binaries
can check their flags before loading anything.
"""

from __future__ import annotations

import os
from typing import Optional

MANIFEST = "manifest.json"


def package_containing(path: str) -> Optional[str]:
    """The package folder that ``path`` (a file or folder, existing or not) is in, or None."""
    folder = os.path.abspath(path)
    while True:
        if os.path.isfile(os.path.join(folder, MANIFEST)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def refusal(path: str, flag: str) -> Optional[str]:
    """A one-line refusal if writing ``path`` would change a shipped package, else None."""
    package = package_containing(path)
    if package is None:
        return None
    return (f"--{flag} {path} is inside the shipped package {os.path.relpath(package)} "
            "(it holds manifest.json); pass --overwrite to write there anyway, or choose "
            "a folder under runs/")
