"""Size and power of the Diebold-Mariano test on overlapping forecast windows.

Each forecast's error at time t is a persistent AR(1) process; a window's loss is the
mean squared error over its H steps, and consecutive windows overlap in H - 1 steps, as
in every run's test set. Under the null both forecasts have the same error variance;
under the alternative the first has ``scale`` times the error standard deviation. The
table gives how often each variance estimate rejects at the 5 % level: the
equal-weighted cosine estimate ``ensemble.metrics.diebold_mariano`` uses (with its
``nu = W // (4 H)`` and looser choices), and Newey-West with 2H lags and the iid
variance for comparison.

    python benchmarks/dm_calibration.py          # the main table
    python benchmarks/dm_calibration.py --few    # and W < 8 H (the floor on nu)
    python benchmarks/dm_calibration.py --persistent --reps 1000   # errors far longer
                                                 # correlated than H: where it is liberal
    python benchmarks/dm_calibration.py --seasonal --reps 1000     # a seasonal series, as
                                                 # ETT: where it is liberal too
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import fft, stats
from scipy.signal import lfilter

from ensemble.metrics import diebold_mariano


def window_losses(rng, reps: int, windows: int, horizon: int, phi: float, scale: float):
    """[reps, windows] per-window MSE of AR(1) errors with stationary variance scale**2."""
    burn = 500
    z = rng.normal(size=(reps, windows + horizon - 1 + burn)) * np.sqrt(1 - phi**2) * scale
    e = lfilter([1.0], [1.0, -phi], z, axis=1)[:, burn:]
    c = np.concatenate([np.zeros((reps, 1)), np.cumsum(e * e, axis=1)], axis=1)
    return (c[:, horizon:] - c[:, :-horizon]) / horizon


def p_cosine(d: np.ndarray, nu: int) -> np.ndarray:
    """Equal-weighted cosine test with ``nu`` degrees of freedom, per row of d [R, W]."""
    lam = fft.dct(d - d.mean(1, keepdims=True), type=2, norm="ortho", axis=1)[:, 1 : nu + 1]
    t = d.mean(1) / np.sqrt(np.mean(lam * lam, axis=1) / d.shape[1])
    return 2 * stats.t.sf(np.abs(t), nu)


def p_newey_west(d: np.ndarray, lag: int) -> np.ndarray:
    """Newey-West (Bartlett) variance over ``lag`` lags, normal p-values, per row."""
    n = d.shape[1]
    dc = d - d.mean(1, keepdims=True)
    f = np.fft.rfft(dc, 2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), 2 * n, axis=1)[:, : lag + 1] / n
    w = 1 - np.arange(1, lag + 1) / (lag + 1)
    lrv = acov[:, 0] + 2 * (acov[:, 1:] * w).sum(1)
    return 2 * stats.norm.sf(np.abs(d.mean(1) / np.sqrt(lrv / n)))


def p_used(null: np.ndarray, alt: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The project's test (``diebold_mariano``), per row of the null and the alternative."""
    return tuple(
        np.array([diebold_mariano(r, np.zeros_like(r), horizon)["p"] for r in d])
        for d in (null, alt)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--few", action="store_true", help="also the table for W < 8 H")
    ap.add_argument(
        "--persistent", action="store_true", help="only the size where errors outlast H"
    )
    ap.add_argument(
        "--seasonal", action="store_true", help="only the size on a persistent seasonal series"
    )
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.persistent:
        persistent(rng, args.reps)
        return
    if args.seasonal:
        seasonal(rng, args.reps)
        return
    print("| W | H | phi | test | size (null) | power (scale 0.95) |")
    print("|---|---|---|---|---|---|")
    for windows, horizon, phi in (
        (2000, 24, 0.9),
        (2785, 96, 0.9),
        (2785, 96, 0.98),
        (11425, 96, 0.95),
    ):
        a, b = (window_losses(rng, args.reps, windows, horizon, phi, 1.0) for _ in range(2))
        c = window_losses(rng, args.reps, windows, horizon, phi, 0.95)
        null, alt = a - b, c - a
        nu = windows // (4 * horizon)
        rows = {
            f"cosine, nu = W/(4H) = {nu} (used)": p_used(null, alt, horizon),
            f"cosine, nu = W/(2H) = {2 * nu}": (p_cosine(null, 2 * nu), p_cosine(alt, 2 * nu)),
            f"cosine, nu = W/H = {4 * nu}": (p_cosine(null, 4 * nu), p_cosine(alt, 4 * nu)),
            "Newey-West, 2H lags": (
                p_newey_west(null, 2 * horizon),
                p_newey_west(alt, 2 * horizon),
            ),
            "iid variance": (p_newey_west(null, 0), p_newey_west(alt, 0)),
        }
        for name, (p_null, p_alt) in rows.items():
            size, power = np.mean(p_null < 0.05), np.mean(p_alt < 0.05)
            print(f"| {windows} | {horizon} | {phi} | {name} | {size:.3f} | {power:.3f} |")
    if args.few:
        few_windows(rng, max(args.reps, 3000))


def persistent(rng, reps: int) -> None:
    """Size of the test used where the errors' correlation outlasts the horizon many
    times (half-lives of 69-350 steps): nu = W // (4H) assumes it fades within a few H."""
    print("| W | H | phi | half-life (steps) | size (null), nu = W // (4H) |")
    print("|---|---|---|---|---|")
    for windows, horizon, phi in ((2857, 24, 0.99), (2857, 24, 0.995), (11425, 96, 0.998)):
        a, b = (window_losses(rng, reps, windows, horizon, phi, 1.0) for _ in range(2))
        p = np.array([diebold_mariano(x, y, horizon)["p"] for x, y in zip(a, b, strict=True)])
        half = np.log(0.5) / np.log(phi)
        print(f"| {windows} | {horizon} | {phi} | {half:.0f} | {np.mean(p < 0.05):.3f} |")


def seasonal_series(rng, reps: int, n: int, period: int = 24) -> np.ndarray:
    """[reps, n] unit-variance AR(1) 0.9 plus a seasonal AR 0.97 at lag ``period``: a
    daily cycle whose shape drifts slowly, as ETT's loads do."""
    burn = 3000
    ar = lfilter([1.0], [1.0, -0.9], rng.normal(size=(reps, n + burn)) * np.sqrt(1 - 0.81), axis=1)
    den = np.zeros(period + 1)
    den[0], den[period] = 1.0, -0.97
    noise = rng.normal(size=(reps, n + burn)) * np.sqrt(1 - 0.97**2)
    return (ar + lfilter([1.0], den, noise, axis=1))[:, burn:]


def _snaive_naive_loss(xs, xn, origins, target, back) -> np.ndarray:
    """[reps, W] window MSE of the seasonal naive of ``xs`` plus the naive of ``xn``."""
    err = (xs[:, target] - xs[:, back]) + (xn[:, target] - xn[:, origins][:, :, None])
    return np.mean(err**2, axis=2)


def seasonal(rng, reps: int, period: int = 24, lookback: int = 96) -> None:
    """Size where the loss differences stay correlated for many horizons: two equally good
    forecasters of y = x1 + x2 (x1, x2 independent seasonal series), A the seasonal naive
    of x1 plus the naive of x2 and B the other way round, so the null holds exactly."""
    print("| W | H | process | size (null), nu = W // (4H) |")
    print("|---|---|---|---|")
    for horizon in (24, 96):
        windows = 2881 - horizon  # ETTh1's test windows
        origins = lookback - 1 + np.arange(windows)
        steps = np.arange(1, horizon + 1)
        target = origins[:, None] + steps
        back = target - period * np.ceil(steps / period).astype(int)  # the same phase

        p = []
        for lo in range(0, reps, 100):  # blocks: [100, W, H] errors at a time
            r = min(100, reps - lo)
            x1, x2 = (seasonal_series(rng, r, lookback + windows + horizon) for _ in range(2))
            a = _snaive_naive_loss(x1, x2, origins, target, back)
            b = _snaive_naive_loss(x2, x1, origins, target, back)
            p += [diebold_mariano(u, v, horizon)["p"] for u, v in zip(a, b, strict=True)]
        size = np.mean(np.array(p) < 0.05)
        print(f"| {windows} | {horizon} | AR(1) 0.9 + seasonal AR 0.97 at {period} | {size:.3f} |")


def few_windows(rng, reps: int) -> None:
    """Size with fewer than 8 H windows (long horizons, short series, the router's folds),
    where ``W // (4 H)`` is 0 or 1 and the floor on nu decides."""
    print("\n| W / H | H | phi | W // (4H) | size, nu = 1 | nu = 2 | nu = 3 | used |")
    print("|---|---|---|---|---|---|---|---|")
    for horizon in (96, 336):
        for ratio in (1.5, 2, 3, 4, 6, 7.9):
            for phi in (0.9, 0.97):
                windows = int(ratio * horizon)
                a, b = (window_losses(rng, reps, windows, horizon, phi, 1.0) for _ in range(2))
                size = {nu: np.mean(p_cosine(a - b, nu) < 0.05) for nu in (1, 2, 3)}
                used = np.mean(p_used(a - b, a - b, horizon)[0] < 0.05)
                print(
                    f"| {ratio} | {horizon} | {phi} | {windows // (4 * horizon)} | "
                    f"{size[1]:.3f} | {size[2]:.3f} | {size[3]:.3f} | {used:.3f} |"
                )


if __name__ == "__main__":
    main()
