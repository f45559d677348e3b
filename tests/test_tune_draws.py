"""What a small study rests on: which trials were TPE's random startup draws, and from
how many complete trials the parameter importance is drawn (none below a minimum)."""

from __future__ import annotations

import json
import logging

import pytest

optuna = pytest.importorskip("optuna")
from conftest import tune_spec  # noqa: E402

from experiments.tune import TuneSpec, run_tune  # noqa: E402


def test_the_sampler_records_which_trials_were_random_startup_draws():
    # a study of 9 trials waits for 3 before TPE guides a draw: its summary must be able
    # to say which of its trials were a random search's
    from experiments.tune_study import DRAW_ATTR, seeded_at_trial_start, startup_trials

    spec = TuneSpec(dataset="ETTh1", pred_len=24, members=["snaive"], trials=9)
    assert startup_trials(spec.trials) == 3
    study = optuna.create_study()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for _ in range(5):
        study.sampler = seeded_at_trial_start(spec, 0)
        study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=1)
    assert [t.user_attrs[DRAW_ATTR] for t in study.trials] == ["random"] * 3 + ["tpe"] * 2


def test_an_interrupted_trial_run_again_keeps_its_draw():
    # its parameters are the interrupted trial's random draw, whenever it runs again
    from optuna.trial import TrialState

    from experiments.tune_study import DRAW_ATTR, requeue_interrupted

    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("interrupted", True)
    trial.set_user_attr(DRAW_ATTR, "random")
    study.tell(trial, state=TrialState.FAIL)
    requeue_interrupted(study)
    assert study.trials[1].user_attrs[DRAW_ATTR] == "random"


def _trial(number: int, start: int, end: int, draw: str | None = None, state=None):
    import datetime

    from optuna.trial import FrozenTrial, TrialState

    t0 = datetime.datetime(2024, 1, 1)
    return FrozenTrial(
        number=number,
        state=state or TrialState.COMPLETE,
        value=1.0,
        datetime_start=t0 + datetime.timedelta(seconds=start),
        datetime_complete=t0 + datetime.timedelta(seconds=end),
        params={},
        distributions={},
        user_attrs={} if draw is None else {"draw": draw},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_the_draws_of_a_study_made_before_they_were_recorded_are_estimated():
    # two workers: trials 0-3 start before 3 trials have ended (random); 4 and 5 after
    from optuna.trial import TrialState

    from experiments.tune_report import draws, draws_line

    trials = [
        _trial(0, 0, 10),
        _trial(1, 0, 12),
        _trial(2, 10, 20, state=TrialState.PRUNED),  # counts towards TPE's start
        _trial(3, 12, 30),
        _trial(4, 20, 40),
        _trial(5, 30, 50),
    ]
    d = draws(trials, startup=3)
    assert d == {"startup_trials": 3, "random": [0, 1, 3], "guided": [4, 5], "estimated": True}
    line = draws_line({"draws": d})
    assert line.startswith("3 of 5 complete trials were random draws (trials 0-1, 3; ")
    assert "the other 2 were guided by TPE" in line and "Estimated" in line
    recorded = [_trial(0, 0, 1, "random"), _trial(1, 1, 2, "random"), _trial(2, 2, 3, "random")]
    line = draws_line({"draws": draws(recorded, startup=3)})
    assert line.startswith(
        "Trials 0-2: random draws (TPE starts after 3 complete or pruned trials); no trial "
        "was guided yet"
    )


@pytest.mark.parametrize(
    "rand,guided,said",
    [
        ([0, 1, 2], [3], "3 of 4 complete trials were random draws (trials 0-2; "),
        ([0, 1, 2], [3], "; the other one was guided by TPE."),
        ([0], [1, 2], "1 of 3 complete trials was a random draw (trial 0; "),
        ([], [5], ": the one complete trial was guided."),
        ([], [4, 5], ": all 2 were guided."),
    ],
)
def test_the_draws_line_counts_one_trial_in_the_singular(rand, guided, said):
    # "the other 1 were guided by TPE" (tune --trials 4)
    from experiments.tune_report import draws_line

    assert said in draws_line({"draws": {"startup_trials": 3, "random": rand, "guided": guided}})


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_three_trial_study_says_it_is_a_random_search_and_draws_no_importance(
    synth_csv, tmp_path, caplog
):
    # 3 random draws gave an importance plot ("lr 0.99, period 0.01, patch < 0.01") that
    # read as a finding; nothing said the trials were random or how few they were
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3)
    out = tmp_path / "t"
    run_tune(spec, progress=False, plots=False)
    (out / "tune_importance.png").write_bytes(b"an earlier version's plot of 3 trials")
    caplog.set_level(logging.INFO)
    summary = run_tune(spec, progress=False, plots=True)  # the rerun rewrites the reports
    assert (
        "3 trials are all random draws (TPE starts after 3): importances and the best trial "
        "are a random search's"
    ) in caplog.text
    assert summary["draws"]["random"] == [0, 1, 2] and summary["draws"]["guided"] == []
    md = (out / "study_summary.md").read_text(encoding="utf-8")
    assert "Trials 0-2: random draws (TPE starts after 3 complete or pruned trials)" in md
    assert "No parameter importance (`tune_importance.png`): 3 complete trials" in md
    assert "7 more complete trials needed" in md
    assert not (out / "tune_importance.png").exists()
    held = json.loads((out / "study_summary.json").read_text(encoding="utf-8"))
    assert held["importance"]["complete_trials"] == 3 and held["importance"]["min_trials"] == 10


def _study(n: int, params: int = 2):
    """An in-memory study of ``n`` complete trials over ``params`` parameters."""
    import numpy as np
    from optuna.distributions import FloatDistribution

    rng = np.random.default_rng(0)
    study = optuna.create_study()
    dist = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(params)}
    for _ in range(n):
        x = {k: float(rng.random()) for k in dist}
        study.add_trial(
            optuna.trial.create_trial(value=sum(x.values()), params=x, distributions=dist)
        )
    return study


def test_the_importance_plot_waits_for_enough_trials_and_says_what_it_rests_on(
    tmp_path, monkeypatch
):
    import os
    import time

    from ensemble import figures
    from experiments.tune_report import importance_basis, plot_study

    titles = []
    save = figures.save

    def saved(fig, path, **kw):
        if path.name == "tune_importance.png":
            titles.append(" ".join(ax.get_title() for ax in fig.axes))
        return save(fig, path, **kw)

    monkeypatch.setattr(figures, "save", saved)
    # 6 parameters: 2 trials each, 12 complete trials
    assert importance_basis(_study(1, params=6).trials)["min_trials"] == 12
    png, pdf = tmp_path / "tune_importance.png", tmp_path / "tune_importance.pdf"
    for path in (png, pdf):  # an earlier state's plot, and the PDF saved beside it
        path.write_bytes(b"stale")
        os.utime(path, (time.time(), time.time()))
    plot_study(_study(9), tmp_path)
    assert not png.exists() and not pdf.exists() and titles == []
    assert (tmp_path / "tune_history.png").is_file()
    plot_study(_study(10), tmp_path)
    assert png.is_file()
    assert "from 10 complete trials" in titles[0] and "(confounded) share importance" in titles[0]


def test_the_console_says_the_trials_were_random_draws(synth_csv, tmp_path, capsys):
    from experiments.cli import main

    argv = ["tune", "--data-path", str(synth_csv(n=1200)), "--members", "snaive"]
    argv += ["--pred-len", "24", "--min-seq-len", "48", "--max-seq-len", "96", "--trials", "2"]
    assert main([*argv, "--out", str(tmp_path / "t"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Trials 0-1: random draws (TPE starts after 3 complete or pruned trials)" in printed
    assert "No parameter importance (`tune_importance.png`): 2 complete trials" in printed
