"""Tuning: exactly N finished trials across kills and races; the exported config runs."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from experiments.tune import (  # noqa: E402
    Objective,
    SurplusTrial,
    TuneSpec,
    _counts,
    lookback_range,
    open_study,
    period_candidates,
    run_tune,
    suggest,
)


def _spec(csv: Path, out: Path, trials: int) -> TuneSpec:
    return TuneSpec(
        dataset=None,
        data_path=str(csv),
        pred_len=24,
        members=["snaive"],  # a member with a tuned setting (its period) that fits instantly
        trials=trials,
        out=str(out),
        min_seq_len=48,
        max_seq_len=96,
        heartbeat_s=1,
        grace_s=2,
    ).resolved()


def _interrupt_at(monkeypatch, number: int):
    """Ctrl-C in trial ``number`` (and only there); returns the real ``_evaluate``."""
    evaluate = Objective._evaluate

    def interrupted(self, trial):
        if trial.number == number:
            raise KeyboardInterrupt
        return evaluate(self, trial)

    monkeypatch.setattr(Objective, "_evaluate", interrupted)
    return evaluate


def test_lookback_multiples_and_candidates():
    assert lookback_range(24, 96, 720) == (96, 720)
    assert lookback_range(168, 96, 720) == (168, 672)
    assert lookback_range(1000, 96, 720) is None
    assert period_candidates([168, 24, 24, 1000, 12, 1], 96, 720, 3) == [168, 24, 12]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_restart_after_kill_finishes_exactly_n(synth_csv, tmp_path):
    csv = synth_csv(n=1200)
    out = tmp_path / "tune"
    summary = run_tune(_spec(csv, out, trials=2), progress=False, plots=False)
    assert summary["counts"]["complete"] == 2

    # A worker killed mid-trial: the trial stays RUNNING and its heartbeat stops.
    spec = _spec(csv, out, trials=5)
    study = open_study(spec)
    trial = study.ask()
    suggest(trial, spec, study.user_attrs)
    study._storage.record_heartbeat(trial._trial_id)
    killed = trial.number
    time.sleep(spec.grace_s + 0.5)

    summary = run_tune(spec, progress=False, plots=False)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 5
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert trials[killed].state == TrialState.FAIL  # the dead one is not counted ...
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1  # ... and was run again exactly once, with its parameters
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == trials[killed].params
    assert summary["counts"]["finished"] == 5

    # Asking for the same total again runs nothing.
    n_before = len(study.get_trials())
    run_tune(spec, progress=False, plots=False)
    assert len(study.get_trials()) == n_before


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_past_the_budget_is_surplus(synth_csv, tmp_path):
    spec = _spec(synth_csv(n=1200), tmp_path / "tune", trials=2)
    run_tune(spec, progress=False, plots=False)
    study = open_study(spec)
    trial = study.ask()  # a second worker that lost the race for the last slot
    with pytest.raises(SurplusTrial):
        Objective(spec, study.user_attrs)(trial)
    study.tell(trial, state=TrialState.FAIL)
    c = _counts(study)
    assert c["finished"] == 2 and c["discarded"] == 1


def test_best_config_is_a_run_config(synth_csv, tmp_path):
    from experiments.config import RunConfig
    from experiments.run import run

    csv = synth_csv(n=1200)
    out = tmp_path / "tune"
    run_tune(_spec(csv, out, trials=3), progress=False)
    for name in (
        "best_config.yaml",
        "study_summary.md",
        "trials.csv",
        "tune.log",
        "tune_history.png",
    ):
        assert (out / name).is_file(), name
    cfg = RunConfig.from_file(out / "best_config.yaml")
    assert cfg.members == ["snaive"] and cfg.seq_len % cfg.member_params["snaive"]["period"] == 0
    cfg.out = str(tmp_path / "run")
    res = run(cfg, progress=False)  # what `hybrid-forecast run --config` does with it
    assert res["test"]["snaive"]["mse"] > 0


def test_trials_never_see_the_test_rows(synth_csv, tmp_path):
    # Tuning scores on validation: scrambling the rows only test windows reach (the last
    # 20 % of a 70/10/20 file) leaves every trial's value unchanged.
    import numpy as np

    def scramble(df):
        tail = slice(int(len(df) * 0.9), len(df))
        rng = np.random.default_rng(5)
        for col in df.columns[1:]:
            df.loc[df.index[tail], col] = rng.permutation(df[col].to_numpy()[tail]) * 3
        return df

    def values(csv, out, enqueue=()):
        for params in enqueue:  # two studies on different data: ask for the same settings
            open_study(_spec(csv, out, 3), create=True).enqueue_trial(params)
        run_tune(_spec(csv, out, trials=3), progress=False, plots=False)
        done = [t for t in open_study(_spec(csv, out, 3)).trials if t.state == TrialState.COMPLETE]
        return [(t.params, t.value) for t in sorted(done, key=lambda t: t.number)]

    clean = values(synth_csv(n=1200), tmp_path / "a")
    wrecked_csv = synth_csv(n=1200, edit=scramble, name="w.csv")
    wrecked = values(wrecked_csv, tmp_path / "b", enqueue=[p for p, _ in clean])
    assert len(clean) == 3 and clean == wrecked


def test_bad_input_is_a_user_error(synth_csv, tmp_path):
    from ensemble.errors import UserError

    csv = synth_csv(n=1200)
    with pytest.raises(UserError, match="--trials"):
        run_tune(_spec(csv, tmp_path / "t", trials=0), progress=False)
    spec = _spec(csv, tmp_path / "t2", trials=1)
    spec.members = ["nope"]
    with pytest.raises(UserError, match="unknown member"):
        run_tune(spec, progress=False)


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(member_params={"snaive": {"period": "abc"}}), "wrong type or value"),
        (dict(members=["dlinear@kernal=3"]), "unknown dlinear setting"),
        (dict(seed=-1), "--seed must lie in"),
        (dict(max_periods=0), "--max-periods must be at least 1"),
        # a patch longer than the lookback: the fix is tune's flag, not run's --seq-len
        (dict(members=["patchtst"], min_seq_len=4, max_seq_len=8), "is --max-seq-len: raise"),
    ],
)
def test_bad_settings_fail_before_any_trial(change, needle, synth_csv, tmp_path):
    # Not N failed trials and exit 0: the study must not even be created.
    from ensemble.errors import UserError

    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    for k, v in change.items():
        setattr(spec, k, v)
    with pytest.raises(UserError, match=needle):
        run_tune(spec, progress=False)
    assert not (tmp_path / "t" / "trials.csv").exists()


def test_max_seq_len_the_data_cannot_hold_is_refused(synth_csv, tmp_path):
    # Not every trial with a long lookback failing, and exit 0.
    from ensemble.errors import UserError

    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    spec.max_seq_len = 5000
    with pytest.raises(UserError, match="lower --max-seq-len"):
        run_tune(spec, progress=False, plots=False)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_ctrl_c_is_no_failed_trial_warning_and_the_study_resumes(
    synth_csv, tmp_path, monkeypatch, caplog
):
    import logging

    caplog.set_level(logging.INFO)  # another test's `run` may have raised it
    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    evaluate = _interrupt_at(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    # Optuna's "Trial 1 failed ... KeyboardInterrupt" and its traceback stay off the console
    # (WARNING and up there): the CLI's one "interrupted" line is all Ctrl-C shows.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in loud if "Trial 1" in r.getMessage() or r.exc_info]
    assert any("KeyboardInterrupt" in r.getMessage() for r in caplog.records)  # tune.log has it

    monkeypatch.setattr(Objective, "_evaluate", evaluate)
    summary = run_tune(spec, progress=False, plots=False)
    assert summary["counts"]["complete"] == 3 and summary["counts"]["discarded"] == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_study(synth_csv, tmp_path, monkeypatch):
    import gc
    import os
    import signal
    import sys

    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=4)
    evaluate = Objective._evaluate

    class Bar:  # tqdm's __del__, run by Optuna's gc after the trial, when Ctrl-C lands
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finalizer

    def leaves_a_bar(self, trial):
        if trial.number == 0:
            bar = Bar()
            bar.cycle = bar  # freed by the collector, not at once
        return evaluate(self, trial)

    gc.collect()
    monkeypatch.setattr(Objective, "_evaluate", leaves_a_bar)
    printed = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_type))
    hook = sys.unraisablehook
    # Ctrl-C as in a terminal: a test run started in the background of a script starts
    # with SIGINT ignored (bash does that), and the kill above would then do nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_tune(spec, progress=False, plots=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    study = open_study(spec)
    assert _counts(study)["finished"] == 1  # stopped after the trial it landed in
    assert printed == []  # nor printed as "Exception ignored in ..." with a traceback
    assert sys.unraisablehook is hook  # put back


def test_an_interrupted_extension_reports_the_trials_it_finished(
    synth_csv, tmp_path, monkeypatch, capsys
):
    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    run_tune(spec, progress=False, plots=False)
    evaluate = Objective._evaluate

    def better_then_interrupted(self, trial):
        if trial.number == 2:
            evaluate(self, trial)
            return 1e-6  # a new best, found before the Ctrl-C
        if trial.number == 3:
            raise KeyboardInterrupt
        return evaluate(self, trial)

    monkeypatch.setattr(Objective, "_evaluate", better_then_interrupted)
    spec.trials = 5
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=True, plots=False)
    assert "resuming study" in capsys.readouterr().err  # said on the console
    summary = json.loads((tmp_path / "t" / "study_summary.json").read_text(encoding="utf-8"))
    assert summary["best"]["number"] == 2 and summary["counts"]["complete"] == 3
    best = (tmp_path / "t" / "best_config.yaml").read_text(encoding="utf-8")
    assert "best trial 2 " in best and "best of 3 finished of 5 trials" in best
    run_tune(spec, progress=False, plots=False)  # finished: no such warning
    assert "finished of" not in (tmp_path / "t" / "best_config.yaml").read_text(encoding="utf-8")


def test_fewer_trials_than_the_study_has_adds_none_and_says_so(synth_csv, tmp_path, capsys):
    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    run_tune(spec, progress=False, plots=False)
    spec.trials = 2
    summary = run_tune(spec, progress=True, plots=False)
    err = capsys.readouterr().err
    assert "already has 3 finished trials" in err and "3 of 2" not in err
    assert summary["counts"]["complete"] == 3


def test_a_storage_another_process_is_creating_is_tried_again(monkeypatch):
    import sqlite3

    from experiments import tune

    monkeypatch.setattr(tune.time, "sleep", lambda s: None)
    calls = []

    def created_elsewhere():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "storage"

    assert tune._retry_while_created_elsewhere(created_elsewhere) == "storage"
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("file is not a database")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError):
        tune._retry_while_created_elsewhere(broken)
    assert len(calls) == 1  # not retried


@pytest.mark.filterwarnings("ignore:RetryFailedTrialCallback has been deprecated")
def test_an_optuna_before_4_9_gets_its_retry_callback_under_its_own_name(monkeypatch, tmp_path):
    # optuna < 4.9 has RetryFailedTrialCallback and RDBStorage(failed_trial_callback=...):
    # the new keyword made every tune fail there ("cannot open" the storage)
    import optuna.storages

    from experiments import tune

    given = {}

    class OldStorage:
        def __init__(self, url, heartbeat_interval, grace_period, failed_trial_callback, **kw):
            given["callback"] = failed_trial_callback

    monkeypatch.delattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", raising=False)
    monkeypatch.setattr(optuna.storages, "RDBStorage", OldStorage)
    tune.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert given["callback"] is not None


def _two_period_csv(tmp_path: Path) -> Path:
    """Hourly, cycles of 24 and 40 steps: the analyser ranks 24 first."""
    import numpy as np
    import pandas as pd

    n, t = 2000, np.arange(2000)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="h")})
    for c in range(2):
        df[f"c{c}"] = (
            np.sin(2 * np.pi * t / 24 + c)
            + 0.8 * np.sin(2 * np.pi * t / 40)
            + 0.2 * rng.standard_normal(n)
        )
    path = tmp_path / "two.csv"
    df.to_csv(path, index=False)
    return path


def test_best_config_rebuilds_the_trial_that_chose_a_lower_ranked_period(tmp_path):
    # ARIMA takes its season from the first period it is handed: the config must hand
    # `run` the trial's periods (chosen first), not the analyser's (24 first)
    from experiments.config import RunConfig
    from experiments.run import run

    csv, out = _two_period_csv(tmp_path), tmp_path / "tune"
    spec = _spec(csv, out, trials=1)
    spec.members, spec.max_seq_len = ["arima"], 160
    spec.member_params = {"arima": {"fit_rows": 400}}
    study = open_study(spec, create=True)
    assert study.user_attrs["ranked_periods"][:2] == [24, 40]
    study.enqueue_trial({"period": 40, "seq_len_p40": 80})
    summary = run_tune(spec, progress=False, plots=False)
    cfg = RunConfig.from_file(out / "best_config.yaml")
    assert cfg.periods[0] == 40 and cfg.periods == study.trials[0].user_attrs["periods"]
    cfg.out = str(tmp_path / "run")
    res = run(cfg, progress=False)
    assert res["periods"] == cfg.periods
    assert res["val"]["arima"]["mse"] == pytest.approx(summary["best"]["val_mse"], rel=1e-9)


@pytest.mark.parametrize(
    "change,needle",
    [
        ("seed", "made for seed=0, not 7"),
        ("data", "made for the data file's values, changed"),
        ("max_seq_len", "made for max_seq_len=96, not 72"),
    ],
)
def test_resuming_a_study_made_for_other_settings_is_refused(change, needle, synth_csv, tmp_path):
    from ensemble.errors import UserError

    csv, out = synth_csv(n=1200), tmp_path / "tune"
    run_tune(_spec(csv, out, trials=1), progress=False, plots=False)
    spec = _spec(csv, out, trials=2)
    if change == "seed":
        spec.seed = 7
    elif change == "max_seq_len":
        spec.max_seq_len = 72
    else:  # the same file name over other values
        csv.write_text(
            synth_csv(n=1200, period=12, name="other.csv").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
    with pytest.raises(UserError, match=needle):
        run_tune(spec, progress=False, plots=False)


def test_a_folder_of_another_study_is_refused(synth_csv, tmp_path):
    from ensemble.errors import UserError

    csv, out = synth_csv(n=1200), tmp_path / "tune"
    run_tune(_spec(csv, out, trials=1), progress=False, plots=False)
    before = (out / "trials.csv").read_text(encoding="utf-8")
    # another horizon: another default study name, in the same folder and database
    spec = replace(_spec(csv, out, trials=1), pred_len=12, study=None).resolved()
    with pytest.raises(
        UserError, match="holds the reports of study 'synth_24_snaive', not 'synth_12_snaive'"
    ):
        run_tune(spec, progress=False, plots=False)
    assert (out / "trials.csv").read_text(encoding="utf-8") == before


def test_same_command_same_draws(synth_csv, tmp_path):
    csv = synth_csv(n=1200)
    params = []
    for name in ("a", "b"):
        run_tune(_spec(csv, tmp_path / name, trials=3), progress=False, plots=False)
        study = open_study(_spec(csv, tmp_path / name, trials=3))
        params.append([t.params for t in study.trials])
    assert params[0] == params[1]


def test_a_study_interrupted_and_resumed_draws_what_the_uninterrupted_one_did(
    synth_csv, tmp_path, monkeypatch
):
    # The sampler used to be seeded once per start from the trials the study held, and a
    # Ctrl-C'd trial was never run again: the resumed study drew other configurations
    csv = synth_csv(n=1200)
    run_tune(_spec(csv, tmp_path / "whole", trials=6), progress=False, plots=False)
    evaluate = _interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_tune(_spec(csv, tmp_path / "cut", trials=6), progress=False, plots=False)
    monkeypatch.setattr(Objective, "_evaluate", evaluate)
    run_tune(_spec(csv, tmp_path / "cut", trials=6), progress=False, plots=False)

    def done(name):
        study = open_study(_spec(csv, tmp_path / name, trials=6))
        return [(t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE]

    whole, cut = done("whole"), done("cut")
    assert len(whole) == 6 and cut == whole
    retried = open_study(_spec(csv, tmp_path / "cut", trials=6)).trials[3]
    assert retried.user_attrs["retry_of"] == 2


@pytest.mark.parametrize(
    "storage,needle",
    [("notadb.txt", "not a usable SQLite database"), ("sqlite://", "in-memory")],
)
def test_unusable_storage_is_a_user_error(storage, needle, synth_csv, tmp_path):
    from ensemble.errors import UserError

    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    if storage.endswith(".txt"):
        storage = str(tmp_path / storage)
        Path(storage).write_text("not a database\n" * 100, encoding="utf-8")
    spec.storage = storage
    with pytest.raises(UserError, match=needle):
        run_tune(spec.resolved(), progress=False, plots=False)


def test_patch_choices_fit_the_shortest_lookback():
    from experiments.tune import patch_choices

    for period, shortest in ((7, 7), (7, 14), (24, 96), (168, 168), (5, 3)):
        for choice in patch_choices(period, shortest):
            assert int(choice.split("/")[0]) <= shortest, (period, shortest, choice)
    assert "16/8" in patch_choices(24, 96)  # the official patch where it fits
    assert {"24/12", "24/24"} <= set(patch_choices(24, 96))  # with and without overlap


def test_epoch_hook_feeds_the_pruner_during_training(synth_splits):
    # the members' training loops call on_epoch after every epoch, so a pruner can stop
    # a trial mid-training (an exception from the hook ends the fit)
    from classical.dlinear import DLinear
    from experiments.tune import attach_epoch_callback

    splits = synth_splits(seq_len=96, pred_len=24, n=1200)
    model = DLinear(96, 24, epochs=4, patience=10, progress=False)
    seen: list[tuple[int, float]] = []
    assert attach_epoch_callback(model, lambda e, v: seen.append((e, v)))
    model.fit(splits.train, splits.val)
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert [v for _, v in seen] == pytest.approx([h["val_mse"] for h in model.history])

    class Stop(Exception):
        pass

    def stop(epoch: int, val: float) -> None:
        if epoch == 2:
            raise Stop

    model = DLinear(96, 24, epochs=4, patience=10, progress=False)
    attach_epoch_callback(model, stop)
    with pytest.raises(Stop):
        model.fit(splits.train, splits.val)


def test_a_study_whose_trials_all_fail_exits_1(synth_csv, tmp_path, monkeypatch, capsys):
    from experiments.cli import main

    def broken(self, trial):
        raise RuntimeError("boom")

    monkeypatch.setattr(Objective, "_evaluate", broken)
    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--members"]
    argv += ["snaive", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "2"]
    assert main([*argv, "--out", str(tmp_path / "t"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no trial completed; trial 0 failed with RuntimeError: boom" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "case,needle",
    [
        ("max_seq_len", "lower --max-seq-len"),
        ("short", "lower --min-seq-len or --pred-len"),  # tune has no --seq-len
        ("storage", "--storage foo://bar: cannot open"),
        ("file_as_folder", "is a file, not a folder"),  # e.g. /dev/null/study.db
    ],
)
def test_refused_input_leaves_no_folder_or_study(case, needle, synth_csv, tmp_path):
    from ensemble.errors import UserError

    spec = _spec(synth_csv(n=150 if case == "short" else 1200), tmp_path / "t", trials=1)
    if case == "max_seq_len":
        spec.max_seq_len = 5000
    if case == "storage":
        spec.storage = "foo://bar"
    if case == "file_as_folder":
        (tmp_path / "afile").write_text("", encoding="utf-8")
        spec.storage = f"sqlite:///{tmp_path / 'afile' / 'study.db'}"
    with pytest.raises(UserError, match=needle) as exc:
        run_tune(spec, progress=False, plots=False)
    assert "--seq-len/" not in str(exc.value)
    assert not (tmp_path / "t").exists()  # no tune.log, no empty study.db


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_refused_resume_is_in_tune_log(synth_csv, tmp_path):
    from ensemble.errors import UserError

    spec = _spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    run_tune(spec, progress=False, plots=False)
    spec.seed = 1
    with pytest.raises(UserError, match="was made for seed=0"):
        run_tune(spec, progress=False, plots=False)
    assert "stopped before any trial: study" in (tmp_path / "t" / "tune.log").read_text(
        encoding="utf-8"
    )


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_no_pruning_warning_for_members_without_epochs(synth_csv, tmp_path, caplog):
    # snaive reports no per-epoch values: Optuna's "You need to set up the pruning
    # feature" warning reached the console.
    import logging

    caplog.set_level(logging.WARNING)
    run_tune(_spec(synth_csv(n=1200), tmp_path / "t", trials=1), progress=False, plots=True)
    assert not [r for r in caplog.records if "pruning feature" in r.getMessage()]
    assert (tmp_path / "t" / "tune_history.png").is_file()


_SIGTERM_TUNE = """
import os, signal, sys, time
from experiments.cli import main
from experiments.tune import Objective

def killed(self, trial):  # SIGTERM (a timeout, a scheduler) in the middle of a trial
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)

Objective._evaluate = killed
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_fails_the_running_trial_at_once(synth_csv, tmp_path):
    # Killed outright, the trial stayed RUNNING and a rerun waited out its heartbeat grace.
    import subprocess
    import sys

    out = tmp_path / "t"
    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24"]
    argv += ["--members", "snaive", "--min-seq-len", "48", "--max-seq-len", "96"]
    argv += ["--trials", "2", "--out", str(out), "--quiet"]
    p = subprocess.run(
        [sys.executable, "-c", _SIGTERM_TUNE, *argv], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 143, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), lines
    study = optuna.load_study(study_name="synth_24_snaive", storage=f"sqlite:///{out}/study.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "interrupted" in (out / "tune.log").read_text(encoding="utf-8")


def test_each_trial_starts_with_the_last_trials_members_freed(synth_csv, tmp_path, monkeypatch):
    # As in `run`: a member held by a reference cycle (a pruned trial's traceback makes
    # one) must not stay on the GPU while the next trial loads its own (Optuna collects
    # after each trial: gc_after_trial).
    import gc
    import sys
    import weakref

    from classical.naive import SeasonalNaive

    alive, members = [], []
    fit = SeasonalNaive.fit

    def fit_in_a_cycle(self, train, val):
        alive.append(sum(ref() is not None for ref in members))
        members.append(weakref.ref(self))
        cycle = [sys._getframe()]
        assert cycle
        return fit(self, train, val)

    monkeypatch.setattr(SeasonalNaive, "fit", fit_in_a_cycle)
    gc.disable()
    try:
        run_tune(_spec(synth_csv(n=1200), tmp_path / "t", trials=3), progress=False)
    finally:
        gc.enable()
    assert alive == [0, 0, 0]


def test_settings_the_user_fixed_are_not_tuned_and_specs_with_settings_are(tmp_path):
    spec = replace(
        _spec(tmp_path / "x.csv", tmp_path / "t", trials=1),
        members=["dlinear@lr=0.01", "patchtst", "nlinear"],
        member_params={"patchtst": {"patch_len": 12}, "nlinear": {"epochs": 2}},
    )
    attrs = {"periods": [24], "min_seq_len": 48, "max_seq_len": 96}
    attrs["patch_choices"] = {"24": ["8/4", "24/24"]}
    trial = optuna.create_study().ask()
    _, _, tuned = suggest(trial, spec, attrs)
    # dlinear@lr=0.01 is tuned (by its base name) but keeps its own lr; patchtst keeps the
    # --set patch length and tunes its lr; nlinear's fixed epochs leave its lr tuned
    assert set(tuned) == {"dlinear", "patchtst", "nlinear"}
    assert "lr" not in tuned["dlinear"] and "kernel" in tuned["dlinear"]
    assert set(tuned["patchtst"]) == {"lr"} and set(tuned["nlinear"]) == {"lr"}
    assert not any(k.startswith(("dlinear.lr", "patchtst.patch")) for k in trial.params)


def test_the_search_space_table_matches_what_each_space_draws(tmp_path):
    from experiments.tune import SPACES, TUNED_GROUPS

    attrs = {"patch_choices": {"24": ["8/4", "24/24"]}}
    assert set(SPACES) == set(TUNED_GROUPS)
    for base, groups in TUNED_GROUPS.items():
        every = {k for g in groups for k in g}
        assert set(SPACES[base](optuna.create_study().ask(), 24, 96, attrs, set())) == every
        for g in groups:  # fixing one key of a group keeps the whole group out
            drawn = SPACES[base](optuna.create_study().ask(), 24, 96, attrs, {g[0]})
            assert set(drawn) == every - set(g), (base, g)


def test_a_study_from_before_fixed_settings_were_kept_out_is_not_resumed(synth_csv, tmp_path):
    from ensemble.errors import UserError
    from experiments.tune import _identity, _load, check_identity

    spec = replace(
        _spec(synth_csv(n=1200), tmp_path / "t", trials=1),
        members=["dlinear"],
        member_params={"dlinear": {"lr": 0.01}},
    )
    old = {k: v for k, v in _identity(spec).items() if k != "search_space"}
    with pytest.raises(UserError, match="tuned settings you fix now"):
        check_identity(spec, old, _load(spec))
    plain = replace(spec, member_params={})  # nothing fixed: the old study's space, resumed
    check_identity(plain, {k: v for k, v in _identity(plain).items() if k != "search_space"})
    assert _identity(spec)["search_space"] == {"dlinear": ["kernel"]}


def test_an_ms_study_from_before_ms_fitted_the_target_is_not_resumed(synth_csv, tmp_path):
    # its trials scored all-channel fits: resumed, one "best" would mix two losses
    from ensemble.errors import UserError
    from experiments.tune import _identity, _load, check_identity

    spec = replace(_spec(synth_csv(n=1200), tmp_path / "t", trials=1), features="MS")
    now = _identity(spec)
    check_identity(spec, now, _load(spec))
    old = {k: v for k, v in now.items() if k != "ms_loss"}
    with pytest.raises(UserError, match="before --features MS trained the classical members"):
        check_identity(spec, old, _load(spec))
    m = replace(spec, features="M")  # M studies are as they were
    assert "ms_loss" not in _identity(m)


def test_the_summary_names_the_patch_choices_of_a_patched_member():
    from experiments.tune import _summary_md

    counts = dict.fromkeys(
        ("finished", "complete", "pruned", "error", "discarded", "running", "waiting"), 0
    )
    summary = {"study": "s", "storage": "x", "asked_trials": 1, "counts": counts}
    md = _summary_md({**summary, "periods": [24], "patch_choices": {"24": ["24/12", "24/24"]}}, [])
    assert "Patch/stride choices per period: 24: 24/12, 24/24." in md
    assert "Patch/stride" not in _summary_md({**summary, "periods": [24]}, [])


def test_two_commands_starting_a_trial_at_once_draw_different_settings():
    # each command is worker 0 and both start at 0 finished trials: seeded before the
    # trial existed, they drew the same settings (a wasted trial, a smaller search)
    import optuna

    from experiments.tune import _seeded_at_trial_start

    spec = TuneSpec(dataset="ETTh1", pred_len=24, members=["snaive"], trials=6)
    study = optuna.create_study()
    draws = []
    for _ in range(2):  # the second starts while the first is still running
        study.sampler = _seeded_at_trial_start(spec, worker=0)
        draws.append(study.ask().suggest_float("x", 0.0, 1.0))
    assert draws[0] != draws[1]
    alone = optuna.create_study()  # a lone command's first trial draws what it always did
    alone.sampler = _seeded_at_trial_start(spec, worker=0)
    assert alone.ask().suggest_float("x", 0.0, 1.0) == draws[0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask(), not optimize()
def test_a_trial_of_a_killed_process_here_is_run_again_at_once(synth_csv, tmp_path):
    # waiting out the heartbeat grace, a rerun drew a fresh trial beside the dead one with
    # the same seed, then ran the dead one's settings again: one setting twice, one never
    import os
    import socket
    import subprocess
    import sys

    from optuna.trial import TrialState

    from experiments.tune import fail_dead_local_trials, machine_identity

    study = open_study(_spec(synth_csv(n=1400), tmp_path / "t", trials=3), create=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = machine_identity()
    owners = [(gone.pid, here), (os.getppid(), here)]
    # its process cannot be looked up from here: a container with this host name, say
    owners.append((gone.pid, socket.gethostname() + "/another-boot/pid:[1]"))
    for pid, host in owners:
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("worker", pid)
        trial.set_user_attr("host", host)
    fail_dead_local_trials(study)
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[3].params == study.trials[0].params  # queued again, as it was


def test_hyperband_brackets_do_not_repeat_each_others_draws():
    # the sampler saw only its trial's bracket under Hyperband: counts, and so seeds and
    # draws, repeated across brackets
    import optuna

    from experiments.tune import _sampler_and_pruner, _seeded_at_trial_start

    spec = TuneSpec(dataset="ETTh1", pred_len=24, members=["snaive"], trials=30)
    spec.pruner = "hyperband"
    study = optuna.create_study(pruner=_sampler_and_pruner(spec, spec.trials)[1])

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(9):
            trial.report(x + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for _ in range(10):
        study.sampler = _seeded_at_trial_start(spec, 0)
        study.optimize(objective, n_trials=1)
    draws = [t.params["x"] for t in study.trials]
    assert len(set(draws)) == len(draws)
