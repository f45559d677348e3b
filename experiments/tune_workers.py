"""The processes of a `tune` command: each worker runs trials until the study has N
finished ones; signals and log records are handled so that Ctrl-C or a kill leaves a
study a rerun finishes. A spawned worker stops with its command: at once on Linux (the
kernel's parent-death signal), else before its next trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble.io import waiting_lock
from experiments.interrupts import NotedInterrupts as _NotedInterrupts  # the name tests patch
from experiments.logfile import FolderLog
from experiments.tune_objective import Objective
from experiments.tune_study import (
    ask_lock,
    fail_dead_local_trials,
    open_study,
    seeded_at_trial_start,
    trial_counts,
)

if TYPE_CHECKING:
    from experiments.tune import TuneSpec

log = logging.getLogger("hybrid_forecast.tune")


POLL_S = 5.0  # how often an idle worker looks again while others finish the last trials


def setup_logging(out: Path, progress: bool = True) -> logging.Handler:
    import optuna

    # INFO to tune.log only (with the process: workers share it); the console gets warnings
    # (and the progress lines where it is no terminal, unless --quiet)
    handler = FolderLog(out / "tune.log", echo_progress=progress)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    # Optuna's own messages (trial finished / pruned) go to tune.log, not the console.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    return handler


class _QuietInterrupt(logging.Filter):
    """Optuna's own "Trial N failed ..." warnings, each with a full traceback, become INFO
    records without it (tune.log keeps them): the objective has already logged a failed
    trial as one warning line plus its traceback in tune.log.

    Ctrl-C is not a failed trial: after a KeyboardInterrupt every warning is demoted, so
    the console shows only the CLI's one line. The trial itself is FAIL without an
    ``error`` attribute: not counted, so a rerun resumes the study."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and issubclass(exc, KeyboardInterrupt):
            self.interrupted = True
        failed = record.levelno > logging.INFO and "failed" in record.getMessage()
        if self.interrupted or failed:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _one_at_a_time(
    ask: Callable[..., Any],
    lock: Path,
    live: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[..., Any]:
    """Optuna's ``ask`` under a lock beside the SQLite file, shared by every process on
    that study (this command's workers and any other command joining it). On SQLite two
    processes asking at once both popped the same queued trial (its state is read
    outside the write transaction: optuna#4621), in 10 of 10 tries: it ran twice, and the
    second tell ("Cannot tell a COMPLETE trial") ended that worker. The wait for the
    lock is ``live``: nothing is stored yet, so a Ctrl-C there stops at once."""

    def locked(*args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            with live():
                stack.enter_context(waiting_lock(lock))
            return ask(*args, **kwargs)

    return locked


def work(
    spec: TuneSpec,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    worker: int = 0,
    parent: int | None = None,
) -> None:
    """One worker: run trials until the study has ``spec.trials`` finished ones.

    Args:
        spec: the resolved spec (the study must exist).
        on_progress: called with the trial counts after each step (a progress bar).
        worker: this worker's index among the command's (seeds its sampler).
        parent: the PID of the command that started this worker process: once it is no
            longer this process's parent (killed), no further trial is started.
    """
    study = open_study(spec)
    lock = ask_lock(spec.storage)
    objective = Objective(spec, study.user_attrs)
    quiet = _QuietInterrupt()
    optuna_log = logging.getLogger("optuna.study._optimize")  # where failed trials are logged
    optuna_log.addFilter(quiet)
    try:
        with _NotedInterrupts() as interrupts:
            objective.check_interrupts = interrupts.check
            objective.live_interrupts = interrupts.live
            if lock is not None:  # a database server locks the trial's row itself
                study.ask = _one_at_a_time(study.ask, lock, interrupts.live)
            _trials_until_done(spec, study, objective, on_progress, interrupts, worker, parent)
    finally:
        optuna_log.removeFilter(quiet)


def _trials_until_done(
    spec: TuneSpec,
    study: Any,
    objective: Objective,
    on_progress: Callable[[dict[str, int]], None] | None,
    interrupts: _NotedInterrupts,
    worker: int = 0,
    parent: int | None = None,
) -> None:
    """``work``'s loop: one trial at a time (or a wait for others' trials) until done."""
    import optuna
    from optuna.storages import fail_stale_trials

    waited = False
    while True:
        interrupts.check()
        if orphaned(parent):
            log.info("the command that started this worker (%d) is gone; it stops", parent)
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a killed worker's trial: FAIL, and queued again
        fail_dead_local_trials(study)  # the same at once, for a process of this machine
        c = trial_counts(study)
        if on_progress:
            on_progress(c)
        if c["finished"] >= spec.trials:
            break
        if c["waiting"] > 0 or c["claimed"] < spec.trials:
            waited = False
            # seeded by the trial's place in the study, not by what this start drew before:
            # a study stopped and resumed draws what it would have drawn uninterrupted
            study.sampler = seeded_at_trial_start(spec, worker)
            with warnings.catch_warnings():  # optuna < 4.9 calls fail_stale_trials in it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # signals wait for the objective (or for the loop's check, after the tell)
                with interrupts.deferred():
                    study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        else:
            if not waited:
                # on the console when this is the command's only process: a wait of a
                # minute with nothing said looks like a hang
                log.log(
                    logging.WARNING if on_progress is not None else logging.INFO,
                    "%d trial(s) running elsewhere; waiting for them (a killed one is retried "
                    "after %ds without heartbeat)",
                    c["running"],
                    spec.grace_s,
                )
                waited = True
            time.sleep(min(POLL_S, max(0.2, spec.grace_s / 4)))


def orphaned(parent: int | None) -> bool:
    """Whether the process ``parent`` no longer parents this one: killed (SIGKILL, the
    OOM killer, Task Manager), its workers ran on, trials and all, unseen. On Linux they
    are handed to init (another parent id); on Windows the parent id stays the dead
    one's, so the spawned worker's handle on its parent says it instead."""
    if parent is None:
        return False
    if os.getppid() != parent:
        return True
    import multiprocessing

    proc = multiprocessing.parent_process()  # None outside a spawned worker
    return proc is not None and not proc.is_alive()


def _die_with_parent() -> None:
    """On Linux, have the kernel send this process SIGTERM when its parent dies, so that a
    worker stops in the middle of a trial too (which its SIGTERM handler fails and a rerun
    queues again). Elsewhere, or where prctl cannot be reached, `orphaned` alone stops
    it, after its trial."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no libc symbol: `orphaned` still stops it
        pass


def _swallow(*_: Any) -> None:
    """A signal handler that does nothing (see `_worker_entry`'s ``stop``)."""


def _worker_entry(
    spec_dict: dict[str, Any], threads: int, worker: int, parent: int | None = None
) -> None:
    """Entry point of a spawned worker process (``parent``: the PID of the command)."""
    _die_with_parent()
    if orphaned(parent):  # the command died before the request above was made
        return
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass
    from experiments.tune import TuneSpec  # imported here: tune imports this module

    spec = TuneSpec(**spec_dict)
    handler = setup_logging(Path(spec.out))

    def stop(*_: Any) -> None:
        """Ctrl-C (the whole process group) or the parent's terminate(): fail the trial now,
        not after the grace period. Once only: a second signal (Ctrl-C, then terminate)
        would land in Optuna's bookkeeping of the first and leave the trial running.
        Swallowed by a handler, not SIG_IGN: a second signal already caught when the
        handler changes would raise "OSError: Signal 15 ignored due to race condition"."""
        signal.signal(signal.SIGTERM, _swallow)
        signal.signal(signal.SIGINT, _swallow)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        work(spec, worker=worker, parent=parent)
    except KeyboardInterrupt:
        pass
    finally:
        handler.close()


def run_processes(spec: TuneSpec, study, show: Callable[[dict[str, int]], None]) -> None:
    """``spec.jobs`` worker processes on the same storage; ends them all on any exit."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork + torch threads + sqlite connections do not mix
    threads = max(1, (os.cpu_count() or 1) // spec.jobs)
    procs = [
        ctx.Process(target=_worker_entry, args=(asdict(spec), threads, i, os.getpid()), daemon=True)
        for i in range(spec.jobs)
    ]
    # `timeout`/`kill` send SIGTERM to this process only: end it through the finally below,
    # which ends the workers (the CLI already installs a handler that does so).
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            show(trial_counts(study))
            time.sleep(1.0)
        show(trial_counts(study))
        # tune.log only: `tune` says in one line when the study was left unfinished
        log.info("worker exit codes: %s", [p.exitcode for p in procs])
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too, a SIGTERM to this process did not: ask each to
        # stop (a worker already stopping ignores it) and let them record their trials
        if os.name != "nt":  # no such signal to one process on Windows: terminate below
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    with contextlib.suppress(OSError):
                        os.kill(p.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        killed = False
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():  # it ignored the request (its interrupt was swallowed): end it
                p.kill()
                p.join(timeout=5)
                killed = True
        if killed:  # its trial: FAIL and queued again now, as a rerun would do first
            with contextlib.suppress(Exception):
                fail_dead_local_trials(study)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
