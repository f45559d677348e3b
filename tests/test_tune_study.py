"""The study in its storage: storages opened (or refused) in one line, resumes checked
against the settings and data, seeds that never repeat a draw, killed trials run again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from conftest import tune_spec  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from experiments.member_cache import data_fingerprint  # noqa: E402
from experiments.tune import TuneSpec, run_tune  # noqa: E402
from experiments.tune_study import open_study, sqlite_url  # noqa: E402


def test_a_storage_another_process_is_creating_is_tried_again(monkeypatch):
    import sqlite3

    from experiments import tune_study

    monkeypatch.setattr(tune_study.time, "sleep", lambda s: None)
    calls = []

    def created_elsewhere():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "storage"

    assert tune_study._retry_while_created_elsewhere(created_elsewhere) == "storage"
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("file is not a database")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError):
        tune_study._retry_while_created_elsewhere(broken)
    assert len(calls) == 1  # not retried


@pytest.mark.filterwarnings("ignore:RetryFailedTrialCallback has been deprecated")
def test_an_optuna_before_4_9_gets_its_retry_callback_under_its_own_name(monkeypatch, tmp_path):
    # optuna < 4.9 has RetryFailedTrialCallback and RDBStorage(failed_trial_callback=...):
    # the new keyword made every tune fail there ("cannot open" the storage)
    import optuna.storages

    from experiments import tune_study

    given = {}

    class OldStorage:
        def __init__(self, url, heartbeat_interval, grace_period, failed_trial_callback, **kw):
            given["callback"] = failed_trial_callback

    monkeypatch.delattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", raising=False)
    monkeypatch.setattr(optuna.storages, "RDBStorage", OldStorage)
    tune_study.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert given["callback"] is not None


@pytest.mark.parametrize(
    "storage,needle",
    [("notadb.txt", "not a usable SQLite database"), ("sqlite://", "in-memory")],
)
def test_unusable_storage_is_a_user_error(storage, needle, synth_csv, tmp_path):
    from ensemble.errors import UserError

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    if storage.endswith(".txt"):
        storage = str(tmp_path / storage)
        Path(storage).write_text("not a database\n" * 100, encoding="utf-8")
    spec.storage = storage
    with pytest.raises(UserError, match=needle):
        run_tune(spec.resolved(), progress=False, plots=False)


@pytest.mark.parametrize(
    "change,needle",
    [
        ("seed", "made for seed=0, not 7"),
        ("data", "made for the data file's values, changed"),
        ("max_seq_len", "made for max_seq_len=96, not 72"),
        ("val_stride", "made for val_stride=1, not 4"),  # other windows score the trials
    ],
)
def test_resuming_a_study_made_for_other_settings_is_refused(change, needle, synth_csv, tmp_path):
    from ensemble.errors import UserError

    csv, out = synth_csv(n=1200), tmp_path / "tune"
    run_tune(tune_spec(csv, out, trials=1), progress=False, plots=False)
    spec = tune_spec(csv, out, trials=2)
    if change == "seed":
        spec.seed = 7
    elif change == "max_seq_len":
        spec.max_seq_len = 72
    elif change == "val_stride":
        spec.val_stride = 4
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
    run_tune(tune_spec(csv, out, trials=1), progress=False, plots=False)
    before = (out / "trials.csv").read_text(encoding="utf-8")
    # another horizon: another default study name, in the same folder and database
    spec = replace(tune_spec(csv, out, trials=1), pred_len=12, study=None).resolved()
    with pytest.raises(
        UserError,
        match=r"holds the reports of study 'synth_24_snaive', not 'synth_12_snaive' \(it was "
        r"made for pred_len=24, not 12\)",
    ):
        run_tune(spec, progress=False, plots=False)
    assert (out / "trials.csv").read_text(encoding="utf-8") == before
    with pytest.raises(UserError, match=r"not 'mine' \(another study's name\)"):
        run_tune(replace(spec, pred_len=24, study="mine"), progress=False, plots=False)


def test_folders_named_with_url_characters_keep_their_own_study(synth_csv, tmp_path):
    # SQLAlchemy percent-decodes a sqlite URL's path and cuts it at "?": "50%41" opened
    # "50A", and "a?x" and "a?y" shared the file "a" (the second reported the first's trial)
    csv = synth_csv(n=1200)
    for name in ("50%41", "a?x", "a?y", "b#1"):
        out = tmp_path / name
        summary = run_tune(tune_spec(csv, out, trials=1), progress=False, plots=False)
        assert summary["counts"]["complete"] == 1, name
        held = optuna.get_all_study_summaries(sqlite_url(out / "study.db"))
        assert [h.n_trials for h in held] == [1], name  # its own trial, in its own file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["50%41", "a?x", "a?y", "b#1", "synth.csv"]


def test_a_study_from_before_fixed_settings_were_kept_out_is_not_resumed(synth_csv, tmp_path):
    from ensemble.errors import UserError
    from experiments.tune_study import _identity, check_identity, load_study_data

    spec = replace(
        tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1),
        members=["dlinear"],
        member_params={"dlinear": {"lr": 0.01}},
    )
    data = {"data": data_fingerprint(load_study_data(spec))}
    old = {k: v for k, v in _identity(spec).items() if k != "search_space"} | data
    with pytest.raises(UserError, match="tuned settings you fix now"):
        check_identity(spec, old, load_study_data(spec))
    plain = replace(spec, member_params={})  # nothing fixed: the old study's space, resumed
    check_identity(plain, {k: v for k, v in _identity(plain).items() if k != "search_space"} | data)
    assert _identity(spec)["search_space"] == {"dlinear": ["kernel"]}


def test_a_study_that_recorded_no_settings_is_not_resumed(synth_csv, tmp_path):
    # made before the fifth of December: resumed, it took today's settings as its own
    # and best_config.yaml stated them for trials that ran with others
    from ensemble.errors import UserError
    from experiments.tune_study import _identity, check_identity, load_study_data

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    data = {"data": data_fingerprint(load_study_data(spec))}
    check_identity(spec, _identity(spec) | data)
    with pytest.raises(UserError, match="earlier version that did not record its settings"):
        check_identity(spec, {"periods": [24]})


def test_an_ms_study_from_before_ms_fitted_the_target_is_not_resumed(synth_csv, tmp_path):
    # its trials scored all-channel fits: resumed, one "best" would mix two losses
    from ensemble.errors import UserError
    from experiments.tune_study import _identity, check_identity, load_study_data

    spec = replace(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1), features="MS")
    now = _identity(spec) | {"data": data_fingerprint(load_study_data(spec))}
    check_identity(spec, now, load_study_data(spec))
    old = {k: v for k, v in now.items() if k != "ms_loss"}
    with pytest.raises(UserError, match="before --features MS trained the classical members"):
        check_identity(spec, old, load_study_data(spec))
    m = replace(spec, features="M")  # M studies are as they were
    assert "ms_loss" not in _identity(m)
    # an M study of today resumed under MS: its features differ, not its age
    made_m = _identity(m) | {"data": now["data"]}
    with pytest.raises(UserError, match="was made for features='M', not 'MS'"):
        check_identity(spec, made_m, load_study_data(spec))


def test_two_commands_starting_a_trial_at_once_draw_different_settings():
    # each command is worker 0 and both start at 0 finished trials: seeded before the
    # trial existed, they drew the same settings (a wasted trial, a smaller search)
    import optuna

    from experiments.tune_study import seeded_at_trial_start

    spec = TuneSpec(dataset="ETTh1", pred_len=24, members=["snaive"], trials=6)
    study = optuna.create_study()
    draws = []
    for _ in range(2):  # the second starts while the first is still running
        study.sampler = seeded_at_trial_start(spec, worker=0)
        draws.append(study.ask().suggest_float("x", 0.0, 1.0))
    assert draws[0] != draws[1]
    alone = optuna.create_study()  # a lone command's first trial draws what it always did
    alone.sampler = seeded_at_trial_start(spec, worker=0)
    assert alone.ask().suggest_float("x", 0.0, 1.0) == draws[0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask(), not optimize()
def test_a_trial_of_a_killed_process_here_is_run_again_at_once(synth_csv, tmp_path):
    # waiting out the heartbeat grace, a rerun drew a fresh trial beside the dead one with
    # the same seed, then ran the dead one's settings again: one setting twice, one never
    import os
    import socket
    import subprocess
    import sys

    from experiments.tune_study import fail_dead_local_trials, machine_identity

    study = open_study(tune_spec(synth_csv(n=1400), tmp_path / "t", trials=3), create=True)
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

    from experiments.tune_study import sampler_and_pruner, seeded_at_trial_start

    spec = TuneSpec(dataset="ETTh1", pred_len=24, members=["snaive"], trials=30)
    spec.pruner = "hyperband"
    study = optuna.create_study(pruner=sampler_and_pruner(spec, spec.trials)[1])

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(9):
            trial.report(x + step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for _ in range(10):
        study.sampler = seeded_at_trial_start(spec, 0)
        study.optimize(objective, n_trials=1)
    draws = [t.params["x"] for t in study.trials]
    assert len(set(draws)) == len(draws)


@pytest.mark.parametrize("freq,periods", [("h", [12, 24]), ("D", [7])])
def test_white_noise_gets_the_calendar_periods_of_its_frequency(freq, periods, tmp_path):
    # the analyser finds no period in noise: the study still needs candidates (a day and
    # half a day for hourly rows, a week for daily ones), or it refuses to start
    import numpy as np
    import pandas as pd

    from experiments.tune_study import study_attrs

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x0": rng.standard_normal(1200), "OT": rng.standard_normal(1200)})
    df.insert(0, "date", pd.date_range("2020-01-01", periods=1200, freq=freq))
    df.to_csv(tmp_path / "noise.csv", index=False)
    attrs = study_attrs(tune_spec(tmp_path / "noise.csv", tmp_path / "t", trials=1))
    assert attrs["ranked_periods"] == [] and attrs["periods"] == periods
    assert set(attrs["patch_choices"]) == {str(p) for p in periods}


def test_a_study_from_before_percent_was_recorded_ran_on_every_train_window(synth_csv, tmp_path):
    # it lacks the entry, but it was not few-shot: resumed with --percent 10 it would mix two
    from ensemble.errors import UserError
    from experiments.tune_study import _identity, check_identity, load_study_data

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    old = _identity(spec) | {"data": data_fingerprint(load_study_data(spec))}
    old = {k: v for k, v in old.items() if k not in ("target", "fill", "percent")}
    check_identity(spec, old, load_study_data(spec))  # the same experiment: resumed
    with pytest.raises(UserError, match="was made for percent=100, not 10"):
        check_identity(replace(spec, percent=10), old, load_study_data(spec))


def test_a_relative_sqlite_url_names_one_file_from_any_folder(synth_csv, tmp_path, monkeypatch):
    # sqlite:///rel.db stayed relative: the same command from another folder began a fresh
    # study in another rel.db, and its text matched tune_spec.json, so it replaced the
    # first study's reports; sqlite:///rs/study.db was refused where rs/study.db resumed
    from ensemble.errors import UserError

    csv, out = synth_csv(n=1200), tmp_path / "out"
    for folder in ("a", "b", "rs"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    spec = replace(tune_spec(csv, out, trials=1), storage="sqlite:///rel.db")
    assert spec.resolved().storage == sqlite_url(tmp_path / "a" / "rel.db")
    assert replace(spec, storage="sqlite:///rel.db?timeout=5").resolved().storage == (
        sqlite_url(tmp_path / "a" / "rel.db") + "?timeout=5"
    )
    assert replace(spec, storage="sqlite:///50%2541/s.db").resolved().storage == (
        replace(spec, storage="50%41/s.db").resolved().storage  # as SQLAlchemy decodes it
    )
    run_tune(spec.resolved(), progress=False, plots=False)
    before = (out / "trials.csv").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(UserError, match="holds the reports of study"):
        run_tune(spec.resolved(), progress=False, plots=False)
    assert (out / "trials.csv").read_text(encoding="utf-8") == before
    assert not (tmp_path / "b" / "rel.db").exists()

    # the default storage of --out rs, named either way, is one study
    monkeypatch.chdir(tmp_path)
    rs = replace(tune_spec(csv, tmp_path / "rs", trials=1), out="rs", storage=None)
    run_tune(rs.resolved(), progress=False, plots=False)
    for storage in ("rs/study.db", "sqlite:///rs/study.db"):
        again = replace(rs, trials=2, storage=storage).resolved()
        assert again.storage == sqlite_url(tmp_path / "rs" / "study.db")
        run_tune(again, progress=False, plots=False)  # resumed, not refused
    assert len(open_study(rs.resolved()).trials) == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask(), not optimize()
def test_two_starts_at_once_queue_an_interrupted_trial_once(synth_csv, tmp_path, monkeypatch):
    # both read the study's "requeued" before either wrote it: the interrupted trial was
    # queued, run and counted twice
    import threading
    import time

    from experiments.tune_study import requeue_interrupted

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    study = open_study(spec, create=True)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TrialState.FAIL)
    enqueue = optuna.Study.enqueue_trial

    def slow(self, *args, **kwargs):  # widens the window between reading and writing
        time.sleep(0.5)
        return enqueue(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", slow)
    starts = [
        threading.Thread(target=requeue_interrupted, args=(open_study(spec), spec.storage))
        for _ in range(2)
    ]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    waiting = open_study(spec).get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [0]
    requeue_interrupted(open_study(spec), spec.storage)  # and a later start: none again
    assert len(open_study(spec).trials) == 2


def test_two_commands_of_other_settings_making_one_study_at_once_are_told(
    synth_csv, tmp_path, monkeypatch
):
    # both found no settings recorded and wrote theirs, neither checked: one study of
    # two seeds' attributes, each command tuning on it. Here the second finds none, then
    # the first writes and reads back its own, then the second writes and reads its own.
    import threading

    from ensemble.errors import UserError
    from experiments import tune_study

    csv = synth_csv(n=1200)
    specs = [replace(tune_spec(csv, tmp_path / "t", trials=1), seed=s) for s in (0, 7)]
    made = [tune_study.study_attrs(s) for s in specs]  # each command's `validate`: new
    record = tune_study._record_identity
    entered, first_done = threading.Semaphore(0), threading.Event()
    order: list[int] = []

    def in_turn(spec, study, values) -> None:
        order.append(spec.seed)
        if len(order) == 1:  # the first: waits (1 s at most) for the second to come too
            entered.acquire(timeout=1.0)
            record(spec, study, values)
            first_done.set()
        else:  # the second: found no settings either; writes once the first is done
            entered.release()
            first_done.wait(timeout=10)
            record(spec, study, values)

    monkeypatch.setattr(tune_study, "_record_identity", in_turn)
    refused: list[Exception] = []

    def start(spec, attrs) -> None:
        try:
            open_study(spec, create=True, new_attrs=attrs)
        except UserError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=start, args=a) for a in zip(specs, made, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 1 and "made for seed=" in str(refused[0])
    attrs = open_study(specs[0]).user_attrs
    assert attrs["identity"]["seed"] == attrs["seed"] == order[0]  # the first's, whole


def test_settings_recorded_by_another_command_at_the_same_moment_are_refused(synth_csv, tmp_path):
    # a server storage has no ask lock: another command's settings, written between this
    # one's write and its read back, are checked against this command's
    from ensemble.errors import UserError
    from experiments.tune_study import _record_identity, study_attrs

    csv = synth_csv(n=1200)
    mine = tune_spec(csv, tmp_path / "t", trials=1)
    from experiments.tune_study import open_storage

    study = optuna.create_study(study_name=mine.study, storage=open_storage(mine.storage))

    class Raced:  # the other command writes its identity right after this one's
        def __init__(self, other: dict) -> None:
            self.other = other

        def set_user_attr(self, key, value) -> None:
            study.set_user_attr(key, value)
            if key == "identity":
                study.set_user_attr("identity", {**self.other, "token": "theirs"})

        @property
        def user_attrs(self) -> dict:
            return study.user_attrs

    same = study_attrs(mine)
    _record_identity(mine, Raced(same), same)  # the same settings: joined
    other = study_attrs(replace(mine, seed=7))
    with pytest.raises(UserError, match=r"at the same moment .*made for seed=7, not 0"):
        _record_identity(mine, Raced(other), same)


def test_a_resume_with_another_pruner_or_router_warns_once_and_keeps_each_start(
    synth_csv, tmp_path, caplog
):
    # --pruner / --router changed on resume were taken silently, and tune_spec.json kept
    # only the last start's
    import json
    import logging

    caplog.set_level(logging.WARNING, logger="hybrid_forecast.tune")
    csv, out = synth_csv(n=1200), tmp_path / "t"
    spec = tune_spec(csv, out, trials=1)
    run_tune(spec, progress=False, plots=False)
    assert not caplog.records
    changed = replace(spec, trials=2, pruner="hyperband", router="median", jobs=1)
    summary = run_tune(changed, progress=False, plots=False)
    (warned,) = caplog.records
    assert "--pruner hyperband (the study's last start ran median)" in warned.getMessage()
    assert "--router median (the study's last start ran mean)" in warned.getMessage()
    caplog.clear()
    summary = run_tune(replace(changed, trials=3), progress=False, plots=False)
    assert not caplog.records  # said once, not at every later resume
    starts = [(s["pruner"], s["router"], s["trials"]) for s in summary["starts"]]
    assert starts == [("median", "mean", 1), ("hyperband", "median", 2), ("hyperband", "median", 3)]
    held = json.loads((out / "study_summary.json").read_text(encoding="utf-8"))["starts"]
    assert held == summary["starts"]
    assert "Starts (pruner, router, jobs): median, mean, 1;" in (
        out / "study_summary.md"
    ).read_text(encoding="utf-8")

    # a study from before starts were kept: its earlier start is the folder's tune_spec.json
    open_study(spec).set_user_attr("starts", [])
    summary = run_tune(replace(spec, trials=3), progress=False, plots=False)
    assert [(s["pruner"], s["router"]) for s in summary["starts"]] == [
        ("hyperband", "median"),
        ("median", "mean"),
    ]
    assert summary["starts"][0]["at"] is None
    assert len(caplog.records) == 1 and "--pruner median" in caplog.records[0].getMessage()


@pytest.mark.parametrize("after", ["identity", "data", "periods", "ranked_periods"])
def test_a_start_stopped_while_recording_its_settings_leaves_a_study_the_rerun_runs(
    after, synth_csv, tmp_path, monkeypatch
):
    # each attribute is one commit: stopped after "periods", written before the two below
    # it, the study passed as recorded and every trial of the rerun failed (KeyError)
    from experiments.tune_study import TRIAL_ATTRS

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    record = optuna.Study.set_user_attr

    def stopped(self, key, value):
        record(self, key, value)
        if key == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(optuna.Study, "set_user_attr", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    held = open_study(spec).user_attrs
    assert "periods" not in held or all(k in held for k in TRIAL_ATTRS)  # "periods" last
    monkeypatch.setattr(optuna.Study, "set_user_attr", record)
    summary = run_tune(spec, progress=False, plots=False)
    assert summary["counts"]["complete"] == 2 and summary["counts"]["error"] == 0
    assert all(k in open_study(spec).user_attrs for k in TRIAL_ATTRS)


def test_a_ctrl_c_held_while_a_write_fails_is_still_delivered(terminal_ctrl_c):
    # the write's error ended the block before the held signal was raised again: lost
    import signal

    from experiments.tune_study import _signals_held

    with pytest.raises(KeyboardInterrupt), _signals_held():
        signal.raise_signal(signal.SIGINT)
        raise RuntimeError("database is locked")


def test_ctrl_c_while_a_study_records_its_settings_waits_until_all_are_written(
    synth_csv, tmp_path, monkeypatch, terminal_ctrl_c
):
    import signal

    from experiments.tune_study import TRIAL_ATTRS

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    record = optuna.Study.set_user_attr

    def ctrl_c(self, key, value):
        record(self, key, value)
        if key == "data":
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(optuna.Study, "set_user_attr", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    attrs = open_study(spec).user_attrs
    assert all(k in attrs for k in TRIAL_ATTRS)
    assert open_study(spec).trials == []  # stopped before any trial


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() by hand
def test_a_study_an_earlier_version_left_without_its_trial_attributes_is_repaired(
    synth_csv, tmp_path
):
    # an earlier version stopped right after "periods": the rerun's trials failed on the
    # missing "ranked_periods" and counted, so no rerun could finish the study
    from experiments.tune_study import open_storage, study_attrs

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    values = study_attrs(spec)
    study = optuna.create_study(study_name=spec.study, storage=open_storage(spec.storage))
    study.set_user_attr("identity", {**values, "token": "earlier"})
    for key, value in values.items():
        if key not in ("ranked_periods", "patch_choices"):
            study.set_user_attr(key, value)
    for _ in range(2):
        trial = study.ask()
        trial.suggest_categorical("period", values["periods"])
        trial.set_user_attr("error", "KeyError: 'ranked_periods'")
        study.tell(trial, state=TrialState.FAIL)
    summary = run_tune(spec, progress=False, plots=False)
    c = summary["counts"]
    assert (c["complete"], c["error"], c["discarded"]) == (2, 0, 2)
    assert "first_error" not in summary  # the KeyErrors were the study's, not the trials'
    attrs = open_study(spec).user_attrs
    assert attrs["ranked_periods"] == values["ranked_periods"]
    assert attrs["patch_choices"] == values["patch_choices"]


def test_a_sqlite_file_of_something_else_is_refused_and_left_as_it_was(synth_csv, tmp_path):
    # it was turned to WAL and given Optuna's tables beside its own
    import sqlite3

    from ensemble.errors import UserError

    foreign = tmp_path / "people.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    spec = replace(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1), storage=str(foreign))
    with pytest.raises(UserError, match="SQLite file of something else.*name a new file"):
        run_tune(spec.resolved(), progress=False, plots=False)
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.db", "synth.csv"]
    # a study's own file (Optuna's tables) is still opened
    run_tune(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1), progress=False, plots=False)
    again = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    assert run_tune(again, progress=False, plots=False)["counts"]["complete"] == 2
