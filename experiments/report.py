"""Human-readable outputs of a run: results.md and the plot of a few test windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ensemble import metrics
from ensemble.data import Splits

_SPECIAL = ("ensemble", "mean", "median", "oracle")


def still_improving(curve: dict[str, Any]) -> bool:
    """Whether a member kept the last of two or more epochs (results.json's
    ``training[spec]``; files written before the flag get the same rule)."""
    flag = curve.get("still_improving")
    if not isinstance(flag, bool):  # missing, or edited into "false" (a true string)
        flag = curve["epochs"] >= 2 and curve["best_epoch"] == curve["epochs"]
    return flag


# members that are naive forecasts themselves: never "below the baseline"
BASELINE_MEMBERS = ("naive", "snaive", "window_mean")


def below_baseline(res: dict[str, Any]) -> list[str]:
    """The members whose validation MSE is above results.json's ``baseline`` (the best
    last-value or seasonal-naive forecast's; none before runs recorded it)."""
    base = res.get("baseline")
    if not isinstance(base, dict) or not isinstance(base.get("val_mse"), float):
        return []
    return [
        m
        for m in res.get("members", [])
        if m.split("@", 1)[0] not in BASELINE_MEMBERS
        and isinstance(res.get("val", {}).get(m), dict)
        and "mse" in res["val"][m]
        and not _at_most(res["val"][m]["mse"], base["val_mse"])
    ]


def _at_most(mse: Any, floor: float) -> bool:
    """``mse <= floor``; a diverged member's MSE (inf, or null in results.json) is not."""
    return isinstance(mse, int | float) and mse <= floor


def best_member_on_val(res: dict[str, Any]) -> str | None:
    """The member a choice by validation takes: the lowest val MSE among the members
    (never the ensemble, the mean, the median or the oracle; a member without a finite val
    MSE, diverged, is none). On a tie up to rounding the first listed wins. None: no
    member has a val MSE.

    It is what results.md and the console mark: a mark chosen on test would carry a
    choice by test into a table copied from them, which the protocol forbids."""
    val = res.get("val") if isinstance(res.get("val"), dict) else {}
    scores = {}
    for m in res.get("members") or []:
        mse = (val.get(m) or {}).get("mse") if isinstance(val.get(m), dict) else None
        if isinstance(mse, int | float) and not isinstance(mse, bool) and np.isfinite(mse):
            scores[m] = float(mse)
    if not scores:
        return None
    lowest = min(scores.values())
    return next(m for m, v in scores.items() if v <= lowest + 1e-9 * abs(lowest))


BEST_ON_VAL = "best member on val"  # the mark of `best_member_on_val`'s member


def results_markdown(res: dict[str, Any]) -> str:
    """A results.md table: val and test MSE/MAE per member and combination, plus timings."""
    best = best_member_on_val(res)  # chosen on val: a mark by test would pick on test
    lines = [
        f"# {res['dataset']}  L={res['seq_len']}  H={res['pred_len']}  seed={res['seed']}",
        "",
        f"Members: {', '.join(res['members'])}; router: `{res['router']}`; periods ({'given' if res.get('periods_given') else 'train rows'}): {res['periods']}.",
        *_member_periods_line(res),
        f"Windows: train {res['windows']['train']}, val {res['windows']['val']}, test {res['windows']['test']} "
        "(every window, scaled space, metric over all windows at once).",
        *(
            []
            if res.get("router") in ("mean", "median")
            else [
                "The router is fitted on the val windows, so `ensemble`'s val MSE is in-sample.",
                "The members' val MSE is optimistic too, less so: it chose their best epoch or",
                "boosting round.",
            ]
        ),
        *(
            [
                f"**({BEST_ON_VAL})**: the member with the lowest val MSE, the one a choice by",
                "validation takes; no forecast is marked by its test MSE.",
            ]
            if best is not None
            else []
        ),
        "",
        "| forecast | val MSE | val MAE | test MSE | test MAE | fit s | predict s |",
        "|---|---|---|---|---|---|---|",
    ]
    names = [n for n in res["test"] if n not in _SPECIAL] + [
        n for n in _SPECIAL if n in res["test"]
    ]
    for n in names:
        v, t = res["val"].get(n, {}), res["test"][n]
        tim = res["timings_s"].get(n, {})
        mark = f" **({BEST_ON_VAL})**" if n == best else ""
        part = _timing_note(tim, (res.get("member_fits") or {}).get(n))
        lines.append(
            f"| {n}{mark} | {v.get('mse', float('nan')):.4f} | {v.get('mae', float('nan')):.4f} | "
            f"{t['mse']:.4f} | {t['mae']:.4f} | {tim.get('fit', '')}{part} | "
            f"{tim.get('predict', '')}{part} |"
        )
    if res.get("baseline"):
        below = below_baseline(res)
        lines += [
            "",
            f"Naive baseline: `{res['baseline']['forecast']}`, the best forecast that only "
            f"repeats the input, has val MSE {res['baseline']['val_mse']:.4f}"
            + (
                f". **Above it on validation: {', '.join(below)}**: not yet a model of the "
                "series (too few epochs, or settings that do not fit it); comparisons "
                "with it say nothing yet."
                if below
                else "; every member that is no naive forecast itself is below it."
            ),
        ]
    sig = res.get("significance", {}).get("test")
    if sig:
        pairs = [("ensemble", b, r) for b, r in sig["ensemble_vs"].items()] + [
            (a, b, r) for a, row in sig["members"].items() for b, r in row.items()
        ]
        lines += [
            "",
            "## Are the test differences more than chance?",
            "",
            "Diebold-Mariano test on the per-window test MSE, with a long-run variance that",
            "allows for overlapping windows (`ensemble.metrics.diebold_mariano`). Negative:",
            "the first is better. p is two-sided; `Holm p` adjusts it for the table's",
            f"{len(pairs)} comparisons (Holm's step-down: below 0.05 there, the chance of any",
            "false finding in the table stays under 5 %). It counts the test windows' sampling",
            "for this seed's fitted models only: training randomness is not in it (`summary`",
            "of several seeds lists each seed's p). It assumes the loss differences'",
            "dependence fades within a few horizons. Seasonal data such as ETT need not (the",
            "differences stay correlated for many horizons), and there its p is too small: on",
            "a simulated seasonal series 17-30 % of true nulls were rejected at 5 %",
            "(`benchmarks/dm_calibration.py --seasonal`). Read a p above 0.01 as weak evidence.",
            "With 2 degrees of freedom or fewer (fewer than 12 H test windows: long horizons,",
            "`note`) it cannot resolve even a doubled MSE: a large p there says nothing.",
            "",
            "| comparison | test MSE difference | DM statistic | p | Holm p | dof | note |",
            "|---|---|---|---|---|---|---|",
        ]
        # a forecast against its own copy (dm 0) is no test of the family
        adjusted = metrics.holm([None if r["dm"] == 0.0 else r["p"] for _, _, r in pairs])
        for (a, b, r), p_holm in zip(pairs, adjusted, strict=True):
            lines.append(
                f"| {a} vs {b} | {r['diff']:+.4f} | {_num(r['dm'], '+.2f')} | "
                f"{_num(r['p'], '.3g')} | {_num(p_holm, '.3g')} | {r['dof']} | "
                f"{metrics.caveat(r)} |"
            )
    if res.get("training"):
        lines += [
            "",
            "## Training",
            "",
            "Members trained by epochs keep the weights of the epoch with the lowest val MSE",
            "(Time-LLM's per-epoch val MSE uses its val_stride windows); curves in training.png.",
            '"still improving": the last epoch was the best, so the epoch budget rather than',
            "early stopping ended training; more epochs or a higher learning rate may give a",
            "better member, and a comparison with it may be unfair to it.",
            "",
            "| member | epochs run | best epoch | val MSE there | train MSE there | at the end |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in res["training"].items():
            k = c["best_epoch"] - 1
            end = "**still improving**" if still_improving(c) else "past its best"
            if c["epochs"] == 1:
                end = "one epoch only"
            lines.append(
                f"| {name} | {c['epochs']} | {c['best_epoch']} | {c['val_mse'][k]:.4f} | "
                f"{c['train_mse'][k]:.4f} | {end} |"
            )
    if res.get("combiners"):
        lines += [
            "",
            "## Every combiner",
            "",
            "Each fitted on the validation forecasts only. `held-out val` is the mean MSE on the",
            "rolling-origin folds inside validation. `held-out p` is the two-sided",
            "Diebold-Mariano test of its held-out losses against `stacked`'s (below: lower",
            "or higher than `stacked`'s, then p): `learned` keeps",
            "`stacked` unless a feature-conditioned router (learned_lgbm, learned_torch, rules)",
            "is ahead with p < 0.10 there (one-sided p < 0.05), and then takes the lowest",
            "`held-out val` among those. The other rules (the static ones and `stacked_tilted`)",
            "are references, not chosen from.",
            "`val` is in-sample for the fitted combiners; `test p vs mean` tests its test MSE",
            "against the mean's (two-sided; lower or higher than the mean's, then p, and in",
            "brackets Holm's adjustment for the column's tests).",
            "",
            "| combiner | held-out val MSE | held-out p | val MSE | test MSE | test MAE "
            "| test p vs mean |",
            "|---|---|---|---|---|---|---|",
        ]
        vs_mean = [r.get("test_vs_mean") or {} for r in res["combiners"].values()]
        # the mean against itself (dm 0: the same forecast) is no test of the family
        holm_mean = metrics.holm([None if t.get("dm") == 0.0 else t.get("p") for t in vs_mean])
        for (n, r), p_holm in zip(res["combiners"].items(), holm_mean, strict=True):
            mark = " **(chosen)**" if r["chosen"] else ""
            p_held = signed_p(r.get("val_cv_vs_incumbent"))
            p_mean = signed_p(r.get("test_vs_mean"))
            if p_mean and p_holm is not None and p_holm == p_holm:
                p_mean += f" (Holm {p_holm:.3g})"
            lines.append(
                f"| {n}{mark} | {r['val_cv']:.4f} | {p_held} | "
                f"{r['val']['mse']:.4f} | {r['test']['mse']:.4f} | {r['test']['mae']:.4f} | "
                f"{p_mean} |"
            )
    return "\n".join(lines) + "\n"


_PERIOD_SETTINGS = {  # member_periods key -> how results.md names it
    "period": "period",
    "season": "season",
    "fourier": "Fourier periods",
    "periods": "periods",
    "kernel": "moving-average kernel",
    "patch_len": "patch_len",
    "prompt_periods": "prompt periods",
}


def _member_periods_line(res: dict[str, Any]) -> list[str]:
    """``Each member's period settings, as it forecast: snaive period 24; ...``, from
    results.json's ``member_periods`` (none before runs recorded it): the run's periods
    are ranked candidates, and a member takes the one that fits its lookback or its own
    setting, which the periods line alone does not say."""
    used = res.get("member_periods")
    if not isinstance(used, dict) or not used:
        return []
    parts, none = [], []
    for member in res.get("members") or list(used):
        settings = used.get(member)
        if not isinstance(settings, dict) or not settings:
            none.append(member)
            continue
        said = []
        for key, value in settings.items():
            if key == "season" and value == 0:
                said.append("no seasonal difference")
                continue
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            said.append(f"{_PERIOD_SETTINGS.get(key, key)} {shown}")
        parts.append(f"{member} {', '.join(said)}")
    if none:
        parts.append(f"none: {', '.join(none)}")
    return [f"Each member's period settings, as it forecast: {'; '.join(parts)}."]


def _timing_note(timings: dict[str, Any], fit: Any) -> str:
    """`` (reused)`` for a member whose forecasts an earlier run fitted (its seconds are
    that fit's, not this run's), `` (resumed: the last part only)`` for one that went on
    from a checkpoint; "" for neither."""
    notes = []
    if isinstance(fit, dict) and fit.get("reused") is True:
        notes.append("reused")
    if timings.get("resumed"):
        notes.append("resumed: the last part only")
    return f" ({'; '.join(notes)})" if notes else ""


def signed_p(test: dict | None) -> str:
    """``lower, p 0.008`` / ``higher, p 0.008``: a p with no direction read as a win."""
    p = (test or {}).get("p")
    if p is None or p != p:
        return ""
    diff = test.get("diff", 0.0)
    side = "lower" if diff < 0 else "higher" if diff > 0 else "equal"
    return f"{side}, p {p:.3g}"


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None or x != x else format(x, fmt)  # None or NaN: nothing to show


def _wrap_spec(name: str, width: int = 40) -> str:
    """A member spec over lines of at most ``width`` characters, broken before its
    ``@`` settings (a panel title is about 40 characters wide)."""
    head, *settings = name.split("@")
    lines = [head]
    for part in settings:
        if len(lines[-1]) + 1 + len(part) > width:
            lines.append("@" + part)
        else:
            lines[-1] += "@" + part
    return "\n".join(lines)


def plot_training(path: Path, curves: dict[str, dict[str, Any]]) -> None:
    """One panel per member: train and val MSE per epoch, the kept epoch marked."""
    from matplotlib.ticker import MaxNLocator

    from ensemble.figures import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items(), strict=True):
        epochs = np.arange(1, c["epochs"] + 1)
        ax.plot(epochs, c["train_mse"], "o-", ms=3, label="train")
        ax.plot(epochs, c["val_mse"], "o-", ms=3, label="val")
        k = c["best_epoch"]
        ax.axvline(k, color="0.6", lw=0.8, ls="--", label=f"kept: epoch {k}")
        ax.set_title(_wrap_spec(name), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
        ax.set_ylabel("MSE (scaled)", fontsize=8)
        ax.legend(fontsize=7)
    save(fig, path, dpi=90)


def plot_windows(
    path: Path, splits: Splits, forecasts: dict[str, np.ndarray], true: np.ndarray, n: int = 4
) -> None:
    """Plot ``n`` evenly spaced test windows of the target channel: input, truth, forecasts."""
    from ensemble.figures import pyplot, save

    plt = pyplot()
    x = splits.test.inputs()
    c = true.shape[-1] - 1  # the target is the last evaluated channel
    c_in = splits.eval_channels[c]
    idx = np.linspace(0, true.shape[0] - 1, n).astype(int)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), squeeze=False)
    L, H = x.shape[1], true.shape[1]
    show = min(L, 3 * H)
    for ax, i in zip(axes[:, 0], idx, strict=True):
        ax.plot(np.arange(-show, 0), x[i, -show:, c_in], color="0.5", lw=1, label="input")
        ax.plot(np.arange(H), true[i, :, c], color="k", lw=1.5, label="truth")
        for name, f in forecasts.items():
            ax.plot(np.arange(H), f[i, :, c], lw=1.2 if name == "ensemble" else 0.9, label=name)
        ax.set_title(f"test window {i} ({splits.dataset.columns[c_in]}, scaled)", fontsize=9)
        ax.axvline(0, color="0.8", lw=0.8)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper left")
    save(fig, path, dpi=90)
