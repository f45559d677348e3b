"""Can a learned router give a member no weight? Two synthetic members of a noisy
24-step cycle: `a` close to the targets everywhere, `b` either much noisier or a constant
1e6 (a finite, so unrefused, diverged fit). Each router is fitted on the first half of
the windows and scored on the second; the weight on `a` and the combined MSE there.
Run it at two commits to compare (`PYTHONPATH=<a checkout of the older commit>`).

    python benchmarks/router_floor.py
"""

from __future__ import annotations

import logging

import numpy as np

from router import make_combiner
from router.features import window_features

logging.disable(logging.CRITICAL)
T, C, L, H = 1000, 2, 48, 12


def problem(case: str) -> tuple[np.ndarray, ...]:
    """Windows' inputs [W, L, C], targets [W, H, C] and members [2, W, H, C]."""
    rng = np.random.default_rng(0)
    s = np.sin(np.arange(T)[:, None] * 2 * np.pi / 24) + 0.3 * rng.normal(size=(T, C))
    w = T - L - H + 1
    x = np.stack([s[i : i + L] for i in range(w)])
    y = np.stack([s[i + L : i + L + H] for i in range(w)])
    a = y + 0.1 * rng.normal(size=y.shape)
    b = y + rng.normal(size=y.shape) if case == "noisy b" else np.full_like(y, 1e6)
    return x, y, np.stack([a, b])


def main() -> None:
    print("| case | router | weight on a (second half) | combined MSE | a alone |")
    print("|---|---|---|---|---|")
    for case in ("noisy b", "b = 1e6"):
        x, y, members = problem(case)
        feats, names = window_features(x, members, [24], ["a", "b"])
        half = len(y) // 2
        alone = float(np.mean((members[0, half:] - y[half:]) ** 2))
        for r in ("learned_lgbm", "learned_torch", "stacked", "learned"):
            c = make_combiner(r, seed=0, feature_names=names, member_names=["a", "b"])
            c.fit(members[:, :half], y[:half], feats[:half])
            w = c.weights(members[:, half:], feats[half:])[..., 0].mean()
            mse = float(np.mean((c.forecast(members[:, half:], feats[half:]) - y[half:]) ** 2))
            print(f"| {case} | {r} | {w:.3f} | {mse:.4g} | {alone:.4f} |")


if __name__ == "__main__":
    main()
