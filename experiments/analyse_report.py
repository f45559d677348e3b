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
from experiments.analyse_ablations import timellm_specs

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
            for ax, f in zip(axes[0], avail, strict=True):
                idx = within_channel_deciles(feats[f]).ravel()  # -1: no value
                for i, m in enumerate(members):
                    if w is not None:
                        y = w[..., i].ravel()
                        label = "mean weight"
                    else:  # no router weights: how often the member is best instead
                        y = (err.argmin(axis=0) == i).ravel().astype(float)
                        label = "win rate"
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


def _left_out(channels: list[int], names: list[str] | None) -> str:
    """The disagreement section's note on channels with no spread to rank."""
    if not channels:
        return ""
    named = [str(names[c]) if names and c < len(names) else str(c) for c in channels]
    return f"Left out: {', '.join(named)}, where the members' spread never varies. "


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
                    most.append(
                        f"{f.replace('_', ' ')} {hi} ({ws[hi]:.3f}, against {ws[lo]:.3f} in {lo})"
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
        if an.get("weights_constant"):
            steps = run.step_weights is not None and bool(
                np.ptp(run.step_weights, axis=0).max() > 1e-9
            )
            lines += [
                "The weights are the same for every window and channel"
                + (
                    " (they change only along the horizon: see below)"
                    if steps
                    else " (a fixed rule)"
                )
                + ", so the analyses of weights against features below are flat by construction.",
                "",
            ]
        if run.horizon_averaged:
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
            "have rewarded, and the reverse.",
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
                f"| {'–' if name == 'own' else format(v['p'], '.3g')} |"
            )
        lines += [
            "",
            "Another window's prompt changes the test MSE by "
            f"{100 * (shuf['mse'] / own['mse'] - 1):+.2f}% and moves the forecasts by "
            f"{100 * shuf['change_rel']:.2f}% on average (Diebold-Mariano p {shuf['p']:.3g}).",
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
        lines += [
            "## Weights per channel",
            "",
            "Mean router weight over the test windows for each channel, and each member's "
            "test MSE on that channel (lowest in bold). Where the weights differ between "
            "channels the router fitted them per channel.",
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
    if run.step_weights is None and run.horizon_averaged:
        lines += [
            "## Weights along the horizon",
            "",
            "The router weighs each horizon step apart, and its steps' weights differ from "
            "window to window too; they are not saved, so the tables show each window's "
            "average over the horizon.",
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
    lines: list[str] = []
    lines += [
        "## Win rates per regime",
        "",
        "Share of (window, channel) pairs where each member has the lowest error. Overall: "
        + ", ".join(f"{m} {_pct(v)}" for m, v in an["win_rate"].items())
        + ". Regimes: terciles of each feature within each channel over the test windows "
        "(low / mid / high: each channel contributes about a third of its windows to each, "
        "tied values staying together, so a regime is a kind of window, not a set of "
        "channels); the dominant period is matched to the run's top periods within 15 %, "
        "not cut within channels, so its regimes' win rates partly compare channels. "
        "`weight`: the router's mean weight there on each channel, averaged over the "
        "channels that have windows in every regime (each counted once: a channel mostly "
        "in one regime does not make its weights look like a preference for it); "
        "`router better`: share of pairs where the router's error is below the mean's.",
        "",
    ]
    weighted = "weights" in an
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
    lines += [
        "## Where the router beats or loses to the mean",
        "",
        f"Test MSE: router {rv['router_mse']:.4f}, equal-weight mean {rv['mean_mse']:.4f}. The router "
        f"is better on {_pct(rv['router_better_share'])} of (window, channel) pairs and worse on "
        f"{_pct(rv['router_worse_share'])}. See the regime tables above for where. "
        f"Diebold-Mariano test of the difference (per-window MSE, overlapping windows): "
        f"p = {rv['dm']['p']:.3g} (two-sided, {rv['dm']['dof']} dof).",
        "",
        "## Ablations",
        "",
        "| variant | test MSE | test MAE | Δ MSE vs full | p vs full | method |",
        "|---|---|---|---|---|---|",
    ]
    full = an["ablation"][0]["mse"]
    holm = metrics.holm([row.get("p_vs_full") for row in an["ablation"]])
    for row, p_holm in zip(an["ablation"], holm, strict=True):
        p_full = f"{row['p_vs_full']:.3g}" if "p_vs_full" in row else ""
        if p_full and p_holm is not None and p_holm == p_holm:
            p_full += f" (Holm {p_holm:.3g})"
        lines.append(
            f"| {row['variant']} | {row['mse']:.4f} | {row['mae']:.4f} "
            f"| {row.get('delta', row['mse'] - full):+.4f} "
            f"| {p_full} | {row['method']} |"
        )
    if not timellm_specs(members):
        lines.append(
            "| without timellm | – | – | – | – | not applicable: the run has no timellm member |"
        )
    for row in training:
        if row["status"] == "not run":
            lines.append(f"| {row['description']} | not run | | | | see the command below |")
        else:
            t = row.get("timellm") or {}
            e = row.get("ensemble") or {}
            lines.append(
                f"| {row['description']} | timellm {t.get('mse', float('nan')):.4f}, ensemble "
                f"{e.get('mse', float('nan')):.4f} | timellm {t.get('mae', float('nan')):.4f} | "
                f"{e.get('mse', float('nan')) - full:+.4f} (ensemble) | | sibling run `{row['run']}` |"
            )
    lines += [
        "",
        "Member ablations are computed from this run folder; Δ > 0 means the ensemble is worse "
        "without the member; `p vs full` is the Diebold-Mariano test of that difference "
        "(in brackets Holm's adjustment for the column's tests; the caveats of results.md's "
        "test hold here too). "
        + (
            "Training ablations come from sibling run folders "
            f"`{run.path}-<variant>` (same config, one setting changed; same seed)."
            if timellm_specs(members)
            else "Training ablations change a Time-LLM setting; this run has no timellm "
            "member (add it to --members for them)."
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
