"""Methods that learn on each test image: no training set and no checkpoint, a fresh net trained on examples cut
from the test input itself, behind the restorer interface (``lightning_modules.restorer``), so the benchmark
measures them like any other row.

    zssr.py   ZSSR (Shocher, Cohen & Irani, CVPR 2018): LR sons of the LR image, a small residual net per image

Each records what the image cost it (``last_budget``: updates and seconds) after every ``run``.
"""
