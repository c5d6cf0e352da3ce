"""Compares what tests/torch_shard_test.py saved in two runs (usage: compare_npz.py A.npz B.npz
TOLERANCE WHAT): the same arrays, text arrays equal, numbers within TOLERANCE relative to each
array's largest magnitude (0: bitwise). Prints the largest difference; exits non-zero on any
difference beyond it."""
import sys

import numpy as np

a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
tol, what = float(sys.argv[3]), sys.argv[4]
assert sorted(a.files) == sorted(b.files), (a.files, b.files)
worst = 0.0
for k in a.files:
    assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
    if a[k].dtype.kind == "U":
        assert (a[k] == b[k]).all(), (k, a[k], b[k])
        continue
    d = float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) if a[k].size else 0.0
    assert d <= tol, (k, d)
    worst = max(worst, d)
print("%s: %d arrays, max relative difference %.1e (tolerance %g)" % (what, len(a.files), worst, tol))
