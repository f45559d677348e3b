"""The worker processes: Ctrl-C and SIGTERM end a trial at once, as one console line, and
leave a study a rerun finishes; --jobs workers split exactly N trials, wait for trials
running elsewhere, and a study they left unfinished is an error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from conftest import interrupt_trial, tune_spec  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from experiments.tune import run_tune  # noqa: E402
from experiments.tune_objective import Objective  # noqa: E402
from experiments.tune_study import open_study, trial_counts  # noqa: E402


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_ctrl_c_is_no_failed_trial_warning_and_the_study_resumes(
    synth_csv, tmp_path, monkeypatch, caplog
):
    import logging

    caplog.set_level(logging.INFO)  # another test's `run` may have raised it
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    evaluate = interrupt_trial(monkeypatch, 1)
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
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_study(
    synth_csv, tmp_path, monkeypatch, terminal_ctrl_c
):
    import gc
    import os
    import signal
    import sys

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=4)
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
    # Ctrl-C as in a terminal (terminal_ctrl_c): else the kill above could do nothing
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    study = open_study(spec)
    assert trial_counts(study)["finished"] == 1  # stopped after the trial it landed in
    assert printed == []  # nor printed as "Exception ignored in ..." with a traceback
    assert sys.unraisablehook is hook  # put back


def ctrl_c_after_ask(monkeypatch: pytest.MonkeyPatch, number: int):
    """Ctrl-C right after Optuna's ask() stores trial ``number`` as RUNNING, before the
    objective runs; returns the real ``Study.ask``."""
    import os
    import signal

    ask = optuna.study.Study.ask

    def ask_then_ctrl_c(study, *args, **kwargs):
        trial = ask(study, *args, **kwargs)
        if trial.number == number:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, before the objective
        return trial

    monkeypatch.setattr(optuna.study.Study, "ask", ask_then_ctrl_c)
    return ask


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_ctrl_c_between_optunas_ask_and_the_objective_fails_the_trial(
    synth_csv, tmp_path, monkeypatch, terminal_ctrl_c
):
    # Optuna's ask() has stored the trial as RUNNING; a Ctrl-C before the objective runs
    # (a loaded machine, two workers starting at once: CI saw both trials left RUNNING)
    # must still leave it failed and interrupted, so the rerun runs it again at once

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    ask = ctrl_c_after_ask(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    trials = open_study(spec).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs.get("interrupted") is True
    # asked under the lock beside the SQLite file, which every command on the study shares
    assert (tmp_path / "t" / "study.db.ask.lock").is_file()
    monkeypatch.setattr(optuna.study.Study, "ask", ask)
    summary = run_tune(spec, progress=False, plots=False)
    assert summary["counts"]["complete"] == 3
    assert open_study(spec).trials[2].user_attrs.get("retry_of") == 1  # run again


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_retry_stopped_before_it_draws_keeps_the_parameters_it_retries(
    synth_csv, tmp_path, monkeypatch, terminal_ctrl_c
):
    # trial 1 is stopped mid-objective and queued again as trial 2; a Ctrl-C in trial 2's
    # ask() leaves it failed before it drew: its parameters are still only the queued ones,
    # and those (trial 1's) must be queued again, not an empty set drawn afresh

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=4)
    evaluate = Objective._evaluate

    def stopped_after_drawing(self, trial):
        value = evaluate(self, trial)
        if trial.number == 1:
            raise KeyboardInterrupt
        return value

    monkeypatch.setattr(Objective, "_evaluate", stopped_after_drawing)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    monkeypatch.setattr(Objective, "_evaluate", evaluate)
    ask = ctrl_c_after_ask(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    monkeypatch.setattr(optuna.study.Study, "ask", ask)
    assert run_tune(spec, progress=False, plots=False)["counts"]["complete"] == 4
    trials = open_study(spec).trials
    assert trials[1].params and trials[2].params == {}  # stopped before it drew
    assert trials[3].user_attrs["retry_of"] == 2
    assert trials[3].state == TrialState.COMPLETE and trials[3].params == trials[1].params
    # queued, not redrawn (one worker's seeding would often redraw the same values)
    assert trials[3].system_attrs["fixed_params"] == trials[1].params


ROUNDS = 10  # a single race went unseen without the lock in about half of the tries


def _ask_together(url: str, lock: str, ready, numbers) -> None:
    """A spawned worker's ask()s (through the workers' lock): ROUNDS of them, each at once
    with the other worker's (both wait at ``ready`` before each)."""
    import warnings

    from experiments.tune_study import open_storage
    from experiments.tune_workers import _one_at_a_time

    warnings.simplefilter("ignore")
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    ask = _one_at_a_time(study.ask, Path(lock))
    for _ in range(ROUNDS):
        ready.wait(timeout=60)  # both imported, the study loaded, the last asks done
        numbers.put(ask().number)


def test_two_workers_asking_at_once_do_not_both_pop_one_queued_trial(tmp_path):
    # on SQLite both popped it (optuna#4621): it ran twice and one worker then crashed
    import multiprocessing as mp

    from experiments.tune_study import open_storage

    url = f"sqlite:///{tmp_path}/study.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    for i in range(2 * ROUNDS):
        study.enqueue_trial({"x": float(i)})
    ctx = mp.get_context("spawn")
    numbers, ready = ctx.Queue(), ctx.Barrier(2)
    procs = [
        ctx.Process(target=_ask_together, args=(url, str(tmp_path / ".ask.lock"), ready, numbers))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = sorted(numbers.get(timeout=120) for _ in range(2 * ROUNDS))
    for p in procs:
        p.join(timeout=30)
    assert got == list(range(2 * ROUNDS))  # each queued trial popped by one worker


_SIGTERM_TUNE = """
import os, signal, sys, time
from experiments.cli import main
from experiments.tune_objective import Objective

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
    # a study of 2 trials is said to be all random draws before it starts
    lines = [line for line in p.stderr.splitlines() if line.strip() and "random draw" not in line]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), lines
    study = optuna.load_study(study_name="synth_24_snaive", storage=f"sqlite:///{out}/study.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "interrupted" in (out / "tune.log").read_text(encoding="utf-8")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_worker_processes_share_one_study_of_exactly_n_trials(synth_csv, tmp_path):
    # --jobs N: spawned workers on one storage must split the trials, stop at the study's
    # total and leave the reports behind (the wait for another's trial: the test below)
    import os
    from dataclasses import replace

    spec = replace(
        tune_spec(synth_csv(n=1200), tmp_path / "t", trials=4),
        members=["dlinear"],  # each worker's first trial takes seconds: both get trials
        member_params={"dlinear": {"epochs": 1}},
        study="jobs",
        jobs=2,
        grace_s=30,  # a worker stalled 2 s on a loaded machine must not fail the other's trial
    )
    summary = run_tune(spec, progress=False, plots=False)
    assert summary["counts"]["finished"] == 4 and summary["counts"]["complete"] == 4
    # the only trial ever discarded: one that lost the race for the last slot
    assert summary["counts"]["discarded"] <= 1
    done = [t for t in open_study(spec).trials if t.state == TrialState.COMPLETE]
    workers = {t.user_attrs["worker"] for t in done}
    assert len(done) == 4 and len(workers) == 2 and os.getpid() not in workers
    assert (tmp_path / "t" / "best_config.yaml").is_file()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_worker_with_no_slot_left_waits_for_the_trial_running_elsewhere(
    synth_csv, tmp_path, caplog
):
    # another command on the same storage holds the study's last slot: this one says it
    # waits and waits for that trial, neither starting a surplus trial nor stopping early
    import logging
    import threading

    from experiments.tune_workers import work

    caplog.set_level(logging.INFO)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    elsewhere = open_study(spec, create=True).ask().number  # RUNNING until told

    def finish_once_waited():
        deadline = time.monotonic() + 10
        while "running elsewhere; waiting" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        open_study(spec).tell(elsewhere, 1.0)  # its own connection, in this thread

    other = threading.Thread(target=finish_once_waited)
    other.start()
    try:
        work(spec, on_progress=lambda c: None)
    finally:
        other.join()
    waited = [r for r in caplog.records if "running elsewhere; waiting" in r.getMessage()]
    assert len(waited) == 1 and waited[0].levelno == logging.WARNING  # said once, on the console
    study = open_study(spec)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_workers_that_died_before_the_end_exit_1_with_one_line(
    synth_csv, tmp_path, monkeypatch, capsys
):
    # workers killed at start-up (memory, a crash) left "0/2 finished" and exit 0
    from experiments import tune
    from experiments.cli import main

    monkeypatch.setattr(tune, "run_processes", lambda spec, study, show: None)  # all gone
    monkeypatch.setattr(tune.os, "cpu_count", lambda: 8)  # no --jobs warning on 1 core
    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--members"]
    argv += ["snaive", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "2"]
    assert main([*argv, "--jobs", "2", "--out", str(tmp_path / "t"), "--quiet"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "has 0 of 2 finished trials" in err[0] and "rerun" in err[0]


def _slow_two_worker_tune(synth_csv, out: Path, trials: int, *extra: str, **popen):
    """A `tune --jobs 2` subprocess of slow DLinear trials (500 epochs) in its own process
    group, as a terminal starts a command; returns it and its storage URL."""
    import subprocess
    import sys

    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--pred-len", "24", "--jobs", "2"]
    argv += ["--members", "dlinear", "--set", "dlinear.epochs=500", "--set", "dlinear.patience=500"]
    argv += ["--min-seq-len", "48", "--max-seq-len", "96", "--trials", str(trials), "--quiet"]
    argv += ["--out", str(out), "--study", "s", *extra]
    p = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *argv],
        text=True,
        start_new_session=True,
        **popen,
    )
    return p, f"sqlite:///{out}/study.db"


def _trials_until(storage: str, seconds: float = 90):
    """The study's trials every half second until ``seconds`` pass (the caller breaks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            yield optuna.load_study(study_name="s", storage=storage).trials
        except Exception:  # not created yet
            continue


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_ctrl_c_with_two_workers_fails_their_trials_at_once(synth_csv, tmp_path):
    # Ctrl-C reaches the command and its spawned workers (one process group): each running
    # trial is marked failed and interrupted at once, not left RUNNING for the heartbeat
    # grace, and the command says so in one line (a rerun then runs their settings again)
    import os
    import signal
    import subprocess

    p, storage = _slow_two_worker_tune(synth_csv, tmp_path / "t", 3, stderr=subprocess.PIPE)
    running = 0
    for trials in _trials_until(storage):  # both workers inside a trial
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if running >= 2:
            break
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = p.communicate(timeout=60)
    assert running == 2 and p.returncode == 130, err
    # (on a 1-core machine --jobs 2 is warned of first)
    said = ("CPU cores", "random draw")  # warnings before the trials start
    lines = [line for line in err.splitlines() if line.strip() and not any(w in line for w in said)]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), lines
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all(t.user_attrs.get("interrupted") for t in trials)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_worker_whose_command_is_gone_starts_no_trial(synth_csv, tmp_path):
    # a worker outlived its command's SIGKILL and went on running trials, unseen
    import os
    import subprocess
    import sys

    from experiments.tune_workers import work

    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    open_study(spec, create=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    work(spec, parent=gone.pid)  # started by a process that is no longer its parent
    assert open_study(spec).trials == []
    work(spec, parent=os.getppid())  # its command still there: runs the study
    assert trial_counts(open_study(spec))["complete"] == 2


def _state(pid: int) -> str | None:
    """A process's state letter (None: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_workers_stop_when_their_command_is_killed(synth_csv, tmp_path):
    # SIGKILL (the OOM killer, a scheduler) of `tune --jobs 2`: its workers ran on
    import os
    import signal

    p, storage = _slow_two_worker_tune(synth_csv, tmp_path / "t", 20, "--pruner", "none")
    workers: set[int] = set()
    try:
        for trials in _trials_until(storage):  # a worker inside a trial
            workers = {t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}
            if workers:
                break
        assert workers, "no worker started a trial"
        p.kill()
        p.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_state(w) not in (None, "Z") for w in workers):
            time.sleep(0.2)
        assert all(_state(w) in (None, "Z") for w in workers)
    finally:
        for w in workers:  # a worker left running fails the test, not the machine
            if _state(w) not in (None, "Z"):
                os.kill(w, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert TrialState.COMPLETE not in [t.state for t in trials]  # stopped mid-trial


def test_a_worker_whose_parent_died_is_orphaned_though_its_parent_id_stays(monkeypatch):
    # on Windows a dead parent's id is still os.getppid(): workers ran trials on, unseen
    import multiprocessing
    import os

    from experiments.tune_workers import orphaned

    class Parent:
        def __init__(self, alive: bool) -> None:
            self.alive = alive

        def is_alive(self) -> bool:
            return self.alive

    me = os.getppid()
    assert not orphaned(None) and not orphaned(me)  # not a spawned worker: its parent id
    assert orphaned(me + 1)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: Parent(alive=False))
    assert orphaned(me)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: Parent(alive=True))
    assert not orphaned(me)
