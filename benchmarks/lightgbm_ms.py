"""LightGBM under MS: predict time with every channel through the boosters (before)
and the target alone (after), ETTh1 L=96 H=96, medians of 3.

    python benchmarks/lightgbm_ms.py
"""

from __future__ import annotations

import time

import numpy as np

from classical.lightgbm_member import LightGBMForecaster
from ensemble.data import load_dataset, make_splits

sp = make_splits(load_dataset("ETTh1", features="MS"), 96, 96)
m = LightGBMForecaster(96, 96, periods=[24, 168], num_boost_round=200, progress=False).fit(
    sp.train, sp.val
)
w = sp.test.windows()
res = {}
for label, ch in (("every channel (before)", None), ("target only (after)", [6])):
    m.channels = ch
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        fc = m.predict(w)
        ts.append(time.perf_counter() - t0)
    res[label] = (np.median(ts), fc[..., 6].copy())
    print(f"{label}: {np.median(ts):.2f} s")
a, b = (v[1] for v in res.values())
print("target forecasts identical:", np.array_equal(a, b))
