"""The combined forecast's squared error as a quadratic form in the weights.

For one window and channel with members' forecasts ``f_m`` (H steps) and target ``y``,
the weighted forecast ``sum_m w_m f_m`` has mean squared error

    w' G w - 2 w' b + yy,   G[m, n] = mean_h f_m f_n,  b[m] = mean_h f_m y,  yy = mean_h y y.

Precomputing ``G, b, yy`` per window once makes every router's loss, gradient and
validation score O(M^2) per window instead of O(M H), and lets the learned routers
minimise the combined forecast's MSE exactly rather than a proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ensemble.hybrid import windows_per_block


@dataclass(frozen=True)
class WindowTerms:
    """Per-window quadratic-form terms (means over the H steps).

    Computed once per validation set (``window_gram``): a fold or inner split of the
    windows is a slice of them (``terms[fit_w]``), not a recomputation from the
    [M, W, H, C] forecasts. Unpacks as ``gram, b, yy = terms``.

    Attributes:
        gram: [W, C, M, M]; b: [W, C, M]; yy: [W, C].
    """

    gram: np.ndarray
    b: np.ndarray
    yy: np.ndarray

    def __getitem__(self, windows) -> WindowTerms:
        return WindowTerms(self.gram[windows], self.b[windows], self.yy[windows])

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.gram, self.b, self.yy))


def window_gram(
    forecasts: np.ndarray, targets: np.ndarray, block: int | None = None
) -> WindowTerms:
    """Per-window quadratic-form terms.

    Computed block by block of windows, each block cast to float64: the terms of one
    window are means over its own H steps, so blocks change no number, and a float32
    stack needs no float64 copy (nor ``f * y`` an [M, W, H, C] temporary: 1.3 GB on
    ETTm2 at H=720).

    Args:
        forecasts: [M, W, H, C] members' forecasts (float32 or float64).
        targets: [W, H, C].
        block: windows per block (default: about 4M values of the stack per block).

    Returns:
        WindowTerms: G [W, C, M, M], b [W, C, M], yy [W, C], float64.
    """
    m, w, _, c = forecasts.shape
    block = block or windows_per_block(forecasts.shape)
    gram = np.empty((w, c, m, m))
    b_parts, yy_parts = [], []  # [M, block, C] and [block, C]: small, concatenated
    for lo in range(0, max(w, 1), block):
        part = slice(lo, lo + block)
        f = np.asarray(forecasts[:, part], dtype=np.float64)  # laid out as the stack
        y = np.asarray(targets[part], dtype=np.float64)
        for i in range(m):  # pairwise loop: memory stays at one [block, H, C] product
            for j in range(i, m):
                gram[part, :, i, j] = gram[part, :, j, i] = np.mean(f[i] * f[j], axis=1)
        b_parts.append(np.mean(f * y[None], axis=2))
        yy_parts.append(np.mean(y * y, axis=1))
    b = np.moveaxis(np.concatenate(b_parts, axis=1), 0, -1)
    yy = np.concatenate(yy_parts, axis=0)
    refuse_non_finite_terms(np.moveaxis(np.diagonal(gram, axis1=2, axis2=3), -1, 0), yy)
    return WindowTerms(gram, b, yy)


def refuse_non_finite_terms(member_values: np.ndarray, target_values: np.ndarray) -> None:
    """Refuse NaN or inf before a combiner is fitted: they gave NaN weights, a constant
    pick or a singular system. The run and ``HybridForecaster`` check the forecasts
    first; a direct caller of a combiner is checked here, on summaries (cheap).

    Args:
        member_values: [M, ...] a per-member summary of the validation forecasts (their
            mean square, or mean squared error).
        target_values: a summary of the validation targets (any shape).

    Raises:
        ValueError: naming the members, or the targets.
    """
    if not np.isfinite(target_values).all():
        raise ValueError(
            "the validation targets hold NaN or inf: no combiner can be fitted to them"
        )
    bad = [i for i, v in enumerate(member_values) if not np.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"the validation forecasts of member(s) {bad} (0-based) hold NaN or inf: no "
            "combiner can weigh them; fix those forecasts or leave the members out"
        )


def combined_mse(
    weights: np.ndarray, gram: np.ndarray, b: np.ndarray, yy: np.ndarray
) -> np.ndarray:
    """MSE of the weighted forecast per window and channel.

    Args:
        weights: [..., M] (broadcast against ``b``).
        gram: [W, C, M, M]; b: [W, C, M]; yy: [W, C].

    Returns:
        [W, C] mean squared errors.
    """
    wg = np.einsum("...m,...mn->...n", weights, gram)
    return np.sum(wg * weights, axis=-1) - 2.0 * np.sum(weights * b, axis=-1) + yy


def member_mse(gram: np.ndarray, b: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Each member's own MSE per window and channel: [W, C, M]."""
    return np.diagonal(gram, axis1=-2, axis2=-1) - 2.0 * b + yy[..., None]


# (window, channel) rows a feature-conditioned router trains or early-stops on, at most:
# above it, fits grow with the rows and a seeded uniform draw of them learns about as well.
# Every benchmark is under it (ETTm1's validation: 80,000 rows; weather H=96: 108,675);
# electricity's 321 channels give 814,000, traffic's 862 about 1.4 million.
MAX_ROUTER_ROWS = 1 << 17


def window_rows(
    windows: np.ndarray, n_channels: int, seed: int = 0, cap: int | None = None
) -> np.ndarray:
    """The rows of ``windows`` in the flattened [W * C] arrays (window-major), in order;
    a seeded uniform draw of ``cap`` of them, still in order, when there are more.

    Args:
        windows: window indices (increasing).
        n_channels: C.
        seed: seeds the draw (the same rows for the same windows and seed).
        cap: most rows kept (default ``MAX_ROUTER_ROWS``).

    Returns:
        [N] row indices, N = min(len(windows) * C, cap).
    """
    cap = MAX_ROUTER_ROWS if cap is None else cap
    rows = (np.asarray(windows)[:, None] * n_channels + np.arange(n_channels)[None]).reshape(-1)
    if rows.size <= cap:
        return rows
    keep = np.random.default_rng(seed).choice(rows.size, size=cap, replace=False)
    return rows[np.sort(keep)]


def flat_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a [W, C, ...] array flattened to [W * C, ...]: [N, ...]."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])[rows]


def inner_split(n_windows: int, gap: int, frac: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered inner split of validation windows, with a gap so targets never overlap.

    The gap is kept whole: windows t and t + d share targets for any d < H, so a shorter
    gap would score the held-out part on targets the fitted part saw. When the last
    ``1 - frac`` of the windows cannot hold it twice over, the fitting part shrinks to
    ``frac`` of the windows outside the gap; with no room for both parts, nothing is
    held out.

    Args:
        n_windows: W.
        gap: windows dropped between the parts (H: window t's targets reach t + H - 1).
        frac: share of the windows in the first (fitting) part.

    Returns:
        (fit window indices, held-out window indices); held-out empty, and fit all
        windows, when W <= gap + 1.
    """
    n_fit = int(n_windows * frac)
    if n_windows - n_fit < 2 * gap:  # a short validation set or a long horizon
        n_fit = int((n_windows - gap) * frac)
    if n_fit < 1 or n_fit + gap >= n_windows:
        return np.arange(n_windows), np.arange(0)
    return np.arange(n_fit), np.arange(n_fit + gap, n_windows)


def choose_shrinkage(
    weights: np.ndarray, gram: np.ndarray, b: np.ndarray, yy: np.ndarray, grid: int = 11
) -> tuple[float, float]:
    """Blend ``(1 - lam) * weights + lam * uniform`` with the ``lam`` that scores best.

    Args:
        weights: [N, M] a router's weights on held-out samples.
        gram, b, yy: the held-out samples' quadratic-form terms ([N, M, M], [N, M], [N]).
        grid: number of ``lam`` values in [0, 1].

    Returns:
        (lam, the held-out MSE at that lam).
    """
    m = weights.shape[-1]
    best = (1.0, np.inf)
    for lam in np.linspace(0.0, 1.0, grid)[::-1]:  # a tie keeps the larger lam: the simpler mix
        score = float(combined_mse((1 - lam) * weights + lam / m, gram, b, yy).mean())
        if score < best[1] - 1e-12:
            best = (float(lam), score)
    return best
