"""Seeds summary of finished run folders: mean ± std over seeds of every forecast they report.

``bench`` tabulates the grid it ran itself; runs started one by one (an acceptance run per
seed, a refit with another router) are summarised here instead. Folders are grouped by
what makes their numbers comparable (dataset, lookback, horizon, features, members,
router and the rest of ``config.yaml``, such as member options; the data file by its
checksum rather than its path, the target as the run resolved it); within a group each
seed counts once, and every forecast a ``results.json`` reports is averaged: the
members, the ensemble, the ``mean``/``median`` references, every combiner the learned
router compared (``combiners``) and the ``oracle`` bound.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ensemble.errors import UserError
from ensemble.io import stored_score

log = logging.getLogger("hybrid_forecast.summary")

_REFERENCES = ("mean", "median")


@dataclass
class Scores:
    """One forecast of a group, per seed [S]."""

    kind: str  # member, ensemble, reference, combiner or bound
    test_mse: np.ndarray
    test_mae: np.ndarray
    val_mse: np.ndarray  # members were only early-stopped on val; combiners fitted on it
    chosen: list[int]  # seeds whose learned router chose this combiner
    # a combiner's mean held-out MSE over the rolling-origin folds inside validation, the
    # score `learned` chose its rule by (NaN for other forecasts and older runs)
    val_cv: np.ndarray = field(default_factory=lambda: np.array([]))


@dataclass
class Group:
    """Run folders whose numbers may be averaged: one per seed."""

    dataset: str
    seq_len: int
    pred_len: int
    features: str
    members: tuple[str, ...]
    router: str
    settings: str  # the rest of config.yaml that changes numbers, e.g. member options
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> results.json
    folders: dict[int, Path] = field(default_factory=dict)  # seed -> run folder

    @property
    def cell(self) -> str:
        return f"{self.dataset} L={self.seq_len} H={self.pred_len} ({self.features})"

    @property
    def title(self) -> str:
        return (
            f"{self.cell}; members {', '.join(self.members)}; router `{self.router}`; "
            + (f"settings {self.settings}; " if self.settings else "")
            + _seeds(sorted(self.runs))
        )

    def forecasts(self) -> dict[str, Scores]:
        """Every forecast's scores over the seeds in order; NaN where a seed's folder lacks
        it (a combiner added by a later version)."""
        seeds = sorted(self.runs)
        names: dict[str, str] = {}
        for res in self.runs.values():
            for n in res["test"]:
                names.setdefault(n, _kind(n, self.members))
            for n in res.get("combiners", {}):
                names.setdefault(n, "combiner")

        def score(split: str, metric: str, name: str, res: dict[str, Any]) -> float:
            if name in res["test"]:
                return stored_score(res[split].get(name, {}).get(metric, np.nan))
            c = res.get("combiners", {}).get(name, {})
            return stored_score(c.get(split, {}).get(metric, np.nan))

        def per_seed(*args: str) -> np.ndarray:
            return np.array([score(*args, self.runs[s]) for s in seeds])

        def cv(name: str) -> np.ndarray:
            return np.array(
                [
                    stored_score(
                        self.runs[s].get("combiners", {}).get(name, {}).get("val_cv", np.nan)
                    )
                    for s in seeds
                ]
            )

        return {
            n: Scores(
                kind,
                test_mse=per_seed("test", "mse", n),
                test_mae=per_seed("test", "mae", n),
                val_mse=per_seed("val", "mse", n),
                chosen=[
                    s for s in seeds if self.runs[s].get("combiners", {}).get(n, {}).get("chosen")
                ],
                val_cv=cv(n),
            )
            for n, kind in names.items()
        }


def _kind(name: str, members: tuple[str, ...]) -> str:
    if name in members:
        return "member"
    if name == "ensemble":
        return "ensemble"
    if name == "oracle":
        return "bound"
    return "reference" if name in _REFERENCES else "combiner"


# config.yaml fields that do not change a run's numbers, or are in the group key already
_NOT_SETTINGS = {
    *("seed", "out", "data_dir"),
    *("dataset", "seq_len", "pred_len", "features", "members", "router"),
}
_DEFAULTS = {"percent": 100}


def _settings(folder: Path, results: dict[str, Any]) -> tuple[list[tuple[str, str]], str | None]:
    """The settings as (sort key, text) pairs, the target left out, and the resolved
    target (None: the default, OT, or not known)."""
    from experiments.member_cache import RUNTIME_PARAMS

    path = folder / "config.yaml"
    cfg: Any = {}
    if path.is_file():
        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is not valid YAML ({exc.__class__.__name__}); rerun that folder"
            ) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("member_params") or {}, dict):
        raise UserError(
            f"{path} is not the config.yaml `hybrid-forecast run` writes; rerun that folder"
        )
    items: list[tuple[str, str]] = []
    for k, v in cfg.items():
        if k in _NOT_SETTINGS or k == "target" or v is None or _DEFAULTS.get(k) == v:
            continue
        if k == "data_path" and _file_known(results):
            continue  # the key has the file's name and checksum: where it lay is no setting
        if k == "member_params":
            if not all(isinstance(ps, dict) for ps in v.values()):
                raise UserError(
                    f"{path}: member_params must map members to settings; rerun that folder"
                )
            # sorted options too: `--set b=1 --set a=2` is the run `--set a=2 --set b=1` is;
            # progress bars, resume and checkpoints change no number: no group of their own
            items += [
                (str(k), f"{m}.{pk}={pv}")
                for m, ps in sorted(v.items(), key=lambda kv: str(kv[0]))
                for pk, pv in sorted(ps.items(), key=lambda kv: str(kv[0]))
                if pk not in RUNTIME_PARAMS
            ]
        else:
            items.append((str(k), f"{k}={v}"))
    # YAML keys may be numbers; stable: member options keep their order
    items.sort(key=lambda kv: kv[0])
    return items, _target(cfg.get("target"), results)


def _file_known(results: dict[str, Any]) -> bool:
    """Whether results.json names the data file by dataset name and SHA-256, which
    `load_groups` puts in the group key (``_file_key``)."""
    data = results.get("data")
    return (
        isinstance(results.get("dataset"), str)
        and isinstance(data, dict)
        and isinstance(data.get("sha256"), str)
        and bool(data["sha256"])
    )


def _file_key(data: Any) -> str:
    """The file's SHA-256 for the group key: any CSV, or another file under a registered
    name (a published file is its dataset's; runs from before the record pool with it)."""
    if not isinstance(data, dict) or not data or data.get("published") is True:
        return ""
    return str(data.get("sha256"))


def _target(written: Any, results: dict[str, Any]) -> str | None:
    """The target the run used: the last evaluated channel (the target is last under M,
    alone under S and MS), else the one config.yaml names; None for OT, the default of
    every file that has it (``--target OT`` runs only on such a file)."""
    channels = results.get("channels")
    if isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels):
        resolved: Any = channels[-1]
    else:
        resolved = written
    return None if resolved is None or str(resolved) == "OT" else str(resolved)


def load_groups(folders: list[str | Path], finished_only: bool = False) -> list[Group]:
    """Read each folder's results.json and group the comparable ones: datasets and setups
    in order of first sight, horizons ascending.

    Args:
        folders: run folders.
        finished_only: leave out the folders without results.json (runs still going, as
            in ``bench/cells/*`` while a bench runs), with a warning naming them.
    """
    if not folders:
        raise UserError("no run folders given: pass folders written by `hybrid-forecast run`")
    unfinished = [str(f) for f in folders if not (Path(f) / "results.json").is_file()]
    if unfinished and not finished_only:
        shown = ", ".join(unfinished[:4]) + (
            f" and {len(unfinished) - 4} more" if len(unfinished) > 4 else ""
        )
        raise UserError(
            f"no results.json in {shown}: pass finished run folders (`hybrid-forecast run ... "
            "--out DIR`), or add --finished-only to leave the unfinished ones out"
        )
    if unfinished:
        log.warning("left out %d unfinished folder(s): %s", len(unfinished), ", ".join(unfinished))
    folders = [f for f in folders if str(f) not in unfinished]
    if not folders:
        raise UserError("none of the folders holds a finished run (results.json)")
    from experiments.analyse import _whole  # analyse refuses such numbers the same way

    groups: dict[tuple, Group] = {}  # (cell, members, router, settings, file sha) -> runs
    for folder in map(Path, folders):
        path = folder / "results.json"
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(res, dict):
                raise TypeError("not a mapping")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise UserError(
                f"{path} is not a results.json of `hybrid-forecast run` ({exc!r}); rerun that folder"
            ) from None
        items, target = _settings(folder, res)  # its own errors name config.yaml
        try:
            data = res.get("data") or {}  # absent before the file's sum was recorded
            name = res["dataset"]
            if data.get("published") is False:  # another file under a registered name
                name = f"{name} (file {str(data.get('sha256'))[:8]})"
            # any CSV: two files of one name (an edited copy) are two groups
            sha = _file_key(data)
            members = res["members"]
            # a hand-edited "members": "naive" was split into letters
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise ValueError("members is not a list of member names")
            if not members or len(set(members)) != len(members):
                raise ValueError("members is empty or names a member twice")
            settings = ", ".join(text for _, text in items)
            # int() read a hand-edited seed 1.7 as seed 1, and true as seed 1
            key = (
                name,
                _whole(res["seq_len"], "seq_len"),
                _whole(res["pred_len"], "pred_len"),
                res.get("features", "M"),
                tuple(members),
                res["router"],
                settings,
            )
            hash(key)  # a list where a name belongs
            seed = _whole(res["seed"], "seed")
            if "ensemble" not in res["test"]:
                raise KeyError("test.ensemble")
            check_scores(res)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(
                f"{path} is not a results.json of `hybrid-forecast run` ({exc!r}); rerun that folder"
            ) from None
        if target is not None:  # shown among the settings, compared as resolved
            settings = ", ".join(
                text
                for _, text in sorted(
                    [*items, ("target", f"target={target}")], key=lambda kv: kv[0]
                )
            )
        group = groups.setdefault((*key, target, sha), Group(*key[:-1], settings))
        if seed in group.runs:
            raise UserError(
                f"{group.folders[seed]} and {folder} are the same run (seed {seed} of "
                f"{group.cell}, same members, router and settings): pass one of them"
            )
        group.runs[seed], group.folders[seed] = res, folder
    # Name the file only where one dataset name covers several files.
    shas: dict[str, set[str]] = {}
    for key, group in groups.items():
        shas.setdefault(group.dataset, set()).add(key[-1])
    for key, group in groups.items():
        if key[-1] and len(shas[group.dataset]) > 1:
            group.dataset = f"{group.dataset} (file {key[-1][:8]})"
    return _ordered(list(groups.values()))


def _ordered(groups: list[Group]) -> list[Group]:
    """``groups`` in the LaTeX table's order: datasets and setups in order of first sight,
    horizons ascending within them (a shell glob gives ``H192`` before ``H24``)."""
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    setups = list(dict.fromkeys(_setup(g) for g in groups))
    return sorted(
        groups,
        key=lambda g: (datasets.index(g.dataset), setups.index(_setup(g)), g.pred_len),
    )


def _setup(g: Group) -> tuple:
    return (g.seq_len, g.features, g.members, g.router, g.settings)


def check_scores(res: dict[str, Any]) -> None:
    """Every score the tables average is a number, the combiners' included (raises
    ValueError, TypeError or AttributeError otherwise)."""
    for part in ("val", "test"):
        for score in res[part].values():
            stored_score(score["mse"])
            stored_score(score.get("mae", np.nan))
    for c in res.get("combiners", {}).values():
        for part in ("val", "test"):
            for metric in ("mse", "mae"):
                stored_score(c.get(part, {}).get(metric, np.nan))
        stored_score(c.get("val_cv", np.nan))


def _cell(values: np.ndarray) -> str:
    """Mean ± sample std over the seeds that have the forecast, saying how many where
    some seed lacks it (a row of one seed read as a mean of all)."""
    v = values[~np.isnan(values)]
    few = f" ({len(v)} of {len(values)} seeds)" if 0 < len(v) < len(values) else ""
    if len(v) == 0:
        return "–"
    if np.isinf(v).any():
        return f"inf (diverged in {int(np.isinf(v).sum())} of {len(v)} seeds){few}"
    if len(v) == 1:
        return f"{v[0]:.4f}{few}"
    if (v == v[0]).all():  # a deterministic forecast: "± 0.0000" would read as precision
        return (
            f"{v[0]:.4f} ({len(v)} of {len(values)} seeds, identical)"
            if few
            else f"{v[0]:.4f} (every seed)"
        )
    std = f"{v.std(ddof=1):.4f}"
    return f"{v.mean():.4f} ± {'<0.0001' if float(std) == 0 else std}{few}"  # not "± 0.0000"


def _dm_line(group: Group, best: list[str | None], seeds: list[int]) -> list[str]:
    """Each seed's Diebold-Mariano p of the ensemble against that seed's best member on
    val: a p of one seed says nothing of training randomness, so all of them side by side."""
    from experiments.report import BEST_ON_VAL, signed_p

    cells = []
    for seed, member in zip(seeds, best, strict=True):
        # an edited block (a list where a mapping belongs): no line, not a traceback
        sig = group.runs[seed].get("significance")
        sig = sig.get("test") if isinstance(sig, dict) else None
        vs = sig.get("ensemble_vs") if isinstance(sig, dict) else None
        test = vs.get(member) if isinstance(vs, dict) and member is not None else None
        try:
            text = signed_p(test) if isinstance(test, dict) else ""
        except (TypeError, ValueError):  # a p or diff that is no number
            text = ""
        if not text:  # a seed without the test: no row of half the seeds
            return []
        cells.append(f"seed {seed} {text}")
    if len(cells) < 2:
        return []
    return [
        "",
        f"Ensemble against each seed's {BEST_ON_VAL} on that seed's test windows "
        f"(two-sided Diebold-Mariano): {'; '.join(cells)}. Read them together, not the "
        "smallest alone; on seasonal data such as ETT each is too small (results.md's caveat).",
    ]


def best_members_on_val(group: Group) -> list[str | None]:
    """Per seed in order, the member a choice by validation takes (`best_member_on_val`,
    as results.md marks it; None where no member has a val MSE): what the ensemble is
    compared with, never the member that turned out best on test."""
    from experiments.report import best_member_on_val

    return [_or_none(best_member_on_val, group.runs[s]) for s in sorted(group.runs)]


def _or_none(f: Callable[[Any], Any], arg: Any) -> Any:
    """``f(arg)``, or None for an edited block it cannot read."""
    try:
        return f(arg)
    except (KeyError, TypeError, AttributeError):
        return None


def _val_sentence(group: Group, fc: dict[str, Scores]) -> str:
    """What the val columns are: the members only early-stopped on the val windows, a
    fitted ensemble and the combiners fitted on them (in-sample); a `mean` or `median`
    router, like those references, was fitted on nothing."""
    text = " On the val windows the members were only early-stopped, while "
    if group.router not in _REFERENCES:
        return (
            text + "the ensemble and the combiners were fitted on them (mean and median were "
            "not): their val MSE is in-sample."
        )
    fitted = any(f.kind == "combiner" for f in fc.values())
    return (
        text + f"the ensemble (the `{group.router}` of the members), like the mean and the "
        "median, was fitted on nothing"
        + ("; the combiners were fitted on them: their val MSE is in-sample." if fitted else ".")
    )


def _against(ens: np.ndarray, other: np.ndarray, what: str, unit: str = " seeds") -> str:
    """'below {what} in 2 of 3 seeds'; of one seed 'below {what}' or 'not below {what}'
    ("in 0 of 1 seeds" reads as a count over seeds)."""
    if len(ens) > 1:
        return f"below {what} in {_below(ens, other)} of {_both(ens, other)}{unit}"
    if not _both(ens, other):
        return f"not comparable with {what} (no score)"
    return f"{'' if _below(ens, other) else 'not '}below {what}"


def group_markdown(group: Group) -> str:
    """One table: a row per forecast, members first (in the order the run lists them), then
    the ensemble, the references, the other combiners and the oracle bound (each in order
    of first sight: no row is ranked by its test score); then the issue-6 style counts
    against each seed's best member on val."""
    from experiments.report import BEST_ON_VAL

    fc = group.forecasts()
    order = {"member": 0, "ensemble": 1, "reference": 2, "combiner": 3, "bound": 4}
    listed = {n: i for i, n in enumerate(group.members)}
    # stable: first sight within a kind; the members in the run's own order
    names = sorted(fc, key=lambda n: (order[fc[n].kind], listed.get(n, 0)))
    seeds = sorted(group.runs)
    # the rolling-origin score, where some seed's learned router reported it
    has_cv = any((~np.isnan(f.val_cv)).any() for f in fc.values())
    lines = [
        f"## {group.title}",
        "",
        (
            "MSE and MAE in the scaled space, mean ± sample std (ddof=1) over seeds: the "
            "spread from training randomness only, not the test sample's uncertainty, which "
            "each seed's Diebold-Mariano tests (results.md) measure for its own fitted models."
            if len(seeds) > 1
            # a single seed has no std: "over seeds" would read as an average
            else f"MSE and MAE in the scaled space, of one seed ({seeds[0]}): no spread over "
            "seeds (runs with other --seed values give one); the test sample's uncertainty "
            "is what its Diebold-Mariano tests (results.md) measure."
        )
        + _val_sentence(group, fc)
        + (
            " Val CV MSE: a combiner's mean MSE on the held-out windows of the rolling-origin "
            "folds inside validation, fitted on the windows before them: the out-of-sample "
            "score `learned` chose its rule by."
            if has_cv
            else ""
        ),
        "",
        "| forecast | kind | test MSE | test MAE | val MSE | "
        + ("val CV MSE (held out) | " if has_cv else "")
        + "test MSE per seed ("
        + ", ".join(map(str, seeds))
        + ") |",
        "|---|---|---|---|---|" + ("---|" if has_cv else "") + "---|",
    ]
    for n in names:
        f = fc[n]
        label = f"ensemble (`{group.router}`)" if n == "ensemble" else n
        if f.chosen:
            label += f" (chosen in {_seeds(f.chosen)})"
        per_seed = " / ".join("–" if np.isnan(x) else f"{x:.4f}" for x in f.test_mse)
        lines.append(
            f"| {label} | {f.kind} | {_cell(f.test_mse)} | {_cell(f.test_mae)} | "
            f"{_cell(f.val_mse)} | " + (f"{_cell(f.val_cv)} | " if has_cv else "") + f"{per_seed} |"
        )
    if any(fc[n].kind == "member" for n in names):
        # each seed's member chosen on val, never on test (report.best_member_on_val)
        best = best_members_on_val(group)
        best_test = np.array(
            [fc[m].test_mse[i] if m is not None and m in fc else np.nan for i, m in enumerate(best)]
        )
        ens = fc["ensemble"].test_mse
        # the `mean` router's ensemble is the mean: no comparison with itself
        mean = fc["mean"].test_mse if "mean" in fc and group.router != "mean" else None
        shown = ", ".join(m or "none" for m in best)
        what = f"its {BEST_ON_VAL} ({shown})" if len(seeds) == 1 else f"its {BEST_ON_VAL}"
        # and the stricter bar, the member that turned out best on test (in hindsight: no
        # one could have chosen it; issue 6's "below its best member" is this one)
        members = [n for n in names if fc[n].kind == "member"]
        by_seed = np.stack([fc[m].test_mse for m in members])  # [M, S]
        finite = np.where(np.isnan(by_seed), np.inf, by_seed)
        hind = np.where(np.isinf(finite.min(axis=0)), np.nan, finite.min(axis=0))
        hind_what = "the best member on test (hindsight)"
        if len(seeds) == 1 and np.isfinite(hind[0]):
            hind_what = (
                f"the best member on test ({members[int(finite[:, 0].argmin())]}, hindsight)"
            )
        lines += [
            "",
            f"On test, the ensemble is {_against(ens, best_test, what)}"
            + (f" ({BEST_ON_VAL} per seed: {shown})" if len(seeds) > 1 else "")
            + f", {_against(ens, hind, hind_what, '')}"
            + (f" and {_against(ens, mean, 'the mean', '')}." if mean is not None else "."),
        ]
        lines += _dm_line(group, best, seeds)
    lines += _machines_line(group) + code_line(group) + still_improving_line(group)
    lines += _below_baseline_line(group)
    return "\n".join(lines) + "\n"


def _seeds(seeds: list[int]) -> str:
    """'seed 0' or 'seeds 0, 1, 2'."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _below(a: np.ndarray, b: np.ndarray) -> int:
    """How many seeds have ``a`` below ``b``; equal forecasts scored by different sums
    (a one-member mean) differ in the last bits, and that is a tie, not a win."""
    return int(np.sum(a < b - 1e-9 * np.abs(b)))


def _both(a: np.ndarray, b: np.ndarray) -> int:
    """How many seeds have both ``a`` and ``b`` (a forecast an older version of a run did
    not report cannot be beaten there): the count ``_below`` is out of."""
    return int(np.sum(~np.isnan(a) & ~np.isnan(b)))


def _machine(res: dict[str, Any]) -> str:
    """'torch 2.13.0+cpu on the CPU', from results.json's environment (not before it)."""
    env = res.get("environment")
    if not isinstance(env, dict):
        return "not recorded"
    gpus, packages = env.get("gpus") or [], env.get("packages")
    if not isinstance(gpus, list) or not isinstance(packages, dict | None):
        return "not recorded"  # an edited block: no setup to compare, not a crash
    where = ", ".join(sorted({str(g) for g in gpus})) if gpus else "the CPU"
    return f"torch {(packages or {}).get('torch')} on {where}"


def _machines_line(group: Group) -> list[str]:
    """A line when the seeds ran on different hardware or torch versions: their spread
    is then partly the machine's, not only the seed's."""
    seen = {seed: _machine(res) for seed, res in sorted(group.runs.items())}
    if len(set(seen.values())) < 2:
        return []
    listed = "; ".join(f"seed {seed}: {m}" for seed, m in seen.items())
    return [
        "",
        f"The seeds did not all run on one setup ({listed}): part of their spread may be "
        "the machine's.",
    ]


CHANGED_DURING = "code changed during this seed's run"


def code_text(res: dict[str, Any]) -> str:
    """'commit 42662df' ('..., modified', '... (edits 3f2a91c0)' where the run recorded
    the hash of its uncommitted edits, '..., code changed during this seed's run'), from
    results.json's environment."""
    code = _code_record(res)
    changed = f", {CHANGED_DURING}" if changed_during_run(res) else ""
    if code is None:
        return "not recorded" + changed
    edits = _edits(code)
    return (
        f"commit {str(code['commit'])[:7]}"
        + (", modified" if code.get("modified") else "")
        + (f" (edits {edits[:8]})" if edits else "")
        + changed
    )


def _code_record(res: dict[str, Any]) -> dict[str, Any] | None:
    """results.json's ``environment.code`` where it names a commit, else None."""
    env = res.get("environment")
    code = env.get("code") if isinstance(env, dict) else None
    return code if isinstance(code, dict) and code.get("commit") else None


def changed_during_run(res: dict[str, Any]) -> bool:
    """Whether `run` found the checkout's code other at the run's end than at its start
    (results.json's ``environment.code_at_end``): a module imported after the change may
    be the new code, so the seed's numbers are of no one commit."""
    env = res.get("environment")
    return isinstance(env, dict) and env.get("code_at_end") is not None


def _edits(code: dict[str, Any]) -> str | None:
    """The recorded edits of a code record: ``diff``, the hash of the uncommitted changes to
    the code paths ("" for none), or "" for a checkout recorded as unmodified before the
    hash was; None where edits were made but not recorded (unknown)."""
    diff = code.get("diff")
    if isinstance(diff, str):
        return diff
    return "" if code.get("modified") is False else None


def _same_code(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two seeds' results ran the same code of this package: the same code tree
    (else commit) and the same uncommitted edits. Edits not recorded (results from before
    their hash) compare by commit and "modified" alone, as they always did: unknown is no
    alarm."""
    ca, cb = _code_record(a), _code_record(b)
    if ca is None or cb is None:  # "not recorded" is one code with itself
        return ca is None and cb is None
    ea, eb = _edits(ca), _edits(cb)
    if ea is None or eb is None:  # edits of unknown content: their commit and flag
        return (ca["commit"], bool(ca.get("modified"))) == (cb["commit"], bool(cb.get("modified")))
    trees = (ca.get("tree"), cb.get("tree"))
    # two commits of one tree (docs-only between them) with the same edits: the same code
    if all(isinstance(t, str) for t in trees):
        return trees[0] == trees[1] and ea == eb
    return ca["commit"] == cb["commit"] and ea == eb


def different_code(group: Group) -> dict[int, str]:
    """Seed -> its code ('commit 42662df', 'not recorded') where the seeds ran different
    code of this package, or a seed's code changed during its run, else {}: a change
    between them may move the numbers, not only the seed (runs before the record count
    as different too). Where every seed recorded its code tree (the hash of the package's
    code folders), seeds whose commits differ only outside them (docs, tests) ran the same
    code; seeds with uncommitted edits are the same code only where the hashes of their
    edits (``diff``) are equal."""
    if not seeds_differ(group) and not any(map(changed_during_run, group.runs.values())):
        return {}
    return {seed: code_text(res) for seed, res in sorted(group.runs.items())}


def seeds_differ(group: Group) -> bool:
    """Whether two of the seeds ran different code of this package (`_same_code`), whether
    or not the code changed during a seed's run."""
    runs = [res for _, res in sorted(group.runs.items())]
    # every pair: "unknown edits" matches others that do not match one another
    return not all(_same_code(a, b) for a, b in itertools.combinations(runs, 2))


def code_line(group: Group) -> list[str]:
    """A line when the seeds ran different code of this package, or one seed's code
    changed during its run (`different_code`)."""
    seen = different_code(group)
    if not seen:
        return []
    listed = "; ".join(f"seed {seed}: {c}" for seed, c in seen.items())
    if len(seen) == 1:  # one seed: its code changed while it ran
        return [
            "",
            f"The hybrid-forecast code changed during this seed's run ({listed}): a module "
            "imported after the change may be the new code; rerun it to be sure of its numbers.",
        ]
    return [
        "",
        f"The seeds ran different hybrid-forecast code ({listed}): a change between them, "
        "or during a seed's run, may move the numbers.",
    ]


def members_still_improving(res: dict[str, Any]) -> list[str]:
    """The members of one run whose val MSE was still falling at their last epoch
    (results.json's ``training``): their numbers may understate them."""
    from experiments.report import still_improving

    training = res.get("training")
    return [
        spec
        for spec, curve in (training if isinstance(training, dict) else {}).items()
        if _or_false(still_improving, curve)
    ]


def still_improving_seeds(group: Group) -> dict[str, list[int]]:
    """Member -> the seeds in which it was still improving at its last epoch."""
    return _members_seeds(group, members_still_improving)


def still_improving_line(group: Group) -> list[str]:
    """A line naming the members whose val MSE was still falling at their last epoch:
    their numbers may understate them."""
    return _members_line(
        group,
        members_still_improving,
        "Still improving at their last epoch (more epochs or a higher learning rate may do better)",
    )


def _below_baseline_line(group: Group) -> list[str]:
    """A line naming the members whose val MSE was above the run's naive baseline (a
    forecast that only repeats the input): not yet models of the series."""
    from experiments.report import below_baseline

    return _members_line(
        group,
        lambda res: _or_false(below_baseline, res) or [],
        "**Above the naive baseline on validation** (a forecast that only repeats the "
        "input; not yet a model of the series, so comparisons with it say nothing)",
    )


def _or_false(f: Callable[[Any], Any], arg: Any) -> Any:
    """``f(arg)``, or False for an edited block it cannot read: nothing to say, not a crash."""
    try:
        return f(arg)
    except (KeyError, TypeError, AttributeError):
        return False


def _members_line(
    group: Group, pick: Callable[[dict[str, Any]], list[str]], text: str
) -> list[str]:
    """``text: m in seeds ...`` for the members ``pick`` names in each seed's results."""
    seeds = _members_seeds(group, pick)
    if not seeds:
        return []
    return ["", f"{text}: {'; '.join(f'{s} in {_seeds(v)}' for s, v in seeds.items())}."]


def _members_seeds(
    group: Group, pick: Callable[[dict[str, Any]], list[str]]
) -> dict[str, list[int]]:
    """Member -> the seeds whose results ``pick`` names it in."""
    seeds: dict[str, list[int]] = {}
    for seed, res in sorted(group.runs.items()):
        for spec in pick(res):
            seeds.setdefault(spec, []).append(seed)
    return seeds


def summary_markdown(groups: list[Group]) -> str:
    return "# Seeds summary\n\n" + "\n".join(group_markdown(g) for g in groups)


def summary_json(groups: list[Group]) -> list[dict[str, Any]]:
    """Per group its setup and, per forecast, the scores of each seed in seed order.

    A score list holds a number per seed, ``null`` where that seed's folder lacks the
    forecast (a combiner of a later version), and the string ``"inf"`` where the seed's
    error overflowed (diverged; results.json stores it as null): strict JSON, which has
    no Infinity, and never read as a missing forecast.
    """
    out = []
    for g in groups:
        fc = g.forecasts()
        out.append(
            {
                "dataset": g.dataset,
                "settings": g.settings,
                "seq_len": g.seq_len,
                "pred_len": g.pred_len,
                "features": g.features,
                "members": list(g.members),
                "router": g.router,
                "seeds": sorted(g.runs),
                # per seed, the member a choice by validation takes (what the ensemble is
                # compared with; null: no member has a val MSE), never the best on test
                "best_member_on_val": best_members_on_val(g),
                # per seed, whether its code changed while it ran (``code_at_end``)
                "code_changed_during_run": [changed_during_run(g.runs[s]) for s in sorted(g.runs)],
                "forecasts": {
                    n: {
                        "kind": f.kind,
                        "test_mse": _listed(f.test_mse),
                        "test_mae": _listed(f.test_mae),
                        "val_mse": _listed(f.val_mse),
                        # held-out MSE of the rolling-origin folds inside validation, the
                        # score `learned` chose by (null: not a combiner it compared)
                        "val_cv_mse": _listed(f.val_cv),
                        "chosen_in_seeds": f.chosen,
                    }
                    for n, f in fc.items()
                },
            }
        )
    return out


def _listed(values: np.ndarray) -> list[float | str | None]:
    return [None if np.isnan(v) else "inf" if np.isinf(v) else float(v) for v in values]
