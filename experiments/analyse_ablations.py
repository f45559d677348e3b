"""Ablations of a run's routing report: what each member and each Time-LLM setting adds.

Dropping a member is computed from the run folder itself: the run's router refitted on
the remaining members' validation forecasts (and, for routers that read features, on
features recomputed for those members); without the data, the router's own weights
renormalised over the remaining members. Ablations that need another training (Time-LLM
without the LLM, without its prompt, with or without prompt injection, fixed patch 16,
period-derived patches) are read from sibling run folders ``<RUN_DIR>-<variant>`` (or
``--ablation-runs VARIANT=DIR``), checked to be the same experiment, and otherwise listed
as not run, with the command that produces them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ensemble import hybrid, metrics
from ensemble.errors import UserError
from experiments import shell

if TYPE_CHECKING:
    from experiments.analyse import RefitInputs, RunData

log = logging.getLogger("hybrid_forecast.analyse")


# Variants that need their own training run: name -> (description, --set items).
# ``{patch}`` / ``{stride}`` are filled with the period-derived patch of the run.
ABLATION_VARIANTS: dict[str, tuple[str, list[str]]] = {
    "no-llm": (
        "Time-LLM without the LLM (patch embedding + linear head; Tan et al. 2024)",
        ["timellm.backbone=none"],
    ),
    "no-prompt": (
        "Time-LLM without the prompt prefix (only the reprogrammed patches)",
        ["timellm.prompt=none"],
    ),
    "no-inject": (
        "Time-LLM without prompt injection of classical forecasts",
        ["timellm.inject=none"],
    ),
    "inject": (
        "Time-LLM with the ridge forecast injected into the prompt",
        ["timellm.inject=ridge"],
    ),
    "patch16": (
        "Time-LLM with the fixed patch 16 / stride 8",
        ["timellm.patch_len=16", "timellm.stride=8"],
    ),
    "period-patch": (
        "Time-LLM with period-derived patches",
        ["timellm.patch_len={patch}", "timellm.stride={stride}"],
    ),
}


def check_ablation_runs(run: RunData, ablation_runs: dict[str, str]) -> dict[str, Path]:
    """The ``--ablation-runs`` folders, checked before any work: known variants, finished
    runs, undamaged and of the same experiment (sibling ``RUN-<variant>`` folders too).

    Raises:
        UserError: naming the variant or folder at fault.
    """
    unknown = set(ablation_runs) - set(ABLATION_VARIANTS)
    if unknown:
        raise UserError(
            f"unknown ablation variant(s) {', '.join(sorted(unknown))}; use {', '.join(ABLATION_VARIANTS)}"
        )
    siblings = {k: Path(v) for k, v in ablation_runs.items()}
    for name, sib in siblings.items():  # a typo must not read as "not run"
        if not (sib / "results.json").is_file():
            raise UserError(
                f"--ablation-runs {name}={sib}: no results.json there; give a finished run folder"
            )
    for name in ABLATION_VARIANTS:
        res_file = siblings.get(name, Path(f"{run.path}-{name}")) / "results.json"
        if res_file.is_file():
            _sibling_results(run, res_file)
    if ablation_runs and not timellm_specs(run.members):
        raise UserError(
            "--ablation-runs: the training ablations change Time-LLM settings, and "
            f"{run.path} has no timellm member; analyse a run with timellm among --members"
        )
    return siblings


def member_ablations(
    run: RunData,
    val_true: np.ndarray | None,
    refit: RefitInputs | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The ensemble without each member, computed from the run folder.

    The run's router is refitted on the remaining members' validation forecasts when
    the validation targets are available, and, for routers that read features
    (``learned`` among them: its features include each member's recent errors), on
    features recomputed for the remaining members from ``refit``. Without those, the
    router's test weights are renormalised over the remaining members. Those saved
    weights are averaged over the horizon steps, so a renormalised row is compared with
    all members recombined from the same saved weights (``delta``, ``p_vs_full``), not
    with the run's ensemble: the difference is then the member's alone. A run made by
    other code than this (results.json's ``environment.code``) has its router refitted
    on all members too: where that differs from the run's ensemble, the refitted rows
    are compared with it, or Δ would mix two versions' routers. ``progress``: a bar
    over the members, on a terminal.
    """
    from experiments.analyse import stored_mean

    h = run.true.shape[1]
    full_loss = metrics.window_mse(run.ensemble, run.true)
    saved: dict[str, np.ndarray] = {}  # all members with the saved weights, built once if needed

    def scored(fc: np.ndarray, base: np.ndarray | None = None) -> dict[str, Any]:
        """MSE/MAE, and Δ MSE and the Diebold-Mariano test against ``base`` (default:
        the run's ensemble); its statistic and dof too: dm 0 (the same forecast) leaves
        the row out of the Holm family, and few dof call for `metrics.caveat`."""
        base_loss = full_loss if base is None else metrics.window_mse(base, run.true)
        loss = metrics.window_mse(fc, run.true)
        vs = metrics.diebold_mariano(loss, base_loss, h)
        return metrics.scores(fc, run.true) | {
            "delta": float(loss.mean() - base_loss.mean()),
            "p_vs_full": vs["p"],
            "dm_vs_full": vs["dm"],
            "dof_vs_full": vs["dof"],
        }

    # `learned` picks one of its candidates on validation, and a refit without a member
    # may pick another: the rows name the pick, or Δ would read as the member's alone
    picked = [n for n, c in (run.results.get("combiners") or {}).items() if c.get("chosen")]
    rows = [
        {
            "variant": "full ensemble (as run)",
            **metrics.scores(run.ensemble, run.true),
            "method": "results of the run"
            + (f"; `learned` picked `{picked[0]}`" if picked else ""),
        },
    ]
    router = str(run.results.get("router") or "mean")
    refitter = _Refitter(run, router, val_true, refit)
    refit_base = None  # the full router refitted here, where the run's code was other
    many = len(run.members) >= 2
    if many and refitter.can(run.members) and not same_code(run.results):
        full, method = refitter(run.members)
        if full is not None and not np.allclose(full, run.ensemble, rtol=1e-5, atol=1e-6):
            refit_base = full
            full_loss = metrics.window_mse(full, run.true)
            rows.append(
                {
                    "variant": "full ensemble (refitted by this version)",
                    **metrics.scores(full, run.true),
                    "method": method + "; the run was made by other code and its router "
                    "gave other forecasts: the rows below are compared with this",
                },
            )
    rows.append(
        {
            "variant": "mean of all members",
            **scored(stored_mean([run.test[m] for m in run.members])),
            "method": "equal weights",
        }
    )
    if not many:
        return holm_rows(rows)
    bar = tqdm(
        run.members,
        desc="ablations",
        unit="member",
        leave=False,
        disable=None if progress else True,  # None: on a terminal only
    )
    for i, m in enumerate(bar):
        rest = [k for k in run.members if k != m]
        if len(rest) == 1:  # any router gives one member all the weight: nothing to refit
            only = rest[0]
            rows.append(
                {"variant": f"without {m}", **scored(run.test[only]), "method": f"{only} alone"}
            )
            continue
        fc, method = refitter(rest) if refitter.can(rest) else (None, "")
        if fc is None and run.weights is not None:
            if not saved:  # a full [M, W, H, C] stack: only for routers that need it
                stack_all = hybrid.stack({k: run.test[k] for k in run.members})
                saved["all"] = hybrid.combine(stack_all, run.weights)
                del stack_all
            saved_all = saved["all"]
            w = np.delete(run.weights, i, axis=-1)
            w = w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
            fc = hybrid.combine(hybrid.stack({k: run.test[k] for k in rest}), w)
            base_mse = metrics.scores(saved_all, run.true)["mse"]
            method = (
                "router's saved test weights renormalised over the other members; Δ and p "
                f"against all members with the same weights (MSE {base_mse:.4f})"
            )
            rows.append({"variant": f"without {m}", **scored(fc, saved_all), "method": method})
            continue
        if fc is None:
            fc = stored_mean([run.test[k] for k in rest])
            method = "equal weights over the other members (no router weights saved)"
            if refit_base is not None:  # not the refitted router: against the run's own
                rows.append(
                    {"variant": f"without {m}", **scored(fc, run.ensemble), "method": method}
                )
                continue
        rows.append({"variant": f"without {m}", **scored(fc), "method": method})
    return holm_rows(rows)


def holm_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``p_holm``: Holm's adjustment of their ``p_vs_full`` over the rows
    that test a difference. A row whose forecast is the full one's (dm 0: the `mean`
    router's "mean of all members") tests nothing, and counting its p of 1 raised every
    other adjusted p, as results.md leaves such a pair out of its family too. None where
    a row is not in the family."""
    tested = [row.get("p_vs_full") if row.get("dm_vs_full") != 0.0 else None for row in rows]
    for row, p in zip(rows, metrics.holm(tested), strict=True):
        if "p_vs_full" in row:
            row["p_holm"] = None if p is None or p != p else float(p)
    return rows


def same_code(results: dict[str, Any]) -> bool:
    """Whether the run was made by this very code: its recorded code tree (the hash of
    the package's code folders, ``code_version``'s ``tree``) is the current one, so a
    later commit of docs or tests alone is the same code, and neither side had changes
    to it. Runs recorded before the tree compare their commit; runs from before any
    record count as other code."""
    from experiments.run import code_version

    env = results.get("environment")
    then = env.get("code") if isinstance(env, dict) else None
    if not isinstance(then, dict) or not then.get("commit") or then.get("modified"):
        return False
    now = code_version()
    if now["modified"] is not False:
        return False
    if isinstance(then.get("tree"), str) and now.get("tree"):
        return now["tree"] == then["tree"]
    return now["commit"] == then["commit"]


class _Refitter:
    """The run's router refitted on some of its members' validation forecasts (and
    features recomputed for them, for routers that read features), forecasting test."""

    def __init__(
        self, run: RunData, router: str, val_true: np.ndarray | None, refit: RefitInputs | None
    ):
        from router import make_combiner

        self.run, self.router, self.val_true, self.refit = run, router, val_true, refit
        self.inputs: dict[str, Any] = {}  # input-only router features, the same for all
        self.needs_features = make_combiner(router).needs_features  # once, not per member

    def can(self, members: list[str]) -> bool:
        if self.val_true is None or not all(k in self.run.val for k in members):
            return False
        return self.refit is not None or not self.needs_features

    def __call__(self, members: list[str]) -> tuple[np.ndarray | None, str]:
        """(test forecast [W, H, C], how it was made), or (None, "") if the refit failed."""
        from experiments.scoring import router_features, router_inputs
        from router import make_combiner

        run, refit, h = self.run, self.refit, self.run.true.shape[1]
        # a learned router's references only fill its report's table, never its choice:
        # not fitted here (about 7 s of the ablations on ETTh1, five members)
        seed = run.results.get("seed", 0)
        comb = make_combiner(self.router, member_names=members, seed=seed, references=())
        try:
            val_stack = hybrid.stack({k: run.val[k] for k in members})
            test_stack = hybrid.stack({k: run.test[k] for k in members})
            f_val = f_test = None
            if comb.needs_features:
                for part, x in (("val", refit.val_x), ("test", refit.test_x)):
                    if part not in self.inputs:
                        self.inputs[part] = router_inputs(x, h, refit.periods, refit.channels)
                f_val, comb.feature_names = router_features(
                    refit.val_x,
                    val_stack,
                    refit.periods,
                    members,
                    refit.channels,
                    self.inputs["val"],
                )
                f_test, _ = router_features(
                    refit.test_x,
                    test_stack,
                    refit.periods,
                    members,
                    refit.channels,
                    self.inputs["test"],
                )
            comb.fit(val_stack, self.val_true, f_val)
            fc = hybrid.combined_forecast(comb, test_stack, f_test)
        except Exception as exc:  # fall back to renormalised weights
            left = sorted(set(run.members) - set(members))
            log.warning(
                "refitting %s %s failed (%s)",
                self.router,
                f"without {', '.join(left)}" if left else "on all members",
                exc,
            )
            return None, ""
        which = "other members'" if len(members) < len(run.members) else "members'"
        method = f"`{self.router}` refitted on the {which} validation forecasts" + (
            " and features" if comb.needs_features else ""
        )
        if getattr(comb, "chosen_", None):
            from router.learned import registry_name

            method += f"; it picked `{registry_name(comb.chosen_)}`"
        return fc, method


def timellm_specs(members: list[str]) -> list[str]:
    """The run's Time-LLM members, by base name (``timellm@prompt_stats=...`` too)."""
    from experiments.registry import parse_spec

    return [m for m in members if parse_spec(m)[0] == "timellm"]


def training_ablations(
    run: RunData, siblings: dict[str, Path], period: int | None
) -> list[dict[str, Any]]:
    """Rows for the ablations that need their own run: read from siblings or 'not run'.
    None (an empty list) for a run without Time-LLM: each changes a Time-LLM setting."""
    from experiments.tune_space import patch_choices

    specs = timellm_specs(run.members)
    if not specs:
        return []

    patch, stride = 16, 8
    if period:
        # the longest period-derived patch with half overlap (the analyser's choice if it has one)
        halves = [c for c in patch_choices(period, int(run.results["seq_len"])) if _half(c)]
        if halves:
            patch, stride = (int(v) for v in halves[-1].split("/"))
    rows = []
    cfg_path = run.path / "config.yaml"
    from experiments.registry import parse_spec

    own = parse_spec(specs[0])[1]  # timellm@inject=... in the spec, or --set timellm.inject
    shared = (run.config.get("member_params") or {}).get("timellm") or {}
    inject = own.get("inject", shared.get("inject"))
    if isinstance(inject, str):  # "ridge+dlinear"; "none" or "" is off
        inject = [n for n in inject.replace(",", "+").split("+") if n and n != "none"]
    injects = bool(inject)
    own_patch = _timellm_patch(run, specs[0], own, shared)
    for name, (desc, sets) in ABLATION_VARIANTS.items():
        if name == ("inject" if injects else "no-inject"):
            continue  # the run itself is that variant
        sets = [s.format(patch=patch, stride=stride) for s in sets]
        sib = siblings.get(name, Path(f"{run.path}-{name}"))
        row: dict[str, Any] = {"variant": name, "description": desc}
        res_file = sib / "results.json"
        is_own = (name == "patch16" and own_patch == (16, 8)) or (
            name == "period-patch" and own_patch == (patch, stride)
        )
        if is_own and not res_file.is_file():
            continue  # the run itself is that variant: a rerun would only repeat it
        if res_file.is_file():
            res = _sibling_results(run, res_file)
            row["run"] = str(sib)
            row["timellm"] = res["test"].get(specs[0])
            row["ensemble"] = res["test"].get("ensemble")
            # like with like: the sibling's results.json against this run's, never against
            # an MSE recomputed here from forecasts.npz or a router refitted here
            row["delta"] = {
                name: _mse_delta(row[name], (run.results.get("test") or {}).get(key))
                for name, key in (("timellm", specs[0]), ("ensemble", "ensemble"))
            }
            row["status"] = "read from sibling run"
        else:
            cmd = ["hybrid-forecast", "run", "--config", str(cfg_path), "--out", str(sib)]
            for s in sets:
                cmd += ["--set", s]
            row["status"] = "not run"
            row["command"] = shell.join(cmd)
        rows.append(row)
    return rows


def _mse_delta(theirs: dict[str, Any] | None, mine: dict[str, Any] | None) -> float | None:
    """Test MSE of a sibling's forecast minus this run's, both as results.json has them
    (None where either lacks it)."""
    a, b = (theirs or {}).get("mse"), (mine or {}).get("mse")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return float(a) - float(b) if ok else None


def _half(choice: str) -> bool:
    p, s = (int(v) for v in choice.split("/"))
    return s * 2 == p


def _timellm_patch(
    run: RunData, spec: str, own: dict[str, Any], shared: dict[str, Any]
) -> tuple[int, int] | None:
    """The (patch_len, stride) the run's Time-LLM trained with: from its saved model's
    config (where ``patch_len=period`` is resolved), else from its settings; None if
    neither says."""
    from experiments.member_cache import member_path

    meta_file = member_path(run.path, spec) / "model" / "config.json"
    try:
        kw = json.loads(meta_file.read_text(encoding="utf-8"))["kwargs"]
        return int(kw["patch_len"]), int(kw["stride"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return (
            int(own.get("patch_len", shared.get("patch_len", 16))),
            int(own.get("stride", shared.get("stride", 8))),
        )
    except (TypeError, ValueError):  # "period": resolved only in the saved model
        return None


# What an ablation run must share with the run it is compared with (results.json keys):
# anything else changed would be credited to the ablated setting.
_SAME_EXPERIMENT = (
    "dataset",
    "features",
    "channels",
    "seq_len",
    "pred_len",
    "seed",
    "windows",
    "members",
    "router",
)


def _sibling_results(run: RunData, res_file: Path) -> dict[str, Any]:
    """An ablation run's results.json, checked to be the same experiment as ``run``'s
    (another dataset, lookback, horizon or seed would compare unlike with unlike)."""
    from experiments.analyse import _reading
    from experiments.member_cache import numbers_params

    with _reading(res_file, fix="rerun that ablation"):
        res = json.loads(res_file.read_text(encoding="utf-8"))
        if not isinstance(res, dict) or not isinstance(res.get("test"), dict):
            raise ValueError("not the mapping `hybrid-forecast run` writes")
        for name in ("timellm", "ensemble"):  # the report prints their scores as numbers
            score = res["test"].get(name) or {}
            for k in ("mse", "mae"):
                if not isinstance(score.get(k, 0.0), (int, float)):
                    raise ValueError(f"test.{name}.{k} is not a number")
    mine, theirs = dict(run.results), dict(res)
    for d in (mine, theirs):  # the data's content, wherever its file lies
        d["data"] = (d.get("data") or {}).get("sha256") if isinstance(d.get("data"), dict) else None
    keys = [*_SAME_EXPERIMENT, *(["data"] if mine["data"] and theirs["data"] else [])]
    # the other members' settings (the ablation changes Time-LLM's only)
    sib_cfg = res_file.parent / "config.yaml"
    if sib_cfg.is_file() and run.config:
        import yaml

        with _reading(sib_cfg, fix="rerun that ablation"):
            other = yaml.safe_load(sib_cfg.read_text(encoding="utf-8")) or {}
        for d, cfg in ((mine, run.config), (theirs, other)):
            params = cfg.get("member_params") if isinstance(cfg, dict) else None
            # progress bars, resume, checkpoints change no number: as member caches
            others = {k: v for k, v in (params or {}).items() if k != "timellm"}
            d["member settings (but Time-LLM's)"] = numbers_params(others)
        keys.append("member settings (but Time-LLM's)")
    for key in keys:  # a key only one of them has: written by another version
        if key in theirs and key in mine and theirs[key] != mine[key]:
            raise UserError(
                f"ablation run {res_file.parent} has {key} {theirs.get(key)!r} but {run.path} "
                f"has {mine.get(key)!r}: an ablation must differ only in the ablated setting"
            )
    return res
