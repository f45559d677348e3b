"""The reports: best_config.yaml reruns the best trial as a plain run; the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from conftest import tune_spec  # noqa: E402

from experiments.tune import run_tune  # noqa: E402
from experiments.tune_study import open_study  # noqa: E402


def test_best_config_is_a_run_config(synth_csv, tmp_path):
    from experiments.config import RunConfig
    from experiments.run import run

    csv = synth_csv(n=1200)
    out = tmp_path / "tune"
    run_tune(tune_spec(csv, out, trials=3), progress=False)
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
    spec = tune_spec(csv, out, trials=1)
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


def test_the_summary_names_the_patch_choices_of_a_patched_member():
    from experiments.tune_report import _summary_md

    counts = dict.fromkeys(
        ("finished", "complete", "pruned", "error", "discarded", "running", "waiting"), 0
    )
    summary = {"study": "s", "storage": "x", "asked_trials": 1, "counts": counts}
    md = _summary_md({**summary, "periods": [24], "patch_choices": {"24": ["24/12", "24/24"]}}, [])
    assert "Patch/stride choices per period: 24: 24/12, 24/24." in md
    assert "Patch/stride" not in _summary_md({**summary, "periods": [24]}, [])


def test_best_config_names_a_relative_data_file_absolutely(synth_csv, tmp_path, monkeypatch):
    # `tune --data-path data/x.csv` in one folder, `run --config` of it from another
    import dataclasses

    from experiments.config import RunConfig

    csv = synth_csv(n=1200)
    monkeypatch.chdir(csv.parent)
    spec = tune_spec(csv, tmp_path / "tune", trials=1)
    spec = dataclasses.replace(spec, data_path=csv.name)
    run_tune(spec, progress=False, plots=False)
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig.from_file(tmp_path / "tune" / "best_config.yaml")
    assert cfg.data_path == str(csv.resolve())


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_no_importance_plot_when_every_setting_scores_alike(synth_csv, tmp_path, caplog):
    # naive's val MSE is the same at every period and lookback: fANOVA split a third to
    # each parameter, a plot of importance where nothing mattered
    import logging
    from dataclasses import replace

    spec = replace(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3), members=["naive"])
    caplog.set_level(logging.INFO)
    run_tune(spec, progress=False, plots=True)
    assert (tmp_path / "t" / "tune_history.png").is_file()
    assert not (tmp_path / "t" / "tune_importance.png").exists()
    assert "every complete trial has the same val MSE" in caplog.text


def test_a_pruned_trials_epoch_loss_is_not_shown_as_its_score():
    # Optuna gives a pruned trial its last epoch's loss as value: beside complete trials'
    # validation MSE it read as the study's best score
    from experiments.tune_report import trials_table

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.40, params={}, distributions={}))
    study.add_trial(
        optuna.trial.create_trial(
            value=0.10,
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={0: 0.10},
            params={},
            distributions={},
        )
    )
    df = trials_table(study)
    assert df["value"].tolist()[0] == 0.40 and df["value"].isna().tolist() == [False, True]
    assert df["pruned_at"].isna().tolist() == [True, False] and df["pruned_at"][1] == 0.10
    assert list(df.columns).index("pruned_at") == list(df.columns).index("value") + 1


def test_a_runner_up_within_one_percent_is_called_a_close_call():
    # ETTh1 DLinear: best 0.38939 (period 168), runner-up 0.38960 (period 24): a student
    # read "tuning chose the weekly period"
    from types import SimpleNamespace

    from experiments.tune_report import _close_call

    trials = [
        SimpleNamespace(number=n, value=v) for n, v in ((4, 0.38939), (2, 0.38960), (7, 0.39555))
    ]
    note = " ".join(_close_call(trials))
    assert "A close call" in note and "trial 2 within 1%" in note and "0.05%" in note
    assert "7" not in note.split("within")[0]  # 1.6 % above: not a close call
    assert _close_call(trials[:1]) == [] and _close_call([trials[0], trials[2]]) == []


def test_a_strided_study_says_so_and_its_config_trains_the_scored_model(synth_csv, tmp_path):
    # --val-stride: the score is over one val window in k (an estimate), and `run` must
    # early-stop Time-LLM on the same windows to rebuild the model the trial scored
    from types import SimpleNamespace

    from experiments.tune_report import _summary_md, best_config

    counts = dict.fromkeys(
        ("finished", "complete", "pruned", "error", "discarded", "running", "waiting"), 0
    )
    summary = {"study": "s", "storage": "x", "asked_trials": 1, "counts": counts, "periods": [24]}
    assert "one val window in 4" in _summary_md({**summary, "val_stride": 4}, [])
    counted = _summary_md({**summary, "val_stride": 4, "val_windows": [25, 97]}, [])
    assert "one val window in 4 (25 of 97 at the best trial's lookback)" in counted
    assert "every val window" in _summary_md(summary, [])  # a study made before the option
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    trial = SimpleNamespace(user_attrs={"seq_len": 96, "periods": [24], "member_params": {}})
    spec.members, spec.val_stride = ["timellm", "dlinear"], 4
    params = best_config(spec, trial).member_params
    assert params == {"timellm": {"val_stride": 4}}  # DLinear has no strided early stopping
    spec.members = ["timellm@val_stride=2", "dlinear"]  # the user's own: kept
    assert best_config(spec, trial).member_params == {}
    spec.members, spec.val_stride = ["timellm"], 1
    assert best_config(spec, trial).member_params == {}
