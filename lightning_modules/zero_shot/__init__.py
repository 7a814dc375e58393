"""Methods that learn on each test image: no training set and no checkpoint, a fresh net trained on examples cut
from the test input itself, behind the restorer interface (``lightning_modules.restorer``), so the benchmark
measures them like any other row.

    zssr.py   ZSSR (Shocher, Cohen & Irani, CVPR 2018): LR sons of the LR image, a small residual net per image
    mzsr.py   MZSR's test time (Soh et al., CVPR 2020): a trained (meta-learned) net takes a few gradient steps on
              the image's own son first; ``restorelab benchmark/predict --steps`` wrap any checkpoint in it

Each records what the image cost it (``last_budget``: updates and seconds) after every ``run``.
"""
