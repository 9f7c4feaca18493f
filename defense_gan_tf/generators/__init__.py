"""Trained generators beyond their training: the probe that measures a generator's
quality and its defense figures during and after training (``training_curve``), and the
shipped package with its manifest and measured figures (``package``).
"""
