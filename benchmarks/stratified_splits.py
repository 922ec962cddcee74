"""Per-split label counts, stratified vs random: Yeast's 14 labels and a table with 12 positives in 2,000 rows.

Prints JSON: the largest gap between a Yeast label's positives in a split and its expected share, and the
(train, val, test) positives of the rare class over five seeds. Run: PYTHONPATH=src python benchmarks/stratified_splits.py
"""
import json
import numpy as np
import pandas as pd
from taskloom.data.datasets.yeast import load_yeast
from taskloom.data.datasets.table import load_table
from taskloom.task import Task

out = {}
for stratify in (True, False):
    s = load_yeast(stratify=stratify, seed=0)
    rows = len(s.train) + len(s.val) + len(s.test)
    worst = 0.0
    for t in s.tasks:
        total = sum(float(getattr(s, n).targets[t.name].sum()) for n in ("train", "val", "test"))
        for n in ("train", "val", "test"):
            d = getattr(s, n)
            worst = max(worst, abs(float(d.targets[t.name].sum()) - total * len(d) / rows))
    out[f"yeast_max_positive_count_deviation_stratify_{stratify}"] = round(worst, 2)
n = 2000
frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=n), "rare": 0})
for seed in range(5):
    frame["rare"] = 0
    frame.loc[np.random.default_rng(seed + 1).choice(n, 12, replace=False), "rare"] = 1
    for stratify in (True, False):
        s = load_table([Task("rare", "binary")], frame=frame, seed=seed, stratify=stratify)
        out.setdefault(f"rare_12_of_2000_train_val_test_stratify_{stratify}", []).append(
            [int(getattr(s, n).targets["rare"].sum()) for n in ("train", "val", "test")])
print(json.dumps(out))
