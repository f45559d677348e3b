"""Optuna tuning of period, patch, lookback and learning-rate choices, scored on validation only.

A trial picks a period among the analyser's candidates (train rows only; the calendar
periods of the data's frequency when it finds none, or none with a multiple within the
lookback bounds, which tune.log warns of and study_summary says), a lookback that is a
multiple of it, and each member's own choices (DLinear's moving-average kernel and
learning rate, Time-LLM's patch length / stride and learning rate, ...). It fits the members on
train, early-stops them on val and returns the val MSE (of the members' equal-weight
mean when there are several). The test split is never loaded into a trial's score.

Pruning, with one member: if it can report a per-epoch validation loss (an ``on_epoch``
attribute its training loop calls with ``(epoch, val_loss)``) it feeds the pruner, which
stops hopeless trials mid-training; one without the hook reports its epoch history after
fitting, so the pruner still learns the curves of later trials. With several members
the score is their mean, which no one member's curve tells (a trial pruned on DLinear's
curve beside window_mean would have beaten the study's best): nothing is pruned.

Exactly N trials, whatever happens: ``--trials N`` is the study's total of finished
trials (COMPLETE, PRUNED, or FAIL with an ``error`` attribute: a configuration that
crashes is a result too). Every worker loops "start a trial while fewer than N are
finished, running or waiting". Trials hold a heartbeat in the storage; a trial whose
process was killed stops beating, is marked FAIL after ``GRACE_S`` seconds (at once
when that process ran on this machine and is gone) and its parameters are enqueued
again (Optuna's heartbeat retry callback), so a restart finishes the remainder with
nothing lost. Two workers racing for the last slot are
settled by trial number: a trial that finds N claimed trials numbered below its own
marks itself ``surplus`` (FAIL, not counted) before doing any work.

This module holds the study's spec, `run_tune` and the checks made before anything is
written; the rest is split by concern: `tune_space` (what a trial draws), `tune_study`
(the storage, resume checks, trial counts and seeds), `tune_objective` (one trial's fit
and score), `tune_workers` (the worker processes, signals and logging) and
`tune_report` (trials.csv, best_config.yaml, summaries, plots).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ensemble.errors import UserError
from ensemble.io import write_json
from experiments.tune_report import finish
from experiments.tune_space import lookback_range
from experiments.tune_study import (
    GRACE_S,
    HEARTBEAT_S,
    absolute_sqlite_url,
    calendar_fallback,
    check_folder_study,
    load_study_data,
    open_study,
    record_start,
    requeue_interrupted,
    sqlite_url,
    startup_trials,
    study_state,
    trial_counts,
)
from experiments.tune_workers import run_processes, setup_logging, work

log = logging.getLogger("hybrid_forecast.tune")


@dataclass
class TuneSpec:
    """What a study tunes, and where it lives.

    Attributes:
        dataset: registered dataset name (or None with ``data_path``).
        pred_len: horizon H.
        members: member specs (`dlinear`, `patchtst@lr=0.001`; each base name at most once;
            settings given with @ or --set are kept, not tuned).
        trials: the study's total number of finished trials.
        out: output folder (log, plots, best config; the default SQLite file).
        storage: an Optuna RDB URL (``sqlite:///...``, ``postgresql://...``) or a SQLite
            file's path; None: ``sqlite:///OUT/study.db``. `resolved` makes a SQLite
            file's path absolute, however given.
        study: study name; None: ``default_study(self)``.
        jobs: worker processes on this machine.
        data_path, data_dir, features, target, fill, percent: as for ``run`` (percent:
            the trials train on the first percent % of the train windows, few-shot).
        router: written into the exported config (the study itself scores members only).
        seed: seeds the members' weights and shuffling, and the sampler (with the number
            of trials already in the study and the worker's index: the same command draws
            the same configurations; restarted or parallel workers do not repeat each
            other's draws).
        min_seq_len, max_seq_len: bounds of the lookback.
        max_periods: at most this many period candidates.
        pruner: 'median', 'hyperband' or 'none' (each start's, with its router, jobs and
            trials, is kept in the study's ``starts``; a change on resume is warned of).
        val_stride: score a trial on one val window in k, drawn at random per block
            (`tune_objective.scored_windows`); Time-LLM early-stops on the same windows
            (its ``val_stride``, unless set). 1: every window.
        member_params: fixed member settings (``--set MEMBER.KEY=VALUE``), not tuned.
        heartbeat_s, grace_s: heartbeat period of a running trial, and the silence after
            which it counts as killed (tests shorten them).
    """

    dataset: str | None
    pred_len: int
    members: list[str]
    trials: int
    out: str = "tune"
    storage: str | None = None
    study: str | None = None
    jobs: int = 1
    data_path: str | None = None
    data_dir: str | None = None
    features: str = "M"
    target: str | None = None
    fill: str | None = None
    percent: int = 100
    router: str = "mean"
    seed: int = 0
    min_seq_len: int = 96
    max_seq_len: int = 720
    max_periods: int = 4
    pruner: str = "median"
    val_stride: int = 1
    member_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeat_s: int = HEARTBEAT_S
    grace_s: int = GRACE_S

    def resolved(self) -> TuneSpec:
        """A copy with the default storage URL and study name filled in, and a SQLite
        file's path made absolute."""
        d = asdict(self)
        d["study"] = self.study or default_study(self)
        if not self.storage:
            d["storage"] = sqlite_url((Path(self.out) / "study.db").resolve())
        elif "://" not in self.storage:  # a bare path: a SQLite file
            d["storage"] = sqlite_url(Path(self.storage).resolve())
        else:  # sqlite:///rel.db names the same file as the bare path rel.db
            d["storage"] = absolute_sqlite_url(self.storage)
        return TuneSpec(**d)


def default_study(spec: TuneSpec, legacy: bool = False) -> str:
    """``<data>[_<features>[-<target>]][_p<percent>][_s<seed>]_<H>_<members>``: the features
    unless M (with the target unless OT), the percent unless 100 and the seed unless 0, as
    a run's default folder names them, so that a study of other features, target, cut or
    seed does not land on (and get refused by) one of the same horizon and members.
    ``legacy``: the name before those were part of it, ``<data>_<H>_<members>``."""
    name = spec.dataset or Path(spec.data_path or "custom").stem
    tail = f"_{spec.pred_len}_{'+'.join(spec.members)}"
    if legacy:
        return name + tail
    if spec.features != "M":
        name += f"_{spec.features}"
        if spec.target not in (None, "OT"):
            name += f"-{spec.target}"
    if spec.percent != 100:
        name += f"_p{spec.percent}"
    if spec.seed != 0:
        name += f"_s{spec.seed}"
    return name + tail


def run_tune(spec: TuneSpec, *, progress: bool = True, plots: bool = True) -> dict[str, Any]:
    """Run (or resume) the study to ``spec.trials`` finished trials, then report.

    Args:
        spec: the study.
        progress: a tqdm bar of finished trials, on a terminal.
        plots: write the history / importance plots (tests turn them off for speed).

    Returns:
        The study summary (also written to ``OUT/study_summary.json``).
    """
    from tqdm.auto import tqdm

    spec = spec.resolved()
    out = Path(spec.out)
    try:  # every refusal before the folder, the log or the study exist
        new_attrs = validate(spec)
    except UserError as exc:
        if (out / "tune.log").is_file():  # a study resumed with bad input: its log says why
            handler = setup_logging(out)
            log.info("stopped before any trial: %s", exc)
            handler.close()
        raise
    fresh = not out.exists()
    handler = setup_logging(out, progress)
    study = None
    try:
        try:
            study = open_study(spec, create=True, new_attrs=new_attrs)
        except UserError:
            if fresh:  # a storage refused: no study was made, so leave no folder either
                handler.close()
                # only what this start made: a command started beside it may own the rest
                (out / "tune.log").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
        if new_attrs is not None:
            _warn_calendar_periods(spec, study.user_attrs)
        requeue_interrupted(study, spec.storage)
        record_start(spec, study)  # before tune_spec.json, which it reads, is rewritten
        _warn_all_random(spec)
        before = trial_counts(study)
        workers = worker_count(spec, before)
        log.info(
            "study %s in %s: %d/%d finished before this start (%s); jobs=%d (%d worker(s) this start)",
            spec.study,
            spec.storage,
            before["finished"],
            spec.trials,
            before,
            spec.jobs,
            workers,
        )
        if len(spec.members) > 1 and spec.pruner != "none":
            log.info(
                "no pruning (--pruner %s): the score is the mean of %d members, which no "
                "single member's epoch curve tells",
                spec.pruner,
                len(spec.members),
            )
        # said with or without the bar (--quiet): a rerun must not look like a new study
        if before["finished"] >= spec.trials:
            tqdm.write(
                f"study {spec.study} already has {before['finished']} finished trials and "
                f"--trials {spec.trials} asks for no more: reports rewritten from all of them "
                f"(a larger --trials adds trials)",
                file=sys.stderr,
            )
        elif any(before[k] for k in ("finished", "running", "waiting", "discarded")):
            # an interrupted first trial is FAIL (discarded) and queued again (waiting)
            tqdm.write(
                f"resuming study {spec.study}: {before['finished']} of {spec.trials} trials "
                f"finished before"
                + (f", {before['running']} marked running" if before["running"] else "")
                + (f", {before['waiting']} queued to run again" if before["waiting"] else ""),
                file=sys.stderr,
            )
        write_json(out / "tune_spec.json", asdict(spec))
        bar = tqdm(
            total=spec.trials,
            initial=min(before["finished"], spec.trials),
            desc="trials",
            unit="trial",
            disable=None if progress else True,  # None: on a terminal only
        )

        def show(c: dict[str, int]) -> None:
            bar.n = min(c["finished"], spec.trials)
            bar.set_postfix(pruned=c["pruned"], running=c["running"])
            bar.refresh()

        try:
            if workers <= 1:
                work(spec, on_progress=show)
            else:
                run_processes(replace(spec, jobs=workers), study, show)
        finally:
            bar.close()
        return finish(spec, study, plots=plots)
    except UserError as exc:  # INFO: the console gets the CLI's one line, not a second
        log.info("stopped: %s", exc)
        raise
    except KeyboardInterrupt:
        log.info("interrupted; a rerun finishes the study's remaining trials")
        if study is not None:
            _report_so_far(spec, study)
        raise
    finally:
        handler.close()


def _report_so_far(spec: TuneSpec, study) -> None:
    """After an interrupt: the reports of the trials finished so far, so that
    best_config.yaml never names an older best than the study holds (the plots, slower,
    are removed rather than left describing an earlier state; the next finish draws them)."""
    out = Path(spec.out)
    try:
        finish(spec, study, plots=False)
        for name in ("tune_history.png", "tune_importance.png", "tune_intermediate.png"):
            (out / name).unlink(missing_ok=True)
        log.info("reports written for the trials finished so far")
    except (Exception, KeyboardInterrupt):  # a second Ctrl-C, a storage gone: the log says so
        log.info("no reports after the interrupt:\n%s", traceback.format_exc())


def worker_count(spec: TuneSpec, counts: dict[str, int]) -> int:
    """The worker processes this start needs: ``--jobs``, but no more than the trials
    still to finish (a worker beyond them only waits), and warned of beyond the CPU
    cores (the workers then share them, each trial slower)."""
    cores = os.cpu_count() or 1
    workers = max(1, min(spec.jobs, spec.trials - counts["finished"]))
    if workers > cores:
        log.warning(
            "--jobs %d is more than this machine's %d CPU cores: the workers share them and "
            "each trial runs slower; give --jobs %d or fewer",
            spec.jobs,
            cores,
            cores,
        )
    return workers


def _warn_all_random(spec: TuneSpec) -> None:
    """Say in tune.log that a study of ``--trials`` at or below TPE's startup count is a
    random search: TPE guides no trial of it. The console says it at the end, beside the
    best trial, and study_summary.md says which trials were random."""
    k = startup_trials(spec.trials)
    if spec.trials <= k:
        log.info(
            "%s (TPE starts after %d): importances and the best trial are a random search's",
            f"{spec.trials} trials are all random draws"
            if spec.trials > 1
            else "1 trial is a random draw",
            k,
        )


def _warn_calendar_periods(spec: TuneSpec, attrs: dict[str, Any]) -> None:
    """Warn that a new study tunes calendar periods the analyser did not find."""
    if not calendar_fallback(attrs):
        return
    calendar = ", ".join(map(str, attrs["periods"]))
    if not attrs.get("ranked_periods"):  # white noise, a random walk: nothing to tune on
        log.warning(
            "the analyser found no period in the train rows: the trials draw the calendar "
            "periods of the data's frequency (%s)",
            calendar,
        )
        return
    log.warning(
        "none of the periods the analyser found in the train rows (%s) has a multiple in "
        "[--min-seq-len %d, --max-seq-len %d]: the trials draw the calendar periods of the "
        "data's frequency (%s) instead; widen the bounds to tune the found ones",
        ", ".join(map(str, attrs["ranked_periods"])),
        spec.min_seq_len,
        spec.max_seq_len,
        calendar,
    )


def validate(spec: TuneSpec) -> dict[str, Any] | None:
    """Check the (resolved) spec before anything is written: no folder, log or empty
    study is left by input the study refuses.

    Returns:
        The attributes of a new study (period candidates...: ``study_attrs``), or None
        when the study exists and was made for these settings.

    Raises:
        UserError: bad counts, bounds, members, storage or data.
    """
    from ensemble.data import make_splits
    from experiments import registry
    from experiments.logfile import said_after_checks

    if spec.trials < 1:
        raise UserError(f"--trials must be at least 1 (got {spec.trials})")
    if spec.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {spec.jobs})")
    if spec.pred_len < 1:
        raise UserError(f"--pred-len must be positive (got {spec.pred_len})")
    if not 1 <= spec.min_seq_len <= spec.max_seq_len:
        raise UserError(
            f"need 1 <= --min-seq-len <= --max-seq-len (got {spec.min_seq_len}, {spec.max_seq_len})"
        )
    if spec.pruner not in ("median", "hyperband", "none"):
        raise UserError(f"unknown --pruner {spec.pruner!r}: median, hyperband or none")
    if not 0 <= spec.seed < 2**32:
        raise UserError(f"--seed must lie in 0 .. {2**32 - 1} (got {spec.seed})")
    if spec.max_periods < 1:
        raise UserError(f"--max-periods must be at least 1 (got {spec.max_periods})")
    if spec.val_stride < 1:
        raise UserError(f"--val-stride must be at least 1 (got {spec.val_stride})")
    check_folder_study(spec.resolved())
    specs = registry.parse_members(spec.members)
    bases = [registry.parse_spec(s)[0] for s in specs]
    if len(set(bases)) != len(bases):
        raise UserError("tune takes each member once (its settings are what the study tunes)")
    from router import make_combiner

    make_combiner(spec.router)
    try:  # a missing file or bad column fails here, not in every trial
        with said_after_checks():  # a refused file: its error alone, not its warnings too
            dataset = load_study_data(spec)
            splits = make_splits(dataset, spec.min_seq_len, spec.pred_len, percent=spec.percent)
    except UserError as exc:
        if "too few for seq_len" not in str(exc):
            raise  # its advice names run's flags (--seq-len)
        raise UserError(
            f"{str(exc).split(';')[0]}; lower --min-seq-len or --pred-len, or use a longer series"
        ) from None
    n_val = splits.val.n_windows  # the most any lookback of the study has
    if n_val // spec.val_stride < 10:
        raise UserError(
            f"--val-stride {spec.val_stride} would score a trial on {max(1, n_val // spec.val_stride)} "
            f"of {n_val} validation windows: too few to rank trials; give at most {max(1, n_val // 10)}"
        )
    # a bad @key=value / --set fails here, not as N failed trials
    check = functools.partial(
        registry.check_specs,
        specs,
        spec.member_params,
        pred_len=spec.pred_len,
        n_channels=dataset.values.shape[1],
        freq=dataset.freq,
        seed=spec.seed,
        dataset=dataset.name,
    )
    try:
        check(seq_len=spec.max_seq_len, preflight=True)
    except UserError as exc:
        try:  # a setting that fits a long lookback: the fix is tune's flag, not --seq-len
            check(seq_len=max(4096, spec.max_seq_len), preflight=True)
        except UserError:
            raise exc from None
        raise UserError(f"{exc} (the lookback here is --max-seq-len: raise it)") from None
    state = study_state(spec, dataset)
    if state is not None:  # a new study: its periods set the shortest lookback drawn
        shortest = min(
            lookback_range(p, spec.min_seq_len, spec.max_seq_len)[0] for p in state["periods"]
        )
        try:  # a fixed patch or period longer than it: failed trials
            check(seq_len=shortest, preflight=True)
        except UserError as exc:
            raise UserError(
                f"{exc} (the shortest lookback a trial may draw is {shortest}, the least "
                "multiple of a period candidate from --min-seq-len on: raise --min-seq-len)"
            ) from None
    return state
