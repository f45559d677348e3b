"""Tuning end to end: exactly N finished trials across kills, interrupts and reruns; bad input
refused before anything is written."""

from __future__ import annotations

import json
import time

import pytest

optuna = pytest.importorskip("optuna")
from conftest import interrupt_trial, tune_spec  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from experiments.tune import run_tune  # noqa: E402
from experiments.tune_objective import Objective  # noqa: E402
from experiments.tune_space import suggest  # noqa: E402
from experiments.tune_study import open_study  # noqa: E402


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_restart_after_kill_finishes_exactly_n(synth_csv, tmp_path):
    csv = synth_csv(n=1200)
    out = tmp_path / "tune"
    summary = run_tune(tune_spec(csv, out, trials=2), progress=False, plots=False)
    assert summary["counts"]["complete"] == 2

    # A worker killed mid-trial: the trial stays RUNNING and its heartbeat stops.
    spec = tune_spec(csv, out, trials=5)
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


def test_bad_input_is_a_user_error(synth_csv, tmp_path):
    from ensemble.errors import UserError

    csv = synth_csv(n=1200)
    with pytest.raises(UserError, match="--trials"):
        run_tune(tune_spec(csv, tmp_path / "t", trials=0), progress=False)
    spec = tune_spec(csv, tmp_path / "t2", trials=1)
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
        # run's message, not advice to lower --min-seq-len
        (dict(percent=0), r"--percent must be in \(0, 100\] \(got 0\)$"),
        # a patch longer than the lookback: the fix is tune's flag, not run's --seq-len
        (dict(members=["patchtst"], min_seq_len=4, max_seq_len=8), "is --max-seq-len: raise"),
        # a fixed patch longer than the shortest lookback: every trial drawing it failed
        (
            dict(members=["patchtst@patch_len=64"], min_seq_len=24, max_seq_len=96),
            "may draw is 24, the least multiple of a period candidate from --min-seq-len",
        ),
    ],
)
def test_bad_settings_fail_before_any_trial(change, needle, synth_csv, tmp_path):
    # Not N failed trials and exit 0: the study must not even be created.
    from ensemble.errors import UserError

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    for k, v in change.items():
        setattr(spec, k, v)
    with pytest.raises(UserError, match=needle):
        run_tune(spec, progress=False)
    assert not (tmp_path / "t" / "trials.csv").exists()


def test_max_seq_len_the_data_cannot_hold_is_refused(synth_csv, tmp_path):
    # Not every trial with a long lookback failing, and exit 0.
    from ensemble.errors import UserError

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    spec.max_seq_len = 5000
    with pytest.raises(UserError, match="lower --max-seq-len"):
        run_tune(spec, progress=False, plots=False)


def test_an_interrupted_extension_reports_the_trials_it_finished(
    synth_csv, tmp_path, monkeypatch, capsys
):
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
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
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    run_tune(spec, progress=False, plots=False)
    capsys.readouterr()
    spec.trials = 2
    summary = run_tune(spec, progress=False, plots=False)  # said without the bar too
    err = capsys.readouterr().err
    assert "already has 3 finished trials" in err and "3 of 2" not in err
    assert summary["counts"]["complete"] == 3
    spec.trials = 4
    run_tune(spec, progress=False, plots=False)
    assert (
        "resuming study synth_24_snaive: 3 of 4 trials finished before" in capsys.readouterr().err
    )


def test_same_command_same_draws(synth_csv, tmp_path):
    csv = synth_csv(n=1200)
    params = []
    for name in ("a", "b"):
        run_tune(tune_spec(csv, tmp_path / name, trials=3), progress=False, plots=False)
        study = open_study(tune_spec(csv, tmp_path / name, trials=3))
        params.append([t.params for t in study.trials])
    assert params[0] == params[1]


def test_a_study_interrupted_and_resumed_draws_what_the_uninterrupted_one_did(
    synth_csv, tmp_path, monkeypatch
):
    # The sampler used to be seeded once per start from the trials the study held, and a
    # Ctrl-C'd trial was never run again: the resumed study drew other configurations
    csv = synth_csv(n=1200)
    run_tune(tune_spec(csv, tmp_path / "whole", trials=6), progress=False, plots=False)
    evaluate = interrupt_trial(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_tune(tune_spec(csv, tmp_path / "cut", trials=6), progress=False, plots=False)
    monkeypatch.setattr(Objective, "_evaluate", evaluate)
    run_tune(tune_spec(csv, tmp_path / "cut", trials=6), progress=False, plots=False)

    def done(name):
        study = open_study(tune_spec(csv, tmp_path / name, trials=6))
        return [(t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE]

    whole, cut = done("whole"), done("cut")
    assert len(whole) == 6 and cut == whole
    retried = open_study(tune_spec(csv, tmp_path / "cut", trials=6)).trials[3]
    assert retried.user_attrs["retry_of"] == 2


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

    def pruned(self, trial):
        raise optuna.TrialPruned()

    monkeypatch.setattr(Objective, "_evaluate", pruned)  # exited 0 without a best config
    assert main([*argv, "--out", str(tmp_path / "p"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no trial completed (2 pruned, 0 failed), so there is no best_config.yaml" in err
    assert not (tmp_path / "p" / "best_config.yaml").exists()


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

    spec = tune_spec(synth_csv(n=150 if case == "short" else 1200), tmp_path / "t", trials=1)
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

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    run_tune(spec, progress=False, plots=False)
    spec.seed = 1
    with pytest.raises(UserError, match="was made for seed=0"):
        run_tune(spec, progress=False, plots=False)
    assert "stopped before any trial: study" in (tmp_path / "t" / "tune.log").read_text(
        encoding="utf-8"
    )


def test_target_fill_and_percent_reach_the_trials_the_study_and_best_config(
    synth_csv, tmp_path, capsys
):
    # tune had none of them: S on a file whose target is not OT tuned the last column
    # silently, a file with a gap could not be tuned, few-shot not at all
    from experiments.cli import main
    from experiments.config import RunConfig
    from experiments.tune_study import open_study

    def gap(df):
        df.loc[5, "x0"] = float("nan")
        return df

    csv = str(synth_csv(n=1200, edit=gap))
    argv = ["tune", "--data-path", csv, "--features", "S", "--target", "x0", "--fill", "ffill"]
    argv += ["--members", "snaive", "--pred-len", "24", "--min-seq-len", "48"]
    argv += ["--max-seq-len", "96", "--trials", "1", "--quiet", "--out", str(tmp_path / "t")]
    assert main([*argv, "--percent", "50"]) == 0
    cfg = RunConfig.from_file(tmp_path / "t" / "best_config.yaml")
    assert (cfg.target, cfg.fill, cfg.percent) == ("x0", "ffill", 50)
    assert open_study(cfg_spec(tmp_path)).user_attrs["target"] == "x0"
    capsys.readouterr()
    assert main([*argv, "--percent", "100", "--trials", "2"]) == 2  # another experiment
    assert "was made for percent=50, not 100" in capsys.readouterr().err
    other = [a if a != "x0" else "x1" for a in argv]
    assert main([*other, "--percent", "50", "--trials", "2"]) == 2
    assert "was made for target='x0', not 'x1'" in capsys.readouterr().err


def cfg_spec(tmp_path):
    import json

    from experiments.tune import TuneSpec

    return TuneSpec(**json.loads((tmp_path / "t" / "tune_spec.json").read_text(encoding="utf-8")))


def test_a_fixed_patch_longer_than_min_seq_len_but_within_every_drawn_lookback_is_tuned(
    synth_csv, tmp_path
):
    # lookbacks are multiples of a period (24): from --min-seq-len 40 on, 48 at least
    from ensemble.errors import UserError
    from experiments.tune import validate

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    spec.members, spec.min_seq_len, spec.max_seq_len = ["patchtst@patch_len=48"], 40, 96
    assert validate(spec)["periods"] == [24]
    spec.min_seq_len = 24
    with pytest.raises(UserError, match="may draw is 24"):
        validate(spec)


def test_a_val_stride_leaving_too_few_windows_is_refused(synth_csv, tmp_path):
    # 2 scored windows of 97 (one random plus the last) cannot rank trials
    from ensemble.errors import UserError

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    spec.val_stride = 50
    with pytest.raises(
        UserError, match=r"--val-stride 50 would score a trial on 1 of 97 .* at most 9"
    ):
        run_tune(spec, progress=False, plots=False)
    assert not (tmp_path / "t").exists()
    spec.val_stride = 9
    run_tune(spec, progress=False, plots=False)


def test_a_rerun_after_an_interrupted_first_trial_says_it_resumes(
    synth_csv, tmp_path, monkeypatch, capsys
):
    # the only trial was FAIL (interrupted) and queued again: 0 finished, 0 running, and
    # the rerun looked like a new study
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    evaluate = interrupt_trial(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    monkeypatch.setattr(Objective, "_evaluate", evaluate)
    capsys.readouterr()
    run_tune(spec, progress=False, plots=False)
    err = capsys.readouterr().err
    assert "resuming study synth_24_snaive: 0 of 1 trials finished before, 1 queued" in err


@pytest.mark.parametrize("found", [[100, 200], []])
def test_calendar_periods_the_analyser_did_not_find_are_warned_of_and_named(
    found, synth_csv, tmp_path, monkeypatch, caplog
):
    # no period it found has a multiple in [48, 96], or it found none (white noise): the
    # study tuned the hourly calendar's 12 and 24, silently, and study_summary called them
    # the train rows' candidates
    import logging

    from experiments import tune_study

    monkeypatch.setattr(tune_study, "ranked_periods", lambda splits, k: found)
    caplog.set_level(logging.WARNING, logger="hybrid_forecast.tune")
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    summary = run_tune(spec, progress=False, plots=False)
    (warned,) = [r.getMessage() for r in caplog.records]
    said = (
        "found in the train rows (100, 200) has a multiple in [--min-seq-len 48"
        if found
        else "the analyser found no period in the train rows"
    )
    assert said in warned and "calendar periods of the data's frequency (12, 24)" in warned
    assert summary["periods"] == [12, 24] and summary["periods_from"] == "calendar"
    held = json.loads((tmp_path / "t" / "study_summary.json").read_text(encoding="utf-8"))
    assert held["periods_from"] == "calendar" and held["ranked_periods"] == found
    md = (tmp_path / "t" / "study_summary.md").read_text(encoding="utf-8")
    assert "Period candidates (calendar periods of the data's frequency, a fallback" in md
    assert "(train rows)" not in md and ("[]" not in md or found)


@pytest.mark.parametrize("cores", [1, 2])
def test_jobs_start_no_more_workers_than_trials_left_and_warn_beyond_the_cores(
    cores, synth_csv, tmp_path, monkeypatch, caplog
):
    # --trials 2 --jobs 4 started 4 workers, two of them only to wait; 4 on 2 cores: slower
    # (the 2 started fit 2 cores: no warning there)
    import logging

    from experiments import tune
    from experiments.tune_workers import work

    started: list[int] = []

    def in_process(spec, study, show) -> None:
        started.append(spec.jobs)
        work(spec, on_progress=show)

    monkeypatch.setattr(tune, "run_processes", in_process)
    monkeypatch.setattr(tune.os, "cpu_count", lambda: cores)
    caplog.set_level(logging.WARNING, logger="hybrid_forecast.tune")
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    spec.jobs = 4
    assert run_tune(spec, progress=False, plots=False)["counts"]["complete"] == 2
    assert started == [2]
    warned = [r.getMessage() for r in caplog.records]
    assert warned == (
        [
            "--jobs 4 is more than this machine's 1 CPU cores: the workers share them and "
            "each trial runs slower; give --jobs 1 or fewer"
        ]
        if cores == 1
        else []
    )
    spec.trials = 3  # one left: this process runs it
    run_tune(spec, progress=False, plots=False)
    assert started == [2]
