"""What an evaluation run is and what it leaves behind: its settings (``runs``: the shared
run spec and record fields; ``specs``: white-box, black-box and adaptive runs), its
records and tables (``report``), the models and data splits it loads and the caches it
reuses (``loading``), and the headline figures the README shows (``headline``).

``runs``, ``specs`` and ``report`` import without TensorFlow: the binaries validate their
flags with them first.
"""
