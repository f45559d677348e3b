"""experiments.run: the run folder's files and results.json schema."""

from __future__ import annotations

import json

import numpy as np
import yaml

from experiments.cli import main


def test_run_folder_files_and_schema(data_dir, tmp_path, capsys):
    out = tmp_path / "naive"
    argv = [
        "run",
        "--dataset",
        "ETTh1",
        "--data-dir",
        str(data_dir),
        "--members",
        "naive,snaive",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    for f in (
        "config.yaml",
        "results.json",
        "results.md",
        "forecasts.npz",
        "router_weights.npz",
        "test_windows.png",
        "run.log",
    ):
        assert (out / f).is_file(), f
    res = json.loads((out / "results.json").read_text())
    assert (
        res["dataset"] == "ETTh1"
        and res["seq_len"] == 512
        and res["pred_len"] == 96
        and res["seed"] == 0
    )
    assert res["windows"] == {"train": 8033, "val": 2785, "test": 2785}
    for part in ("val", "test"):
        assert {"naive", "snaive", "ensemble", "mean", "median", "oracle"} <= set(res[part])
        assert all(set(v) == {"mse", "mae"} for v in res[part].values())
    # the DM tests compare the ensemble with every member and reference on test
    sig = res["significance"]["test"]
    assert set(sig["ensemble_vs"]) == {"naive", "snaive", "mean", "median"}
    for name, r in sig["ensemble_vs"].items():
        assert np.isclose(r["diff"], res["test"]["ensemble"]["mse"] - res["test"][name]["mse"])
        assert 0.0 <= r["p"] <= 1.0 and r["dof"] == 2785 // (4 * 96)
    pair = sig["members"]["naive"]["snaive"]  # and each pair of members
    assert np.isclose(pair["diff"], res["test"]["naive"]["mse"] - res["test"]["snaive"]["mse"])
    md = (out / "results.md").read_text()
    assert "| ensemble vs mean |" in md and "| naive vs snaive |" in md
    assert set(res["timings_s"]["naive"]) == {"fit", "predict"}
    assert isinstance(res["periods"], list) and res["periods"]
    # the numbers are the ones the forecasts give
    with np.load(out / "forecasts.npz") as z:
        true, ens = z["test/true"], z["test/ensemble"]
        assert true.shape == (2785, 96, 7)
        assert np.isclose(
            res["test"]["ensemble"]["mse"], np.mean((ens.astype(np.float64) - true) ** 2), rtol=1e-5
        )
    with np.load(out / "router_weights.npz") as w:
        np.testing.assert_allclose(w["test"].sum(-1), 1.0, rtol=1e-6)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["members"] == ["naive", "snaive"] and cfg["seq_len"] == 512
    # rerun from the saved config reproduces the numbers (members reused from their cache)
    assert main(["run", "--config", str(out / "config.yaml"), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["test"] == res["test"]


def test_naive_numbers_are_not_hard_coded(synth_splits):
    from classical.naive import NaiveLast, SeasonalNaive

    sp = synth_splits(seq_len=96, pred_len=24, period=24)
    w = sp.test.windows()
    y = sp.test.targets()
    naive, snaive = NaiveLast().predict(w), SeasonalNaive(24).predict(w)
    np.testing.assert_array_equal(naive[:, 5], w.x[:, -1])
    np.testing.assert_array_equal(snaive[:, 0], w.x[:, -24])
    assert np.mean((snaive - y) ** 2) < np.mean((naive - y) ** 2)


def test_member_cache_key_follows_the_detected_periods():
    # Members build features and prompts from the periods: a cache made under other
    # periods (e.g. by an older analyser) must not be reused.
    from experiments.config import RunConfig
    from experiments.run import _data_key

    cfg = RunConfig(dataset="ETTh1")
    key = _data_key(cfg, "lightgbm", [24, 168])
    assert key == _data_key(cfg, "lightgbm", [24, 168])
    assert key != _data_key(cfg, "lightgbm", [24, 168, 408])
    assert key != _data_key(RunConfig(dataset="ETTh1", seed=1), "lightgbm", [24, 168])


def test_stacked_router_saves_its_per_step_weights(synth_csv, tmp_path):
    out = tmp_path / "stacked"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive,window_mean", "--router", "stacked", "--out", str(out)]
    assert main(argv + ["--quiet"]) == 0
    with np.load(out / "router_weights.npz") as z:
        step = z["step_weights"]
    assert step.shape == (24, 3) and (step >= 0).all()
    np.testing.assert_allclose(step.sum(-1), 1.0, rtol=1e-6)
