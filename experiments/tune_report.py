"""The reports of a `tune` study: trials.csv, best_config.yaml (a config `run --config`
accepts), study_summary.{json,md} and the Optuna plots.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble.io import write_csv, write_json, write_text
from experiments.config import RunConfig
from experiments.registry import parse_spec
from experiments.tune_objective import STRIDED_VAL_MEMBERS
from experiments.tune_study import (
    DRAW_ATTR,
    calendar_fallback,
    failed_with_error,
    startup_trials,
    trial_counts,
)

if TYPE_CHECKING:
    import pandas as pd

    from experiments.tune import TuneSpec

log = logging.getLogger("hybrid_forecast.tune")


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else path


def best_config(spec: TuneSpec, trial) -> RunConfig:
    """The best trial as a config `hybrid-forecast run --config` accepts."""
    params: dict[str, dict[str, Any]] = {
        k: {kk: vv for kk, vv in v.items() if kk != "progress"}
        for k, v in spec.member_params.items()
    }
    for base, tuned in trial.user_attrs.get("member_params", {}).items():
        params.setdefault(base, {}).update(tuned)
    if spec.val_stride > 1:  # the trial's model early-stopped on these windows
        for m in spec.members:
            base, own = parse_spec(m)
            if base in STRIDED_VAL_MEMBERS and "val_stride" not in own:
                params.setdefault(base, {}).setdefault("val_stride", spec.val_stride)
    return RunConfig(
        dataset=spec.dataset,
        # absolute, as `run` stores them: `run --config` from another folder finds them
        data_path=_absolute(spec.data_path),
        data_dir=_absolute(spec.data_dir),
        features=spec.features,
        target=spec.target,
        fill=spec.fill,
        percent=spec.percent,
        seq_len=int(trial.user_attrs["seq_len"]),
        pred_len=spec.pred_len,
        members=list(spec.members),
        router=spec.router,
        seed=spec.seed,
        out=None,
        periods=trial.user_attrs.get("periods"),
        member_params={k: v for k, v in params.items() if v},
    )


def trials_table(study) -> pd.DataFrame:
    """Optuna's trial table, with a pruned trial's ``value`` moved to ``pruned_at``.

    Optuna gives a pruned trial the last epoch's validation loss as its value: in one
    column beside complete trials' full validation MSE it read as a score, often a
    "better" one than the best trial's (early epochs on strided windows)."""
    df = study.trials_dataframe()
    if "value" in df and "state" in df:
        pruned = df["state"] == "PRUNED"
        df.insert(df.columns.get_loc("value") + 1, "pruned_at", df["value"].where(pruned))
        df["value"] = df["value"].where(~pruned)
    return df


def finish(spec: TuneSpec, study, plots: bool = True) -> dict[str, Any]:
    """Write trials.csv, best_config.yaml, study_summary.{json,md} and the plots."""
    from optuna.trial import TrialState

    out = Path(spec.out)
    c = trial_counts(study)
    trials = study.get_trials(deepcopy=False)
    write_csv(out / "trials.csv", trials_table(study).to_csv(index=False))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": spec.study,
        "storage": spec.storage,
        "asked_trials": spec.trials,
        "val_stride": spec.val_stride,
        "val_windows": None,  # [scored, all] at the best trial's lookback
        "counts": c,
        "periods": study.user_attrs.get("periods"),
        # each start's pruner, router, jobs and trials (tune_spec.json: the last start's)
        "starts": study.user_attrs.get("starts", []),
    }
    if calendar_fallback(study.user_attrs):  # none of the analyser's fits the bounds
        summary["periods_from"] = "calendar"
        summary["ranked_periods"] = study.user_attrs.get("ranked_periods") or []
        summary["seq_len_bounds"] = [spec.min_seq_len, spec.max_seq_len]
    if any(m.split("@")[0] in ("timellm", "patchtst") for m in spec.members):
        summary["patch_choices"] = study.user_attrs.get("patch_choices")
    # a trial of a study repaired since (its attributes refilled) failed for no fault of its own
    errors = [t for t in trials if t.state == TrialState.FAIL and failed_with_error(t)]
    if errors:
        summary["first_error"] = {
            "number": errors[0].number,
            "error": errors[0].user_attrs["error"],
        }
    summary["draws"] = draws(trials, startup_trials(spec.trials))
    summary["importance"] = importance_basis(complete)
    if complete:
        best = min(complete, key=lambda t: t.value)
        cfg = best_config(spec, best)
        unfinished = (
            f" (best of {c['finished']} finished of {spec.trials} trials: the study is not "
            "done; rerun the tune command to finish it)"
            if c["finished"] < spec.trials
            else ""
        )
        header = (
            f"# best trial {best.number} of study {spec.study!r}: val MSE {best.value:.5f}"
            f"{unfinished}\n"
            f"# params: {best.params}\n"
            + (
                f"# scored on one val window in {spec.val_stride} (tune --val-stride); "
                "run scores every one\n"
                if spec.val_stride > 1
                else ""
            )
            + f"# rerun and score on test: {rerun_command(out)}\n"
        )
        write_text(out / "best_config.yaml", header + cfg.to_yaml())
        summary["val_windows"] = best.user_attrs.get("val_windows")
        summary["best"] = {
            "number": best.number,
            "val_mse": best.value,
            "params": best.params,
            "seq_len": best.user_attrs.get("seq_len"),
            "member_params": best.user_attrs.get("member_params"),
        }
    write_json(out / "study_summary.json", summary)
    write_text(out / "study_summary.md", _summary_md(summary, complete))
    try:
        if plots:
            plot_study(study, out)
    except Exception:  # plots must not cost the summary
        log.warning("tune plots failed:\n%s", traceback.format_exc())
    return summary


# Parameter importance is drawn from this many complete trials on, and from 2 per
# parameter the complete trials drew: from 3 random draws in which lr and period moved
# together it gave "lr 0.99, period 0.01, patch < 0.01", read as "patch length does not
# matter", which 3 trials cannot tell.
IMPORTANCE_MIN_TRIALS = 10
IMPORTANCE_TRIALS_PER_PARAM = 2


def importance_basis(complete: list) -> dict[str, Any]:
    """What the parameter importance rests on: ``complete_trials``, the ``params`` they
    drew (any of them, a per-period lookback too: Optuna's default evaluator, PED-ANOVA
    in optuna 5, assesses each, and fANOVA, the older default, fewer; a single-valued one
    is not drawn), the ``min_trials`` it takes (``IMPORTANCE_MIN_TRIALS``, and
    ``IMPORTANCE_TRIALS_PER_PARAM`` per parameter) and whether every complete trial has
    the ``same_score`` (then no setting mattered, and there is none)."""
    drawn = {name for t in complete for name, d in t.distributions.items() if not d.single()}
    params = len(drawn)
    values = [t.value for t in complete]
    return {
        "complete_trials": len(complete),
        "params": params,
        "min_trials": max(IMPORTANCE_MIN_TRIALS, IMPORTANCE_TRIALS_PER_PARAM * params),
        "same_score": len(values) >= 2
        and max(values) - min(values) <= 1e-12 * max(1.0, abs(values[0])),
    }


def draws(trials: list, startup: int) -> dict[str, Any]:
    """Which complete trials were TPE's random startup draws (``random``) and which it
    guided (``guided``), by trial number; ``startup``: the complete or pruned trials TPE
    waits for. A trial of a study made before each trial's draw was recorded
    (`DRAW_ATTR`) is judged by how many trials had ended when it started (``estimated``)."""
    import bisect

    from optuna.trial import TrialState

    ended = sorted(
        t.datetime_complete
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete
    )
    random: list[int] = []
    guided: list[int] = []
    estimated = False
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        draw = t.user_attrs.get(DRAW_ATTR)
        if draw is None:
            estimated = True
            before = bisect.bisect_right(ended, t.datetime_start) if t.datetime_start else 0
            draw = "random" if before < startup else "tpe"
        (random if draw == "random" else guided).append(t.number)
    return {"startup_trials": startup, "random": random, "guided": guided, "estimated": estimated}


def _numbers(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``0-2, 5, 7-8``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def draws_line(summary: dict[str, Any]) -> str | None:
    """How many complete trials were TPE's random startup draws, in one sentence (None:
    no complete trial)."""
    d = summary.get("draws")
    if not d or not (d["random"] or d["guided"]):
        return None
    k, rand, guided = d["startup_trials"], d["random"], d["guided"]
    tpe = f"TPE starts after {_plural(k, 'complete or pruned trial')}"
    if not guided:
        which = "Trials" if len(rand) > 1 else "Trial"
        line = (
            f"{which} {_numbers(rand)}: random draws ({tpe}); no trial was guided yet, so "
            "the best trial and any importance are a random search's."
        )
    elif not rand:
        every = "the one complete trial was" if len(guided) == 1 else f"all {len(guided)} were"
        line = f"No complete trial was a random draw ({tpe}): {every} guided."
    else:
        drawn = "was a random draw" if len(rand) == 1 else "were random draws"
        which = "trial" if len(rand) == 1 else "trials"
        others = "the other one was" if len(guided) == 1 else f"the other {len(guided)} were"
        line = (
            f"{len(rand)} of {len(rand) + len(guided)} complete trials {drawn} "
            f"({which} {_numbers(rand)}; {tpe}); {others} guided by TPE."
        )
    if d.get("estimated"):
        line += (
            " (Estimated from when the trials started and ended: the study predates the "
            "record of each trial's draw.)"
        )
    return line


def importance_line(summary: dict[str, Any]) -> str | None:
    """On how many complete trials the parameter importance rests, or why there is none
    and how many more complete trials it takes (None: no complete trial)."""
    imp = summary.get("importance")
    if not imp or not imp["complete_trials"]:
        return None
    n, need, params = imp["complete_trials"], imp["min_trials"], imp["params"]
    if n < need:
        more = need - n
        trials = max(summary["asked_trials"], summary["counts"]["finished"] + more)
        return (
            f"No parameter importance (`tune_importance.png`): {_plural(n, 'complete trial')}, "
            f"fewer than the {need} it takes (at least {IMPORTANCE_MIN_TRIALS}, and "
            f"{IMPORTANCE_TRIALS_PER_PARAM} per parameter the complete trials drew: "
            f"{params}); {more} more complete {'trial' if more == 1 else 'trials'} needed "
            f"(rerun with --trials {trials} or more)."
        )
    if imp.get("same_score"):
        return (
            f"No parameter importance (`tune_importance.png`): all {n} complete trials "
            "have the same val MSE."
        )
    return (
        f"Parameter importance (`tune_importance.png`) rests on {n} complete trials, over "
        f"the {params} parameters they drew. Parameters that varied "
        "together across these trials (confounded) share their importance: a low one is "
        "not evidence that a setting does not matter."
    )


def rerun_command(out: Path) -> str:
    """The command that reruns the best trial as a plain run and scores it on test."""
    from experiments import shell

    return shell.join(["hybrid-forecast", "run", "--config", str(Path(out) / "best_config.yaml")])


def _scored(val_stride: int, counts: list[int] | None = None) -> str:
    """Which val windows scored the trials, in words (``counts``: [scored, all] at the
    best trial's lookback)."""
    if val_stride <= 1:
        return "every val window"
    of = f" ({counts[0]} of {counts[1]} at the best trial's lookback)" if counts else ""
    return (
        f"one val window in {val_stride}{of}, drawn at random per block of {val_stride}, "
        "`--val-stride`: a trial's score is an estimate of its full validation MSE, and "
        "`run` scores every window"
    )


def _periods_from(summary: dict[str, Any]) -> str:
    """Where the period candidates came from, as study_summary.md says it."""
    if summary.get("periods_from") != "calendar":
        return "train rows"
    ranked, (lo, hi) = summary["ranked_periods"], summary["seq_len_bounds"]
    found = (
        f"none of the analyser's, {ranked}, has a multiple in [{lo}, {hi}]"
        if ranked
        else "the analyser found none in the train rows"
    )
    return f"calendar periods of the data's frequency, a fallback: {found}"


def _summary_md(summary: dict[str, Any], complete: list) -> str:
    c = summary["counts"]
    lines = [
        f"# Study {summary['study']}",
        "",
        f"Storage: `{summary['storage']}`. Asked for {summary['asked_trials']} trials; finished "
        f"{c['finished']} (complete {c['complete']}, pruned {c['pruned']}, failed with an error "
        f"{c['error']}); discarded {c['discarded']} (killed and retried, or surplus); running "
        f"{c['running']}, waiting {c['waiting']}.",
        f"Period candidates ({_periods_from(summary)}): {summary['periods']}. Objective: "
        "validation MSE "
        f"(scaled space, {_scored(summary.get('val_stride', 1), summary.get('val_windows'))}); "
        "test never used.",
        "",
    ]
    starts = summary.get("starts") or []
    if len({(st.get("pruner"), st.get("router")) for st in starts}) > 1:  # said when mixed
        lines[-1:-1] = [
            "Starts (pruner, router, jobs): "
            + "; ".join(
                f"{st.get('pruner')}, {st.get('router')}, {st.get('jobs')}" for st in starts
            )
            + ".",
        ]
    if summary.get("patch_choices"):
        lines[-1:-1] = [
            "Patch/stride choices per period: "
            + "; ".join(f"{p}: {', '.join(c)}" for p, c in summary["patch_choices"].items())
            + ".",
        ]
    if "best" in summary:
        b = summary["best"]
        lines += [
            f"Best: trial {b['number']}, val MSE {b['val_mse']:.5f}, L={b['seq_len']}, "
            f"member settings {b['member_params']}. Exported as `best_config.yaml`.",
            "",
            "| rank | trial | val MSE | params |",
            "|---|---|---|---|",
        ]
        ranked = sorted(complete, key=lambda t: t.value)
        for i, t in enumerate(ranked[:10], 1):
            lines.append(f"| {i} | {t.number} | {t.value:.5f} | {t.params} |")
        lines += _close_call(ranked)
        for said in (draws_line(summary), importance_line(summary)):
            lines += ["", said] if said else []
        lines += [
            "",
            "A trial's `period` sets its lookback grid (multiples of it) and the settings "
            "members derive from it (DLinear's kernel under `kernel_mode` period, patches, "
            "seasonal naive's period); under `dlinear.kernel_mode` free it sets the "
            "lookback grid alone, so a best trial's period is not a finding about the "
            "series by itself.",
        ]
    return "\n".join(lines) + "\n"


# Runner-ups this close to the best (relative val MSE) are not told apart by one seed:
# DLinear's test MSE moves by ~1 % between seeds on ETTh1 (BENCHMARKS: 0.3857 +- 0.0032).
CLOSE_CALL = 0.01


def _close_call(ranked: list) -> list[str]:
    """A note naming the trials within ``CLOSE_CALL`` of the best: their settings are not
    told apart by this study (one seed, validation windows only)."""
    best = ranked[0].value if ranked else 0.0
    if len(ranked) < 2 or best <= 0:  # a perfect fit (0): no share of it to compare by
        return []
    close = [t for t in ranked[1:] if t.value <= best * (1 + CLOSE_CALL)]
    if not close:
        return []
    gap = (close[0].value - best) / best
    return [
        "",
        f"**A close call**: trial{'s' if len(close) > 1 else ''} "
        f"{', '.join(str(t.number) for t in close[:5])}{' ...' if len(close) > 5 else ''} "
        f"within {CLOSE_CALL:.0%} of the best (the runner-up {gap:.2%} above it). One seed's "
        "validation MSE does not tell these settings apart: rerun the best few with several "
        "seeds (`run --config ... --seed N`, or `bench --seeds`) before concluding which is "
        "better.",
    ]


def plot_study(study, out: Path) -> None:
    """tune_history.png, tune_importance.png, tune_intermediate.png.

    The importance plot only from `importance_basis`'s ``min_trials`` complete trials on,
    its title saying how many it rests on; without it, the plot an earlier, smaller
    state of the study left is removed (it would stand for the trials of today)."""
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    from ensemble import figures

    figures.pyplot()
    drawn = False

    def save(ax_or_fig, name: str) -> None:
        fig = ax_or_fig.figure if hasattr(ax_or_fig, "figure") else ax_or_fig
        fig.set_size_inches(7, 4.2)
        figures.save(fig, out / name, dpi=100)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # "few trials per regime" on small studies
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if complete:
                ax = ovm.plot_optimization_history(study)
                ax.set_ylabel("val MSE (scaled)")  # Optuna's "Objective Value" says less
                save(ax, "tune_history.png")
                if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
                    ax = ovm.plot_intermediate_values(study)
                    ax.set_xlabel("epoch")
                    ax.set_ylabel("val MSE (scaled)")
                    save(ax, "tune_intermediate.png")
            basis = importance_basis(complete)
            need = basis["min_trials"]
            if basis["same_score"]:
                # every setting scored alike: fANOVA would still split the importance evenly
                log.info("no importance plot: every complete trial has the same val MSE")
            elif len(complete) < need:
                log.info(
                    "no importance plot: %d complete trials, fewer than the %d it takes",
                    len(complete),
                    need,
                )
            else:
                try:
                    ax = ovm.plot_param_importances(study)
                    ax.set_title("", loc="left")  # Optuna's, where the one below says more
                    ax.set_title(
                        f"Parameter importance from {len(complete)} complete trials\n"
                        "parameters that varied together (confounded) share importance",
                        fontsize=10,
                    )
                    save(ax, "tune_importance.png")
                    drawn = True
                except (ValueError, RuntimeError) as exc:  # e.g. a single distinct value
                    log.warning("no importance plot: %s", exc)
    finally:
        if not drawn:  # nor the plot of an earlier, smaller state of the study
            _remove_figure(out / "tune_importance.png")


def _remove_figure(png: Path) -> None:
    """Remove a figure and the copies `figures.save` wrote beside it (each unlink is
    atomic: a reader finds the old file whole or none)."""
    from ensemble import figures

    for path in [*figures._stale_copies(png, []), png]:
        path.unlink(missing_ok=True)
