"""The evaluations end to end, each writing its record through ``records.runs``: the white
box (``whitebox``: one attack on one defense; ``whitebox_run``: the run with its
classifier, caches and outputs), the black-box substitute attack (``blackbox_run``), the
adaptive attacks with their worst case per budget (``adaptive``), and the paper's tables
cell by cell (``reproduce``).
"""
