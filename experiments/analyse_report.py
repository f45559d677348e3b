"""The routing report's figures and Markdown text, drawn from a run folder and the
analyses of `experiments.analyse` (which calls these; see there for what each shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ensemble import metrics
from experiments.analyse import (
    FEATURES,
    RunData,
    per_window_mse,
    regime_order,
    regimes,
    stored_mean,
    win_shares,
)
from experiments.analyse_ablations import holm_rows, timellm_specs
from experiments.run import ANALYSE_FIGURES

# ---------------------------------------------------------------------------- figures


def within_channel_deciles(v: np.ndarray) -> np.ndarray:
    """[W, C] feature -> [W, C] its decile (0-9) within each channel, -1 where it has no
    value. Pooled deciles would mostly sort the channels (as pooled terciles would). Cut
    by value, as the terciles are: tied windows share a decile (some deciles stay empty)."""
    out = np.full(v.shape, -1, dtype=np.int64)
    for c in range(v.shape[1]):
        ok = ~np.isnan(v[:, c])
        if ok.any():
            inner = np.quantile(v[ok, c], np.linspace(0.1, 0.9, 9))
            out[ok, c] = np.searchsorted(inner, v[ok, c], side="left")
    return out


# Every figure an analyse draws: those a later analyse does not redraw are removed, or
# an older run's figure would sit beside this report as if it were this one's.
FIGURES = ANALYSE_FIGURES


def feature_figure_values(w: np.ndarray | None, err: np.ndarray) -> tuple[np.ndarray, str]:
    """What ``weights_vs_features.png`` plots per member: [M, W, C] the router weights, or
    without them each member's win share (ties split, as in the tables: argmin gave every
    tie to the first member), and the axis label."""
    if w is not None:
        return np.moveaxis(w, -1, 0), "mean weight"
    return win_shares(err), "win rate"


def make_figures(run: RunData, feats: dict[str, np.ndarray] | None, out: Path) -> list[str]:
    """Write the report's figures; returns their file names."""
    from ensemble.figures import pyplot, save

    plt = pyplot()

    members = run.members
    names: list[str] = []
    w = run.weights
    err = np.stack([per_window_mse(run.test[m], run.true) for m in members])
    err_mean = per_window_mse(stored_mean([run.test[m] for m in members]), run.true)
    err_ens = per_window_mse(run.ensemble, run.true)

    if w is not None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(members), 3.6))
        ax.boxplot([w[..., i].ravel() for i in range(len(members))], showfliers=False)
        ax.set_xticks(range(1, len(members) + 1), members, rotation=20)
        ax.set_ylabel("router weight (test windows x channels)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"weight distribution, router `{run.results.get('router')}`")
        save(fig, out / "weights_distribution.png")
        names.append("weights_distribution.png")

        fig, ax = plt.subplots(figsize=(9, 3.4))
        mw = w.mean(axis=1)  # [W, M] mean over channels
        k = max(1, mw.shape[0] // 200)  # smooth to ~200 points
        sm = np.stack(
            [np.convolve(mw[:, i], np.ones(k) / k, mode="valid") for i in range(len(members))]
        )
        ax.stackplot(np.arange(sm.shape[1]) * 1 + k // 2, sm, labels=members, alpha=0.85)
        ax.set_xlabel("test window")
        ax.set_ylabel("mean weight over channels")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left", ncol=min(4, len(members)))
        save(fig, out / "weights_over_time.png")
        names.append("weights_over_time.png")

    if feats is not None:
        avail = [f for f in FEATURES if f in feats and not np.all(np.isnan(feats[f]))]
        if avail:
            fig, axes = plt.subplots(1, len(avail), figsize=(3.6 * len(avail), 3.3), squeeze=False)
            values, label = feature_figure_values(w, err)
            for ax, f in zip(axes[0], avail, strict=True):
                idx = within_channel_deciles(feats[f]).ravel()  # -1: no value
                for i, m in enumerate(members):
                    y = values[i].ravel()
                    vals = [y[idx == b].mean() if np.any(idx == b) else np.nan for b in range(10)]
                    ax.plot(np.arange(1, 11), vals, marker="o", ms=3, label=m)
                ax.set_xlabel(f"{f.replace('_', ' ')} (decile within its channel)")
                ax.set_ylabel(label)
                ax.set_xticks([1, 5, 10])
                ax.grid(alpha=0.3)
            axes[0, -1].legend(fontsize=7)
            what = "router weight" if w is not None else "win rate (no router weights saved)"
            fig.suptitle(f"{what} against window features", fontsize=10)
            save(fig, out / "weights_vs_features.png")
            names.append("weights_vs_features.png")

        labels = regimes(feats, list(run.results.get("periods") or []))
        if labels:
            wins = win_shares(err)  # [M, W, C]
            fig, axes = plt.subplots(
                1, len(labels), figsize=(3.4 * len(labels), 3.3), squeeze=False
            )
            for ax, (f, lab) in zip(axes[0], labels.items(), strict=True):
                regs = regime_order(np.unique(lab.astype(str)))
                bottom = np.zeros(len(regs))
                for i, m in enumerate(members):
                    rate = np.array([wins[i][lab == r].mean() for r in regs])
                    ax.bar(regs, rate, bottom=bottom, label=m)
                    bottom += rate
                ax.set_title(f.replace("_", " "), fontsize=9)
                ax.set_ylabel("share of windows where best")
            axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            save(fig, out / "win_rates.png")
            names.append("win_rates.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    d = (err_ens - err_mean).mean(axis=1)  # [W] over channels
    k = max(1, d.shape[0] // 200)
    axes[0].plot(np.convolve(d, np.ones(k) / k, mode="valid"), lw=1)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xlabel("test window")
    axes[0].set_ylabel("MSE router − MSE mean (smoothed)")
    axes[0].set_title("below 0: the router beats the mean", fontsize=9)
    lim = np.quantile(np.abs(d), 0.99) or 1.0
    axes[1].hist(np.clip(d, -lim, lim), bins=60, color="C1")
    axes[1].axvline(0, color="k", lw=0.8)
    axes[1].set_xlabel("per-window MSE difference (router − mean)")
    save(fig, out / "router_vs_mean.png")
    names.append("router_vs_mean.png")
    return names


def probe_figure(probe: dict[str, Any], out: Path) -> list[str]:
    """``prompt_probe.png``: for each counterfactual prompt, how far it moves the forecasts
    and how it changes the test MSE (the report's prompt-probe table as bars)."""
    from ensemble.figures import pyplot, save

    plt = pyplot()

    stats = [k for k in probe if k.startswith("shuffled:")]
    names = ["shuffled", "none", *stats]
    # the Diebold-Mariano p of the MSE change (against the own prompt) in the label
    labels = [
        (f"{k.split(':', 1)[1]} shuffled" if k in stats else k) + f" (p {probe[k]['p']:.2g})"
        for k in names
    ]
    moved = [100 * probe[k]["change_rel"] for k in names]
    mse = [100 * (probe[k]["mse"] / probe["own"]["mse"] - 1) for k in names]
    y = np.arange(len(names))[::-1]  # the table's order from the top
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 1.4 + 0.35 * len(names)), sharey=True)
    a.barh(y, moved, color="tab:blue")
    a.set_yticks(y, labels)
    a.set_xlabel("forecast moved (% of mean |own forecast|)")
    b.barh(y, mse, color=["tab:red" if v > 0 else "tab:green" for v in mse])
    b.axvline(0, color="black", lw=0.8)
    b.set_xlabel("test MSE change vs own prompt (%)")
    fig.suptitle("Does Time-LLM read its prompt? (test windows; p: DM test of the MSE change)")
    save(fig, out / "prompt_probe.png")
    return ["prompt_probe.png"]


# ---------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str) -> str:
    """A p or statistic as a table cell: blank for None or NaN (an undefined test), as
    results.md has it, never "nan"."""
    return "" if x is None or x != x else format(x, fmt)


def _left_out(channels: list[int], names: list[str] | None) -> str:
    """The disagreement section's note on channels with no spread to rank."""
    if not channels:
        return ""
    named = [str(names[c]) if names and c < len(names) else str(c) for c in channels]
    return f"Left out: {', '.join(named)}, where the members' spread never varies. "


def _below_baseline_note(res: dict[str, Any]) -> list[str]:
    """A warning ahead of every section when a member has not learned the series (val MSE
    above the run's naive baseline): the router's weights on it, and every regime and
    ablation below, then describe an untrained model, not when the router prefers it."""
    from experiments.report import below_baseline

    below = below_baseline(res)
    if not below:
        return []
    base = res["baseline"]
    return [
        f"**Not yet a model of the series: {', '.join(below)}** (val MSE above "
        f"`{base['forecast']}`'s {base['val_mse']:.4f}, a forecast that only repeats the "
        "input). What the router does with it below describes an untrained member, not "
        "when the router prefers it: train it longer and run the analysis again.",
        "",
    ]


def _skill_section(an: dict[str, Any], members: list[str]) -> list[str]:
    """ "Does the router weight a member where it does better?", and for Time-LLM members
    the regimes it is weighted most in: the report's answer to "when does the router
    prefer the LLM?". For a router whose weights do not vary within a channel, a note
    that says so (the question has no answer there)."""
    skill = an.get("weight_follows_skill")
    if not skill:
        return []
    if all(skill.get(m) is None for m in members):
        return [
            "## When does the router prefer a member?",
            "",
            "Not answerable for this run: its router gives each member the same weight in "
            "every window of a channel (a static combination such as `stacked`, or the one "
            "`learned` kept), so no window's features make it prefer one member. A router "
            "that reads window features (`--router learned_torch`, `learned_lgbm` or `rules`, "
            "when their fit finds features worth using) answers it.",
            "",
        ]
    lines = [
        "## Does the router weight a member where it does better?",
        "",
        "Within each channel, the test windows where a member's weight is above its average "
        "weight on that channel against those where it is below (share: of the pairs): how "
        "often the member is the best one there, and its MSE over the other members' mean "
        "MSE there (below 1: better than they are). A router that prefers a member at the "
        "right times gives it more weight where it wins more often and its ratio is lower. "
        "– where the member's weight does not vary from window to window.",
        "",
        "| member | share above | wins above | wins below | MSE ratio above | MSE ratio below |",
        "|---|---|---|---|---|---|",
    ]
    for m in members:
        s = skill.get(m)
        if s is None:
            lines.append(f"| {m} | – | – | – | – | – |")
            continue

        def ratio(side: str, s: dict[str, Any] = s) -> str:
            v = s[side]["mse_ratio"]
            return "–" if v is None else f"{v:.3f}"

        lines.append(
            f"| {m} | {_pct(s['above']['share'])} | {_pct(s['above']['win_rate'])} | "
            f"{_pct(s['below']['win_rate'])} | {ratio('above')} | {ratio('below')} |"
        )
    lines.append("")
    for m in timellm_specs(members):
        if skill.get(m) is None:  # its weights are fixed per channel: no regime prefers it
            continue
        most = []
        for f, regs in (an.get("regimes") or {}).items():
            ws = {r: (v.get("mean_weight") or {}).get(m) for r, v in regs.items()}
            ws = {r: v for r, v in ws.items() if v is not None and r != "n/a"}
            if len(ws) > 1:
                hi, lo = max(ws, key=ws.get), min(ws, key=ws.get)
                if ws[hi] - ws[lo] >= MIN_WEIGHT_GAP:
                    # its win rate beside the weight: a regime it is weighted most in can be
                    # its worst, which the weight alone would hide
                    wins = {r: (regs[r].get("win_rate") or {}).get(m) for r in (hi, lo)}
                    won = (
                        f"; it wins {_pct(wins[hi])} of that regime's windows, {_pct(wins[lo])} "
                        f"of {lo}'s"
                        if None not in wins.values()
                        else ""
                    )
                    most.append(
                        f"{f.replace('_', ' ')} {hi} ({ws[hi]:.3f}, against {ws[lo]:.3f} in "
                        f"{lo}{won})"
                    )
        if most:
            lines += [
                f"The router weights {m} most in these regimes (mean weight; descriptive: the "
                "windows overlap and the regimes are picked as the most different of three, "
                "so no test is implied): "
                + "; ".join(most)
                + ". Whether that pays is in the regime tables' win rates and the table above.",
                "",
            ]
        else:
            lines += [
                f"The router's mean weight on {m} differs by under {MIN_WEIGHT_GAP} between "
                "the regimes of every feature: it does not prefer it in any of them.",
                "",
            ]
    return lines


# The least gap in a member's mean weight between two regimes that the report names as a
# preference: below it (0.017 on ETTh1, a tenth of the weight's spread) it is noise to read.
MIN_WEIGHT_GAP = 0.05


def _weights_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Weight distribution per member": mean, quantiles and top-weight share."""
    lines: list[str] = []
    lines += ["## Weight distribution per member", ""]
    if "weights" in an:
        saved = run.step_weights is not None
        steps = saved and bool(np.ptp(run.step_weights, axis=0).max() > 1e-9)
        # a per-step rule (stacked) that gave every step the same weights: "a fixed rule"
        # and "weighs each step apart" side by side contradicted each other
        same_steps = an.get("weights_constant") and run.horizon_averaged and saved and not steps
        if an.get("weights_constant"):
            if steps:
                how = " (they change only along the horizon: see below)"
            elif same_steps:
                how = ", and on every horizon step (the router weighs each step apart, but its fit gave every step these weights)"
            elif run.horizon_averaged:  # averages of unsaved steps: the next paragraph says so
                how = ""
            else:
                how = " (a fixed rule)"
            lines += [
                "The weights are the same for every window and channel"
                + how
                + ", so the analyses of weights against features below are flat by construction.",
                "",
            ]
        if run.horizon_averaged and not same_steps:
            lines += [
                "The router weighs each horizon step apart: the weights here and in the "
                "sections below are each window's average over the horizon's steps (see "
                "Weights along the horizon).",
                "",
            ]
        lines += [
            "| member | mean | median | std | p10 | p90 | top weight in |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, s in an["weights"].items():
            lines.append(
                f"| {m} | {s['mean']:.3f} | {s['median']:.3f} | {s['std']:.3f} | {s['p10']:.3f} | "
                f"{s['p90']:.3f} | {_pct(s['top_share'])} |"
            )
    else:
        lines.append("No router_weights.npz in the run folder.")
    lines.append("")
    return lines


def _val_vs_test_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Validation against test": how validation ranks the members that test ranks."""
    lines: list[str] = []
    vt = an.get("val_vs_test")
    if vt:
        ref = next(row["member"] for row in vt if row["reference"])
        lines += [
            "## Validation against test",
            "",
            f"Each member's MSE relative to {ref}'s (the lowest on validation). Every fitted "
            "combination sees only the validation column: a member whose ratio is higher on "
            "validation than on test is underrated by it and gets less weight than test would "
            "have rewarded, and the reverse."
            + (
                " `mean weight`: the router's test weight averaged over windows and channels, "
                "each channel counting equally; the MSEs beside it are pooled over channels, "
                "where a channel with larger errors counts for more."
                if any(row["mean_weight"] is not None for row in vt)
                else ""
            ),
            "",
            "| member | val MSE | test MSE | val ratio | test ratio | val rank | test rank "
            "| mean weight |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in vt:
            wt = "–" if row["mean_weight"] is None else f"{row['mean_weight']:.3f}"
            lines.append(
                f"| {row['member']} | {row['val_mse']:.4f} | {row['test_mse']:.4f} | "
                f"{row['val_ratio']:.3f} | {row['test_ratio']:.3f} | {row['val_rank']} | "
                f"{row['test_rank']} | {wt} |"
            )
        moved = [row["member"] for row in vt if row["val_rank"] != row["test_rank"]]
        lines += [
            "",
            "Validation and test rank the members "
            + (f"differently ({', '.join(moved)} moved)." if moved else "the same way."),
            "",
        ]
    return lines


def _probe_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Does Time-LLM read its prompt?" (``analyse --prompt-probe``)."""
    lines: list[str] = []
    probe = an.get("prompt_probe")
    if probe:
        own, shuf = probe["own"], probe["shuffled"]
        lines += [
            "## Does Time-LLM read its prompt?",
            "",
            "The fitted Time-LLM forecasts the test windows with each series' own prompt, "
            "with the prompt of another window of the same channel (windows permuted), "
            "and with no prompt (never seen in training). Change: mean absolute "
            "difference from the own-prompt forecast, relative to its mean absolute value.",
            "",
            "| prompt | test MSE | test MAE | change | DM p vs own |",
            "|---|---|---|---|---|",
        ]
        stats = [k for k in probe if k.startswith("shuffled:")]
        for name in ["own", "shuffled", "none", *stats]:
            v = probe[name]
            label = f"own, {name.split(':', 1)[1]} shuffled" if name in stats else name
            lines.append(
                f"| {label} | {v['mse']:.4f} | {v['mae']:.4f} | {100 * v['change_rel']:.2f}% "
                f"| {'–' if name == 'own' else _num(v['p'], '.3g')} |"
            )
        lines += [
            "",
            "Another window's prompt changes the test MSE by "
            f"{100 * (shuf['mse'] / own['mse'] - 1):+.2f}% and moves the forecasts by "
            f"{100 * shuf['change_rel']:.2f}% on average (Diebold-Mariano p "
            f"{_num(shuf['p'], '.3g') or 'undefined'}).",
            "",
        ]
        if stats:
            top = max(stats, key=lambda k: probe[k]["change_rel"])
            lines += [
                'Rows "own, X shuffled" keep the own prompt but state statistic X of the '
                "window the shuffled prompt comes from: the statistic whose swap moves the "
                f"forecasts most is the one the model reads most ({top.split(':', 1)[1]}: "
                f"{100 * probe[top]['change_rel']:.2f}%). A statistic that is the same in most "
                "windows (the window period of a strongly periodic series) cannot move them, "
                "read or not.",
                "",
            ]
    return lines


def _prototypes_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "What the text prototypes stand for" (``analyse --prototypes``)."""
    lines: list[str] = []
    protos = an.get("prototypes")
    if protos:
        c = protos["top1_cosine"]
        lines += [
            "## What the text prototypes stand for",
            "",
            f"Each of the {protos['num_prototypes']} text prototypes is a learned mix of the "
            "backbone's word embeddings; its nearest vocabulary entries by cosine similarity "
            "are the closest thing it has to a word. Mean cosine to the nearest entry: "
            f"{c['trained']:.3f} trained, {c['initial']:.3f} at initialisation, "
            f"{c['random']:.3f} for random directions, and {c['word']:.3f} from a vocabulary "
            "entry to its nearest other entry. Training moved the prototype matrix by "
            f"{protos['moved']:.2f} times its initial norm. The {len(protos['prototypes'])} "
            f"prototypes the test patches attend to most take {100 * protos['top_share']:.1f}% "
            f"of the reprogramming attention (uniform: "
            f"{100 * len(protos['prototypes']) * protos['uniform_share']:.1f}%).",
            "",
            "| prototype | attention share | nearest entries (cosine) | at initialisation |",
            "|---|---|---|---|",
        ]

        def words(ws: list[str], cs: list[float]) -> str:
            cells = [w.replace("|", "\\|") for w in ws]  # "|" would end the table cell
            return ", ".join(f'"{w}" ({c:.2f})' for w, c in zip(cells, cs, strict=True))

        for row in protos["prototypes"]:
            lines.append(
                f"| {row['index']} | {100 * row['share']:.2f}% | "
                f"{words(row['words'], row['cosines'])} | "
                f"{words(row['initial_words'], row['initial_cosines'])} |"
            )
        lines.append("")
    return lines


def _channels_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Weights per channel" beside each member's MSE there."""
    r = run.results
    members = run.members
    lines: list[str] = []
    if "channel_weights" in an:
        names = r.get("channels") or [str(c) for c in range(len(an["channel_weights"]))]
        cw = np.asarray(an["channel_weights"], dtype=np.float64)
        # what the table shows, not how the router was fitted: a router reading window
        # features gives channels other means without fitting them apart
        if np.ptp(cw, axis=0).max() <= 1e-9:
            why = "The router's mean weights are the same on every channel."
        elif not an.get("weights_vary_by_window", True):
            why = (
                "The router gives each channel its own weights, the same in every window of "
                "the channel."
            )
        else:
            why = (
                "Channels' mean weights differ where the router's features (or its fits) "
                "differ between them; the table alone does not say which."
            )
        lines += [
            "## Weights per channel",
            "",
            "Mean router weight over the test windows for each channel, and each member's "
            "test MSE on that channel (lowest in bold). " + why,
            "",
            "| channel | "
            + " | ".join(f"{m} weight" for m in members)
            + " | "
            + " | ".join(f"{m} MSE" for m in members)
            + " |",
            "|---" * (2 * len(members) + 1) + "|",
        ]
        for name, wc, ec in zip(names, an["channel_weights"], an["channel_mse"], strict=True):
            best = int(np.argmin(ec))
            errs = [f"**{v:.4f}**" if i == best else f"{v:.4f}" for i, v in enumerate(ec)]
            lines.append(
                f"| {name} | "
                + " | ".join(f"{v:.3f}" for v in wc)
                + " | "
                + " | ".join(errs)
                + " |"
            )
        lines.append("")
    return lines


def _error_corr_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Error correlation between members"."""
    members = run.members
    lines: list[str] = []
    corr_err = an.get("error_corr")
    if corr_err and len(members) > 1:
        lines += [
            "## Error correlation between members",
            "",
            "Pearson correlation of the test errors (forecast minus target) over windows, "
            "steps and channels. A member whose errors move with another's adds little to "
            "a weighted average, however accurate it is alone.",
            "",
            "| | " + " | ".join(members) + " |",
            "|---" * (len(members) + 1) + "|",
        ]
        for m, row in zip(members, corr_err, strict=True):
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        lines.append("")
    return lines


def _horizon_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Weights along the horizon" for rules that weigh each step apart."""
    members = run.members
    lines: list[str] = []
    if run.tilt_steps is not None and run.tilt_share is not None:
        return _tilted_horizon_section(run)
    if run.step_weights is None and run.horizon_averaged:
        lines += [
            "## Weights along the horizon",
            "",
            "The router weighs each horizon step apart, and its steps' weights differ from "
            "window to window too; this run folder holds only each window's average over "
            "the horizon, which the tables show (a `stacked_tilted` run of this version "
            "also saves the parts that rebuild every step's weights: README, "
            "router_weights.npz).",
            "",
        ]
    if run.step_weights is not None:
        h = run.step_weights.shape[0]
        steps = sorted({1, max(1, h // 4), max(1, h // 2), max(1, 3 * h // 4), h})
        lines += [
            "## Weights along the horizon",
            "",
            "The router weighs each horizon step apart; the weight tables show each "
            "window's average over the steps. Weight per member at selected steps "
            "(averaged over channels; `router_weights.npz` holds them per channel as "
            "`step_channel_weights` where they differ):",
            "",
            "| step | " + " | ".join(members) + " |",
            "|---|" + "---|" * len(members),
        ]
        for t in steps:
            row = " | ".join(f"{v:.3f}" for v in run.step_weights[t - 1])
            lines.append(f"| {t} | {row} |")
        lines.append("")
    return lines


def _tilted_horizon_section(run: RunData) -> list[str]:
    """ "Weights along the horizon" of `stacked_tilted`: its stacked part's step profile
    and how much of each window's weights the tilt takes."""
    steps_w, share = run.tilt_steps, run.tilt_share  # [H, M], [W, C]
    h = steps_w.shape[0]
    steps = sorted({1, max(1, h // 4), max(1, h // 2), max(1, 3 * h // 4), h})
    lines = [
        "## Weights along the horizon",
        "",
        "The router (`stacked_tilted`) weighs each horizon step apart: step h of window w "
        "and channel c is weighted `(1 - s[w, c]) * S[h, c] + s[w, c] * t[w, c]`, its "
        "stacked step weights S blended with a tilt t toward the members that did best on "
        "the windows just before, by the share s. The weight tables show each window's "
        "average over the steps. "
        f"On the test windows the tilt's share s is {share.mean():.3f} on average "
        f"({share.min():.3f} to {share.max():.3f} over windows and channels), so on average "
        f"{1 - share.mean():.3f} of a step's weight comes from S, whose profile per member "
        "at selected steps (averaged over channels) is:",
        "",
        "| step | " + " | ".join(run.members) + " |",
        "|---|" + "---|" * len(run.members),
    ]
    for t in steps:
        row = " | ".join(f"{v:.3f}" for v in steps_w[t - 1])
        lines.append(f"| {t} | {row} |")
    lines += [
        "",
        "`router_weights.npz` holds S per channel as `stacked_step_channel_weights`, t and s "
        "as `tilt_test` and `tilt_share_test` (and `_val`): with the members' forecasts "
        "they rebuild the ensemble.",
        "",
    ]
    return lines


def _features_section(run: RunData, an: dict[str, Any], feat_note: str) -> list[str]:
    """ "Weights against window features": rank correlations within channels."""
    members = run.members
    lines: list[str] = []
    lines += ["## Weights against window features", "", feat_note, ""]
    if "weights" in an and not an.get("weights_constant") and not an.get("weights_vary_by_window"):
        lines += [
            "The router's weights differ between channels (and horizon steps) but not from "
            "window to window: it does not respond to the window's features, and its "
            "weights in the regime tables and the figures are flat by construction.",
            "",
        ]
    corr = an.get("weight_feature_corr")
    if corr:
        lines += [
            "Spearman rank correlation of each member's weight with each feature across the "
            "test windows, within each channel and averaged over the channels where both "
            "the weight and the feature vary (– where they vary in none):",
            "",
            "| feature | " + " | ".join(members) + " |",
            "|---" * (len(members) + 1) + "|",
        ]
        for f, row in corr.items():
            cells = ["–" if row[m] is None else f"{row[m]:+.2f}" for m in members]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _regimes_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Win rates per regime": terciles of each feature within each channel."""
    members = run.members
    weighted = "weights" in an
    lines: list[str] = []
    overall = (
        "Share of (window, channel) pairs where each member has the lowest error. Overall: "
        + ", ".join(f"{m} {_pct(v)}" for m, v in an["win_rate"].items())
        + ". "
    )
    if not an.get("regimes"):  # no tables to describe
        return [
            "## Win rates per regime",
            "",
            overall + "No regime tables: the report has no window features (see above).",
            "",
        ]
    lines += [
        "## Win rates per regime",
        "",
        overall + "Regimes: terciles of each feature within each channel over the test windows "
        "(low / mid / high: each channel contributes about a third of its windows to each, "
        "tied values staying together, so a regime is a kind of window, not a set of "
        "channels); the dominant period is matched to the run's top periods within 15 %, "
        "not cut within channels, so its regimes' win rates partly compare channels. "
        + (
            "`weight`: the router's mean weight there on each channel, averaged over the "
            "channels that have windows in every regime (each counted once: a channel mostly "
            "in one regime does not make its weights look like a preference for it); "
            if weighted
            else "No weight columns: the run saved no router weights. "
        )
        + "`router better`: share of pairs where the router's error is below the mean's.",
        "",
    ]
    for f, regs in an.get("regimes", {}).items():
        lines += [
            f"**{f.replace('_', ' ')}**",
            "",
            "| regime | share | "
            + " | ".join(f"{m} wins" for m in members)
            + ("".join(f" | {m} weight" for m in members) if weighted else "")
            + " | router MSE | mean MSE | router better |",
            "|---" * ((2 if weighted else 1) * len(members) + 5) + "|",
        ]
        for reg, s in regs.items():
            mw = s.get("mean_weight") or {}
            lines.append(
                f"| {reg} | {_pct(s['share'])} | "
                + " | ".join(_pct(s["win_rate"][m]) for m in members)
                + (
                    "".join(f" | {mw[m]:.3f}" if mw else " | –" for m in members)
                    if weighted
                    else ""
                )
                + f" | {s['router_mse']:.4f} | {s['mean_mse']:.4f} | {_pct(s['router_better_share'])} |"
            )
        lines.append("")
    return lines


def _disagreement_section(run: RunData, an: dict[str, Any]) -> list[str]:
    """ "Member disagreement as a warning sign": error by quintile of spread."""
    r = run.results
    members = run.members
    lines: list[str] = []
    dis = an.get("disagreement")
    if dis and len(members) > 1 and dis["bins"]:
        rho = dis["spearman"]
        first, last = dis["bins"][0], dis["bins"][-1]
        ratio = None
        if len(dis["bins"]) > 1 and first["ensemble_mse"] > 0:
            ratio = last["ensemble_mse"] / first["ensemble_mse"]
        lines += [
            "## Member disagreement as a warning sign",
            "",
            "Spread: the standard deviation of the members' forecasts of a (window, channel), "
            "averaged over the horizon (scaled units). It is known before the targets, so a "
            "spread that rises with the error says which forecasts to trust less. Each "
            "channel's test windows in quintiles of their spread (1: the members agree "
            "most), pooled over channels:",
            "",
            "| quintile | mean spread | share | ensemble MSE | mean MSE | "
            + " | ".join(members)
            + " |",
            "|---|---|---|---|---|" + "---|" * len(members),
        ]
        for row in dis["bins"]:
            lines.append(
                f"| {row['bin']} | {row['spread']:.3f} | {_pct(row['share'])} | "
                f"{row['ensemble_mse']:.4f} | {row['mean_mse']:.4f} | "
                + " | ".join(f"{row['member_mse'][m]:.4f}" for m in members)
                + " |"
            )
        lines += [
            "",
            _left_out(dis.get("channels_left_out") or [], r.get("channels"))
            + "Rank correlation of spread and the ensemble's per-window MSE (within each "
            f"channel, averaged): {'n/a' if rho is None else f'{rho:.2f}'}"
            + (
                f"; the most disputed fifth of each channel has {ratio:.1f} times the "
                "ensemble MSE of the least disputed."
                if ratio is not None
                else "."
            ),
            "",
        ]
    return lines


def _ablations_section(
    run: RunData, an: dict[str, Any], training: list[dict[str, Any]]
) -> list[str]:
    """ "Where the router beats or loses to the mean" and the ablation table."""
    members = run.members
    lines: list[str] = []
    rv = an["router_vs_mean"]
    dm = rv["dm"]
    p = _num(dm.get("p"), ".3g")
    note = metrics.caveat(dm)
    lines += [
        "## Where the router beats or loses to the mean",
        "",
        f"Test MSE: router {rv['router_mse']:.4f}, equal-weight mean {rv['mean_mse']:.4f}. The router "
        f"is better on {_pct(rv['router_better_share'])} of (window, channel) pairs and worse on "
        f"{_pct(rv['router_worse_share'])}. See the regime tables above for where. "
        f"Diebold-Mariano test of the difference (per-window MSE, overlapping windows): "
        + (f"p = {p}" if p else "no p (the test is undefined here)")
        + f" (two-sided, {dm.get('dof')} dof)"
        + (f"; {note}." if note else "."),
        "",
        "## Ablations",
        "",
        "| variant | test MSE | test MAE | Δ MSE vs full | p vs full | dof | note | method |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = an["ablation"]
    full = rows[0]["mse"]
    if any("p_vs_full" in row and "p_holm" not in row for row in rows):
        rows = holm_rows([dict(row) for row in rows])  # analyses made before p_holm was kept
    for row in rows:
        test = {
            "p": row.get("p_vs_full"),
            "dm": row.get("dm_vs_full"),
            "dof": row.get("dof_vs_full"),
        }
        p_full = _num(row.get("p_vs_full"), ".3g")
        if p_full and row.get("p_holm") is not None:
            p_full += f" (Holm {row['p_holm']:.3g})"
        lines.append(
            f"| {row['variant']} | {row['mse']:.4f} | {row['mae']:.4f} "
            f"| {row.get('delta', row['mse'] - full):+.4f} "
            f"| {p_full} | {'' if test['dof'] is None else test['dof']} | {metrics.caveat(test)} "
            f"| {row['method']} |"
        )
    if not timellm_specs(members):
        lines.append(
            "| without timellm | – | – | – | – | | | not applicable: the run has no timellm member |"
        )
    for row in training:
        if row["status"] == "not run":
            lines.append(f"| {row['description']} | not run | | | | | | see the command below |")
            continue
        t, e = row.get("timellm") or {}, row.get("ensemble") or {}
        delta = row.get("delta") or {}
        # each number named: "test MAE" held Time-LLM's alone under the ensemble's MSE
        lines.append(
            f"| {row['description']} "
            f"| {_labelled([('timellm', t.get('mse')), ('ensemble', e.get('mse'))], '.4f')} "
            f"| {_labelled([('timellm', t.get('mae')), ('ensemble', e.get('mae'))], '.4f')} "
            f"| {_labelled([(k, delta.get(k)) for k in ('timellm', 'ensemble')], '+.4f')} "
            f"| | | | sibling run `{row['run']}` |"
        )
    family = [row["variant"] for row in rows if row.get("p_holm") is not None]
    same = [row["variant"] for row in rows if "p_vs_full" in row and row.get("dm_vs_full") == 0.0]
    read = [row for row in training if row["status"] != "not run"]
    mine = run.results.get("test") or {}
    lines += [
        "",
        "Member ablations are computed from this run folder; Δ > 0 means the ensemble is worse "
        "without the member; `p vs full` is the Diebold-Mariano test of that difference, "
        "`dof` its degrees of freedom and `note` what a reader of its p must know "
        "(the caveats of results.md's test hold here too). "
        + (
            f"In brackets Holm's adjustment over the family of {len(family)} test"
            f"{'s' if len(family) != 1 else ''}: {', '.join(family)}. "
            if family
            else "No row tests a difference, so no Holm adjustment. "
        )
        + (
            f"Left out of the family: {', '.join(same)}, whose forecast is the full one's "
            "(DM statistic 0: it tests nothing), as results.md leaves out such pairs. "
            if same
            else ""
        )
        + (
            "Training ablations come from sibling run folders "
            f"`{run.path}-<variant>` (same config, one setting changed; same seed)."
            if timellm_specs(members)
            else "Training ablations change a Time-LLM setting; this run has no timellm "
            "member (add it to --members for them)."
        )
        + (
            " Their test MSE and MAE are the sibling's Time-LLM member's and ensemble's, as its "
            "results.json has them, and their Δ compares each with this run's own, as its "
            "results.json has them ("
            + _labelled(
                [
                    ("timellm", (mine.get(timellm_specs(members)[0]) or {}).get("mse")),
                    ("ensemble", (mine.get("ensemble") or {}).get("mse")),
                ],
                ".4f",
            )
            + "): like with like, not with the full row above (recomputed from "
            "forecasts.npz); no p: only the sibling's scores are read."
            if read
            else ""
        ),
        "",
    ]
    todo = [r for r in training if r["status"] == "not run"]
    if todo:
        lines += ["Commands for the ablations not run yet:", "", "```"]
        for row in todo:
            lines.append(row["command"] + (f"   # {row['note']}" if "note" in row else ""))
        lines += ["```", ""]
    return lines


def _labelled(values: list[tuple[str, Any]], fmt: str) -> str:
    """``timellm 0.4000, ensemble 0.3000``: the numbers among ``values``, each named;
    "–" where none is."""
    cells = [
        f"{name} {format(v, fmt)}"
        for name, v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    ]
    return ", ".join(cells) or "–"


def report_markdown(
    run: RunData,
    an: dict[str, Any],
    training: list[dict[str, Any]],
    figures: list[str],
    feat_note: str,
) -> str:
    """The routing_report.md text."""
    r = run.results
    members = run.members
    lines = [
        f"# Routing report: {r.get('dataset')} features={r.get('features', 'M')} "
        f"L={r.get('seq_len')} H={r.get('pred_len')} seed={r.get('seed')}",
        "",
        f"Run folder `{run.path}`; router `{r.get('router')}`; members {', '.join(members)}; "
        f"{run.true.shape[0]} test windows x {run.true.shape[2]} channels; periods (train rows) "
        f"{r.get('periods')}. Errors are MSE in the scaled space per window and channel, "
        "averaged over the horizon.",
        "",
        *_below_baseline_note(r),
    ]
    for section in (
        _weights_section(run, an),
        _val_vs_test_section(run, an),
        _probe_section(run, an),
        _prototypes_section(run, an),
        _channels_section(run, an),
        _error_corr_section(run, an),
        _horizon_section(run, an),
        _features_section(run, an, feat_note),
        _regimes_section(run, an),
        _skill_section(an, run.members),
        _disagreement_section(run, an),
        _ablations_section(run, an, training),
    ):
        lines += section
    lines += ["## Figures", ""]
    for f in figures:
        lines.append(f"![{f}]({f})")
    return "\n".join(lines) + "\n"
