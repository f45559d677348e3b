"""Figure of a period analysis: periodogram with the chosen peaks, and an STL panel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from periodicity.report import PeriodReport
from periodicity.spectrum import periodogram
from periodicity.strength import is_flat, recent_rows, stl_components

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def periods_figure(
    x: np.ndarray, report: PeriodReport, channel: int = -1, title: str = ""
) -> Figure:
    """A figure of the periodogram and the STL of one channel (saving is the caller's).

    Top: the channel-mean periodogram against period (log axis), the overall candidates
    marked; constant channels are left out of the mean, as of the table's power. Below:
    STL of ``channel`` at the top overall period, over the stretch its strength was
    measured on (the last 4 cycles drawn, at least 96 steps, so the shape is
    visible; the panel's title says how many).
    A bare ``Figure``, no pyplot: nothing global (backend, open figures) changes.

    Args:
        x: [T, C] the values ``report`` was made from.
        report: the analysis of ``x``.
        channel: channel drawn in the STL panel (default: the last, the target).
        title: figure title.
    """
    from matplotlib.figure import Figure

    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    n = x.shape[0]
    # As the table's power: a constant channel has no spectrum (all zeros), and counting
    # it would draw every peak lower than the power the table lists for it.
    live = ~is_flat(x)
    power = periodogram(x[:, live]).mean(axis=1) if live.any() else np.zeros(n // 2 + 1)
    k = np.arange(2, power.shape[0])
    fig = Figure(figsize=(10, 10))
    axes = fig.subplots(5, 1, gridspec_kw={"height_ratios": [2.2, 1, 1, 1, 1]})
    ax = axes[0]
    ax.semilogx(n / k, power[k], lw=0.7, color="0.3")
    for rank, c in enumerate(report.overall):
        ax.axvline(
            c.period, color=f"C{rank}", ls="--", lw=1, label=f"{c.period} (F_S {c.strength:.2f})"
        )
    ax.set_xlabel("period (steps)")
    ax.set_ylabel("share of variance")
    ax.set_title(
        title or "periodogram (channel mean) and candidate periods (F_S: seasonal strength)"
    )
    if report.overall:
        ax.legend(fontsize=8, loc="upper left")

    labels = ("observed", "trend", "seasonal", "remainder")
    if report.overall:
        period = report.overall[0].period
        seg = x[recent_rows(n, period), channel]
        if seg.shape[0] >= 2 * period:
            trend, seasonal, resid = stl_components(seg, period)
            show = slice(max(0, seg.shape[0] - 4 * max(period, 24)), seg.shape[0])
            steps = show.stop - show.start
            for ax, series, label in zip(
                axes[1:], (seg, trend, seasonal, resid), labels, strict=True
            ):
                ax.plot(series[show], lw=0.7)
                ax.set_ylabel(label, fontsize=8)
            names = list(report.channels) or list(range(x.shape[1]))
            name = names[channel] if -len(names) <= channel < len(names) else channel
            axes[1].set_title(
                f"STL of channel {name} at period {period} "
                f"(last {steps} steps, {steps / period:.3g} cycles)",
                fontsize=9,
            )
    else:
        axes[1].set_title("no period found: no STL panel", fontsize=9)
    return fig
