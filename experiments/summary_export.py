"""Thesis-ready exports of a seeds summary: a LaTeX table and a tidy CSV.

``summary --latex`` writes the table shape of the long-term forecasting papers (Time-LLM's
Table 1, DLinear's Table 2): a row per dataset and horizon, a column pair (MSE, MAE) per
forecast, the lowest in each row and metric in bold and the second lowest underlined,
compared at the printed precision so that a tie is shown as a tie. Each cell is the mean
over seeds with the sample standard deviation beside it; the seeds and the command that
wrote the table are in its caption and header, so the numbers carry their provenance into
the thesis. ``summary --csv`` writes one row per forecast and seed, for plots and tests of
one's own (pandas, R, a spreadsheet).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble.errors import UserError
from experiments.summary import (
    CHANGED_DURING,
    Group,
    changed_during_run,
    seeds_differ,
    still_improving_seeds,
)

_ORDER = {"member": 0, "ensemble": 1, "reference": 2, "combiner": 3, "bound": 4}
_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``exchange_rate`` -> ``exchange\\_rate``)."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def available(groups: Sequence[Group]) -> dict[str, str]:
    """Every forecast some group reports with its kind, members first, then the ensemble,
    the references, the combiners and the bound (first sight within a kind)."""
    kinds: dict[str, str] = {}
    for g in groups:
        for name, f in g.forecasts().items():
            kinds.setdefault(name, f.kind)
    order = sorted(kinds, key=lambda n: _ORDER[kinds[n]])  # stable: first sight within a kind
    return {n: kinds[n] for n in order}


def choose(groups: Sequence[Group], forecasts: Sequence[str] | None) -> list[str]:
    """The forecasts to show: ``forecasts`` in its order (each must be reported by some
    group), or by default the members, the ensemble and the mean (not when the router of
    every group is the mean: it would repeat the ensemble's column).

    Raises:
        UserError: a name no group reports.
    """
    names = available(groups)
    if forecasts is None:
        # the mean as a reference column, unless it is the ensemble of every row
        mean = any(g.router != "mean" for g in groups)
        return [
            n for n, k in names.items() if k in ("member", "ensemble") or (n == "mean" and mean)
        ]
    unknown = [n for n in forecasts if n not in names]
    if unknown:
        raise UserError(
            f"--forecasts: {', '.join(unknown)} not in these runs; they report {', '.join(names)}"
        )
    if len(set(forecasts)) < len(forecasts):
        raise UserError("--forecasts names a forecast twice; give each once")
    return list(forecasts)


# What a row's setup is made of besides its dataset and horizon, and how it is written.
_SETUP = {
    "seq_len": lambda g: f"L={g.seq_len}",
    "features": lambda g: f"features {g.features}",
    "members": lambda g: "members " + "+".join(g.members),
    "router": lambda g: f"router {g.router}",
    "settings": lambda g: g.settings,
}


_SETUP_WIDTH = 32  # characters of a setup written in its column, not in the caption


@dataclass
class _Row:
    dataset: str
    horizon: str  # "96", or "Avg" for the mean over a setup's horizons
    setup: str  # what sets this row apart from the others (empty when nothing does)
    seeds: str  # the seeds the cells average, "0,1,2" (empty for Avg rows)
    mse: dict[str, np.ndarray]  # forecast -> per-seed (or per-horizon, for Avg) values
    mae: dict[str, np.ndarray]
    spread: bool  # whether a cell shows ± the sample std (not for Avg rows)


def _rows(groups: Sequence[Group], names: list[str]) -> tuple[list[_Row], list[str]]:
    """The table's rows (datasets in order of first sight, then setups, then horizons
    ascending, then an Avg row for a setup with several horizons) and the setup fields that
    vary between groups (the others go into the caption)."""
    varying = [k for k, f in _SETUP.items() if len({f(g) for g in groups}) > 1]

    def setup(g: Group) -> str:
        return _setup_text(g, varying)

    rows: list[_Row] = []
    for ds in dict.fromkeys(g.dataset for g in groups):
        mine = [g for g in groups if g.dataset == ds]
        for su in dict.fromkeys(setup(g) for g in mine):
            block = sorted((g for g in mine if setup(g) == su), key=lambda g: g.pred_len)
            for g in block:
                fc = g.forecasts()
                absent = np.full(len(g.runs), np.nan)
                mse = {n: fc[n].test_mse if n in fc else absent for n in names}
                mae = {n: fc[n].test_mae if n in fc else absent for n in names}
                seeds = ",".join(map(str, sorted(g.runs)))
                rows.append(_Row(ds, str(g.pred_len), su, seeds, mse, mae, True))
            # an average over horizons only of the same seeds: else it would mix seeds
            if len(block) > 1 and len({tuple(sorted(g.runs)) for g in block}) == 1:
                # per horizon, the mean over seeds; a forecast missing at one horizon or
                # in one seed has no average (the NaN propagates)
                part = rows[-len(block) :]
                mse = {n: np.array([np.mean(r.mse[n]) for r in part]) for n in names}
                mae = {n: np.array([np.mean(r.mae[n]) for r in part]) for n in names}
                rows.append(_Row(ds, "Avg", su, "", mse, mae, False))
    return rows, varying


def _setup_text(g: Group, varying: list[str]) -> str:
    """The fields of ``g``'s setup that vary between the table's groups, as its column has them."""
    return ", ".join(p for p in (_SETUP[k](g) for k in varying) if p) or "default settings"


def _means(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Per forecast: the mean over the row's seeds (an Avg row: over its horizons); NaN,
    shown as --, where one of them lacks the forecast (a combiner an older version of a
    run did not report), rather than a mean over fewer seeds than the row states."""
    return {n: float(np.mean(v)) for n, v in values.items()}


def _marks(means: dict[str, float], digits: int) -> dict[str, str]:
    """'best' for the lowest printed value (a tie: all of them), 'second' for the next
    one when a single forecast is best (two tied for best leave no second place)."""
    printed = {n: float(f"{m:.{digits}f}") for n, m in means.items() if not np.isnan(m)}
    if len(printed) < 2:
        return {}
    levels = sorted(set(printed.values()))
    best = [n for n, p in printed.items() if p == levels[0]]
    marks = dict.fromkeys(best, "best")
    if len(best) == 1 and len(levels) > 1 and len(printed) > 2:
        marks |= {n: "second" for n, p in printed.items() if p == levels[1]}
    return marks


def _above_baseline(groups: list[Group], names: list[str]) -> list[str]:
    """The shown forecasts whose val MSE was above their run's naive baseline in a seed."""
    from experiments.report import below_baseline

    found = {m for g in groups for res in g.runs.values() for m in below_baseline(res)}
    return [n for n in names if n in found]


# TimeLLMForecaster's defaults of what the caption names (a test holds them to its
# signature: importing it here would import torch for a table)
TIMELLM_DEFAULTS = {"backbone": "minilm", "llm_layers": 6}
_BACKBONE_NAMES = {"minilm": "all-MiniLM-L6-v2"}  # the embedded model's own name


def _timellm_setting(folder: Path, spec: str, key: str) -> Any:
    """A timellm member's ``key`` as its run had it: the spec's own ``@key=value``, else
    config.yaml's member_params (``--set``), else TimeLLMForecaster's default."""
    import yaml

    from experiments.registry import parse_spec

    base, own = parse_spec(spec)
    if key in own:
        return own[key]
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        shared = (cfg.get("member_params") or {}).get(base) or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):  # no config: the defaults
        shared = {}
    if not isinstance(shared, dict) or key not in shared:
        return TIMELLM_DEFAULTS[key]
    # llm_layers: null is "all layers", not the default 6; a null backbone is the default
    value = shared[key]
    return TIMELLM_DEFAULTS[key] if value is None and key != "llm_layers" else value


def backbone_text(backbone: Any, layers: Any) -> str:
    """``Time-LLM over all-MiniLM-L6-v2, 6 layers``: the backbone by its model's name (a
    folder by its last part), its layers (null: all of them)."""
    name = str(backbone)
    if name == "none":
        return "Time-LLM without a language model (backbone none)"
    path = name.rstrip("/\\")
    if path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1:
        path = Path(path.replace("\\", "/")).name or name  # a folder: its model's name
    shown = _BACKBONE_NAMES.get(name, path)
    if name.endswith("-random"):
        shown += " (random weights)"
    count = "all layers" if layers is None else f"{layers} layer{'s' if layers != 1 else ''}"
    return f"Time-LLM over {shown}, {count}"


def timellm_backbones(groups: Sequence[Group], names: Sequence[str]) -> dict[str, list[str]]:
    """Per shown Time-LLM column, its backbone and layers as the runs had them (several
    where the rows' runs differ): a column headed "timellm" reads as the paper's
    LLaMA-7B model, whatever the runs used."""
    from experiments.registry import parse_spec

    said: dict[str, list[str]] = {}
    for n in names:
        try:
            if parse_spec(n)[0] != "timellm":
                continue
        except UserError:  # a hand-edited name: no member
            continue
        for g in groups:
            if n not in g.members:
                continue
            for seed in sorted(g.runs):
                folder = g.folders[seed]
                text = backbone_text(
                    _timellm_setting(folder, n, "backbone"),
                    _timellm_setting(folder, n, "llm_layers"),
                )
                said.setdefault(n, [])
                if text not in said[n]:
                    said[n].append(text)
    return said


def _row_name(g: Group, setup: str = "") -> str:
    """``ETTh1 H=24``, with the row's setup where rows of one cell differ in it:
    ``ETTh1 H=24 [router mean]``, or its letter, ``ETTh1 H=24 (1)``."""
    if setup and not setup.startswith("("):
        setup = f"[{setup}]"
    return f"{g.dataset} H={g.pred_len}" + (f" {setup}" if setup else "")


def _caption_notes(
    groups: Sequence[Group], names: Sequence[str], setups: dict[int, str] | None = None
) -> str:
    """The caption's sentences on what the numbers are made of: each Time-LLM column's
    backbone and layers, the members still improving at their last epoch, the rows whose
    seeds ran different code and the seeds whose code changed during their run
    (`summary`'s warnings, which a table copied into a thesis would otherwise lose).

    Args:
        setups: ``id(group)`` -> its setup as the table writes it (its column, or its
            letter), for rows that share a dataset and horizon; none: the rows differ in
            those.
    """

    def row(g: Group) -> str:
        return _row_name(g, (setups or {}).get(id(g), ""))

    notes = []
    for n, texts in timellm_backbones(groups, names).items():
        notes.append(f"{n}: {'; or '.join(texts)}{' (by row)' if len(texts) > 1 else ''}.")
    improving: dict[str, list[str]] = {}
    for g in groups:
        for member, seeds in still_improving_seeds(g).items():
            some = "" if len(seeds) == len(g.runs) else f" seed{'s' * (len(seeds) > 1)} "
            some += ", ".join(map(str, seeds)) if some else ""  # not every seed: which
            improving.setdefault(member, []).append(row(g) + some)
    if improving:
        listed = "; ".join(f"{m} ({', '.join(rows)})" for m, rows in improving.items())
        notes.append(f"Still improving at the last epoch (more epochs may do better): {listed}.")
    # seeds of other code; a seed whose code changed while it ran is said on its own
    changed = {id(g): [s for s in sorted(g.runs) if changed_during_run(g.runs[s])] for g in groups}
    differ = [row(g) for g in groups if seeds_differ(g)]
    if differ:
        notes.append(
            f"The seeds of {', '.join(dict.fromkeys(differ))} ran different hybrid-forecast "
            "code: a change between them may move the numbers."
        )
    during = [f"{row(g)} {_seed_list(changed[id(g)])}" for g in groups if changed[id(g)]]
    if during:
        notes.append(
            f"{CHANGED_DURING[0].upper()}{CHANGED_DURING[1:]} ({'; '.join(during)}): a "
            "module imported after the change may be the new code."
        )
    return "".join(f" {tex(note)}" for note in notes)


def _seed_list(seeds: list[int]) -> str:
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"


_DIVERGED = r"inf$^\dagger$"  # the caption's note says what the dagger means


def _tex_cell(values: np.ndarray, mean: float, mark: str | None, digits: int, spread: bool) -> str:
    if np.isnan(mean):
        return "--"
    if np.isinf(mean):  # a diverged seed (or horizon, in an Avg row): no number to rank
        return _DIVERGED
    text = f"{mean:.{digits}f}"
    text = {"best": rf"\textbf{{{text}}}", "second": rf"\underline{{{text}}}"}.get(mark, text)
    v = values[~np.isnan(values)]
    # the same in every seed: no ± (the caption says so)
    if spread and len(v) > 1 and not (v == v[0]).all():
        pm, std = r"$\pm$", f"{v.std(ddof=1):.{digits}f}"
        if float(std) == 0:  # a spread below the digits: "±0.000" would read as none
            # `<` in math: in text mode the OT1 font prints it as an inverted `!`
            pm, std = r"$\pm{<}$", f"{10.0**-digits:.{digits}f}"
        text += rf"{{\scriptsize{pm}{std}}}"
    return text


def summary_latex(
    groups: Sequence[Group],
    forecasts: Sequence[str] | None = None,
    digits: int = 3,
    command: str | None = None,
    label: str = "tab:hybrid-forecast",
) -> str:
    """A booktabs table of test MSE and MAE: a row per dataset, setup and horizon (and an
    Avg row per setup with several horizons), a column pair per forecast.

    Args:
        groups: from `experiments.summary.load_groups`.
        forecasts: the columns, in order; default: members, ensemble, mean.
        digits: decimals printed; bold and underline compare the printed values.
        command: the command that wrote the table, for its header comment.
        label: the table's \\label key.
    """
    names = choose(groups, forecasts)
    kinds = available(groups)
    rows, varying = _rows(groups, names)
    routers = {g.router for g in groups}
    labels = [
        f"ensemble ({next(iter(routers))})" if n == "ensemble" and len(routers) == 1 else n
        for n in names
    ]
    seeds = {tuple(sorted(g.runs)) for g in groups}
    (only,) = seeds if len(seeds) == 1 else [()]
    spread_note = (
        "the spread over training seeds only, not the test sample's uncertainty; none "
        "where every seed gives the same score"
    )
    several = any(len(g.runs) > 1 for g in groups)  # a row of one seed is no mean
    if len(only) == 1:
        over = f"seed {only[0]}"
    elif only:
        over = (
            f"mean $\\pm$ sample standard deviation over seeds {', '.join(map(str, only))} "
            f"($\\pm$: {spread_note})"
        )
    else:  # one parenthetical, not two in a row
        over = (
            "mean over the seeds of each row ($\\pm$: the sample standard deviation where "
            f"it has several, {spread_note})"
        )
    shared = ", ".join(p for k, f in _SETUP.items() if k not in varying if (p := f(groups[0])))
    # long setups (member settings) would make a column wider than the scores: a letter
    # in the column and the setups spelled out in the caption instead
    setups = list(dict.fromkeys(r.setup for r in rows))
    short = {su: su for su in setups}
    if any(len(su) > _SETUP_WIDTH for su in setups):
        short = {su: f"({i})" for i, su in enumerate(setups, 1)}
        shared = "; ".join([shared] * bool(shared) + [f"{short[su]} {su}" for su in setups])
    # a caption note naming a row names its setup too where its cell has several
    cells = Counter((g.dataset, g.pred_len) for g in groups)
    cell_setups = {
        id(g): short[_setup_text(g, varying)] for g in groups if cells[g.dataset, g.pred_len] > 1
    }
    per_row = len(seeds) > 1  # the seeds differ between rows: a column says which
    lead = ["Dataset", "$H$"] + (["Setup"] if varying else []) + (["Seeds"] if per_row else [])
    head = [
        "% " + (f"written by: {command}" if command else "written by hybrid-forecast summary"),
        r"% needs \usepackage{booktabs} and \usepackage{graphicx}",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Test MSE and MAE in the scaled space, "
        + over
        + f". Lower is better: the lowest{' mean' if several else ''} in bold, the second "
        "lowest underlined"
        # a bound is never marked (below): a reader would look for the bold under it
        + "".join(f", the {tex(n)} bound excepted" for n in names if kinds[n] == "bound")
        + " (not a test of significance)."
        + (f" {tex(shared)}." if shared else "")
        + (" Avg: mean over the horizons." if any(r.horizon == "Avg" for r in rows) else "")
        + (
            " $^\\dagger$: diverged (an error that overflowed) in a seed, or for Avg at one "
            "of the horizons."
            if any(np.isinf(v).any() for r in rows for m in (r.mse, r.mae) for v in m.values())
            else ""
        )
        + (
            f" {tex(', '.join(weak))}: val MSE above a forecast that only repeats the input "
            "in some seed (not yet a model of the series)."
            if (weak := _above_baseline(groups, names))
            else ""
        )
        + _caption_notes(groups, names, cell_setups)
        + "}",
        rf"\label{{{label}}}",
        # shrunk to the text width when wider, never blown up when narrower
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{" + "l" * len(lead) + " cc" * len(names) + "}",
        r"\toprule",
        " & " * (len(lead) - 1)
        + "".join(rf" & \multicolumn{{2}}{{c}}{{{tex(lb)}}}" for lb in labels)
        + r" \\",
        " ".join(
            rf"\cmidrule(lr){{{len(lead) + 2 * i + 1}-{len(lead) + 2 * i + 2}}}"
            for i in range(len(names))
        ),
        " & ".join(lead + ["MSE", "MAE"] * len(names)) + r" \\",
        r"\midrule",
    ]
    body = []
    for i, r in enumerate(rows):
        if i and r.dataset != rows[i - 1].dataset:
            body.append(r"\midrule")
        cells = [tex(r.dataset), r.horizon] + ([tex(short[r.setup])] if varying else [])
        cells += [r.seeds] if per_row else []
        means = {m: _means(getattr(r, m)) for m in ("mse", "mae")}
        # a bound (the oracle) is no forecast one could have made: it never takes a mark
        ranked = {m: {n: v for n, v in means[m].items() if kinds[n] != "bound"} for m in means}
        marks = {m: _marks(ranked[m], digits) for m in ("mse", "mae")}
        for n in names:
            for m in ("mse", "mae"):
                values = getattr(r, m)[n]
                cells.append(_tex_cell(values, means[m][n], marks[m].get(n), digits, r.spread))
        body.append(" & ".join(cells) + r" \\")
    tail = [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(head + body + tail) + "\n"


def summary_csv(groups: Sequence[Group], forecasts: Sequence[str] | None = None) -> str:
    """One row per group, forecast and seed that reports it: the setup, the scores (a
    combiner's val MSE may be empty; ``val_cv_mse``, the held-out MSE of the rolling-origin
    folds inside validation that `learned` chose its rule by, is empty but for the
    combiners it compared), whether the learned router chose it, and the folder."""
    names = list(available(groups)) if forecasts is None else choose(groups, forecasts)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["dataset", "seq_len", "pred_len", "features", "members", "router", "settings",
         "forecast", "kind", "seed", "test_mse", "test_mae", "val_mse", "val_cv_mse", "chosen",
         "folder"]
    )  # fmt: skip
    for g in groups:
        fc = g.forecasts()
        for n in (n for n in names if n in fc):
            f = fc[n]
            for i, seed in enumerate(sorted(g.runs)):
                scores = (f.test_mse[i], f.test_mae[i], f.val_mse[i], f.val_cv[i])
                if np.isnan(scores).all():
                    continue  # this seed's folder does not report it (an older version)
                w.writerow(
                    [g.dataset, g.seq_len, g.pred_len, g.features, "+".join(g.members),
                     g.router, g.settings, n, f.kind, seed,
                     *("" if np.isnan(x) else repr(float(x)) for x in scores),
                     seed in f.chosen, g.folders[seed]]
                )  # fmt: skip
    return buf.getvalue()
