"""Installs defense_gan_tf: Defense-GAN in TensorFlow 2 / Keras 3."""

import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "defense_gan_tf", "__init__.py")) as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="defense_gan_tf",
    version=version,
    description="Defense-GAN (Samangouei, Kabkab, Chellappa, ICLR 2018) in TensorFlow 2 / Keras 3",
    packages=find_packages(include=["defense_gan_tf", "defense_gan_tf.*"]),
    package_data={"defense_gan_tf": ["measured_costs.json"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9 builds and prepares datasets with it but does not
        # declare it (ModuleNotFoundError on a fresh install).
        "importlib_resources",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "absl-py>=2.0",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"]},
)
