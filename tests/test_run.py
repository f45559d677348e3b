"""experiments.run: the run folder's files and results.json schema."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import reused_members, synth_run_argv

from classical.naive import NaiveLast
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
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (
        res["dataset"] == "ETTh1"
        and res["seq_len"] == 512
        and res["pred_len"] == 96
        and res["seed"] == 0
    )
    assert res["windows"] == {"train": 8033, "val": 2785, "test": 2785}
    assert res["split"] == "ett_hour" and res["metric_space"] == "scaled"
    assert res["data"]["published"] is True and len(res["data"]["sha256"]) == 64
    # no member trains by epochs: no training section, no curves
    assert "training" not in res and not (out / "training.png").exists()
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
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| ensemble vs mean |" in md and "| naive vs snaive |" in md
    # each p beside its Holm adjustment over the table's tests (the ensemble of router
    # mean against the mean is its copy: no test), and the test's caveat
    from ensemble.metrics import caveat, holm

    rows = [line for line in md.splitlines() if line.startswith("| naive vs snaive |")]
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    tests = [*sig["ensemble_vs"].values(), pair]
    assert sig["ensemble_vs"]["mean"]["dm"] == 0.0
    ps = [None if r["dm"] == 0.0 else r["p"] for r in tests]
    assert cells[4] == f"{holm(ps)[-1]:.3g}" and cells[6] == caveat(pair)
    assert "5 comparisons" in md
    assert set(res["timings_s"]["naive"]) == {"fit", "predict"}
    # member -> {fit, predict} only: a loop over them meets no stage's plain number
    assert set(res["timings_s"]) == set(res["members"])
    assert set(res["stage_timings_s"]) == {"periods", "router"}
    assert isinstance(res["periods"], list) and res["periods"]
    # what the numbers were computed with
    from importlib import metadata

    env = res["environment"]
    assert env["packages"]["torch"] == metadata.version("torch")
    assert env["packages"]["hybrid-forecast"] == metadata.version("hybrid-forecast")
    # and the code's commit, from a clone (the version number has not changed with it)
    code, root = env["code"], Path(__file__).resolve().parents[1]
    assert code["version"] == metadata.version("hybrid-forecast")
    if (root / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        assert code["commit"] == head.stdout.strip() and isinstance(code["modified"], bool)
        assert isinstance(code["tree"], str) and len(code["tree"]) == 64
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["torch_cuda"] == torch.version.cuda  # torch is imported here, so it is asked
    assert len(env["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    # the numbers are the ones the forecasts give
    with np.load(out / "forecasts.npz") as z:
        true, ens = z["test/true"], z["test/ensemble"]
        assert true.shape == (2785, 96, 7)
        assert np.isclose(
            res["test"]["ensemble"]["mse"], np.mean((ens.astype(np.float64) - true) ** 2), rtol=1e-5
        )
    # ... and the targets are the test split's, the naive number computed here independently
    from ensemble.data import load_dataset, make_splits

    test = make_splits(load_dataset("ETTh1", data_dir=data_dir), 512, 96).test
    y = test.targets()
    np.testing.assert_allclose(true, y, rtol=1e-6, atol=1e-6)
    naive_mse = np.mean((test.inputs()[:, -1:, :] - y) ** 2)
    assert res["test"]["naive"]["mse"] == pytest.approx(naive_mse, rel=1e-5)
    with np.load(out / "router_weights.npz") as w:
        np.testing.assert_allclose(w["test"].sum(-1), 1.0, rtol=1e-6)
    cfg = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["members"] == ["naive", "snaive"] and cfg["seq_len"] == 512
    # rerun from the saved config reproduces the numbers (members reused from their cache)
    assert main(["run", "--config", str(out / "config.yaml"), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["test"] == res["test"]


def test_ms_runs_score_the_target_channel_only(synth_csv, tmp_path):
    # MS: every channel is an input, only the target is forecast and scored.
    from ensemble.data import load_dataset, make_splits

    csv, out = synth_csv(n=1400), tmp_path / "ms"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--features", "MS", "--target", "x0", "--members", "naive,snaive"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    splits = make_splits(load_dataset(data_path=csv, features="MS", target="x0"), 96, 24)
    x, y = splits.test.inputs(), splits.test.targets()
    x0 = splits.dataset.columns.index("x0")
    with np.load(out / "forecasts.npz") as z:
        assert z["test/true"].shape[-1] == 1
        np.testing.assert_allclose(z["test/true"][..., 0], y[..., x0], rtol=1e-6)
    want = np.mean((x[:, -1:, x0] - y[..., x0]) ** 2)
    assert res["test"]["naive"]["mse"] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("quiet", [False, True])
def test_run_shows_progress_of_period_detection_and_the_learned_router(
    synth_csv, tmp_path, bars, quiet, monkeypatch
):
    # minutes each on wide data: bars on a terminal unless --quiet (not into a log file)
    import tqdm.auto

    import periodicity.report
    import router.learned
    from experiments import run as run_mod

    monkeypatch.setattr(run_mod, "_REPORTS", {})  # analysed here, not by an earlier test
    periods, folds = bars(periodicity.report), bars(router.learned)
    made = bars(tqdm.auto)  # the bars of functions that import tqdm when called
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive", "--router", "learned", "--out", str(tmp_path / "r")]
    assert main(argv + ["--quiet"] * quiet) == 0
    assert len(periods) == 2 and len(folds) == 1 and folds[0].n == folds[0].total > 0
    members = [b for b in made if b.kw.get("desc") == "members"]
    assert len(members) == 1 and members[0].n == 2
    assert {b.disable for b in periods + folds + members} == ({True} if quiet else {None})


def test_a_resumed_members_seconds_are_marked_as_the_last_part_only(
    synth_csv, tmp_path, monkeypatch
):
    # a Time-LLM fit resumed at its last epoch took 4 s of a 280 s fit: a thesis table of
    # training costs must not read it as the whole
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    out = tmp_path / "r"
    monkeypatch.setattr(NaiveLast, "resumed", True, raising=False)
    assert main(argv + ["--members", "naive,snaive", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (
        res["timings_s"]["naive"]["resumed"] is True and "resumed" not in res["timings_s"]["snaive"]
    )
    md = (out / "results.md").read_text(encoding="utf-8")
    naive = next(line for line in md.splitlines() if line.startswith("| naive |"))
    assert naive.count("(resumed: the last part only)") == 2
    assert "resumed" not in next(line for line in md.splitlines() if line.startswith("| snaive"))


def test_a_run_killed_before_its_results_json_leaves_no_results_md(
    synth_csv, tmp_path, monkeypatch
):
    # a complete-looking table beside no results.json: people read it as a finished run
    import experiments.run as run_mod

    def killed(path, res):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "write_json", killed)
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    out = tmp_path / "r"
    assert main(argv + ["--members", "naive,snaive", "--out", str(out), "--quiet"]) == 130
    assert (out / "forecasts.npz").is_file()
    assert not (out / "results.md").exists() and not (out / "results.json").exists()


def test_an_interrupt_noted_between_members_stops_the_run_before_the_next(
    synth_csv, tmp_path, monkeypatch
):
    # a Ctrl-C a finalizer swallowed stopped `run` only after every member and the
    # results: cmd_run's check runs after each member now, once its fit is saved
    from experiments.interrupts import NotedInterrupts

    calls = []

    def check(self):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(NotedInterrupts, "check", check)
    out = tmp_path / "r"
    assert main(synth_run_argv(synth_csv(n=1400), out)) == 130
    assert calls == [1]  # after naive, before snaive
    assert (out / "members" / "naive" / "forecasts.npz").is_file()
    assert not (out / "members" / "snaive").exists() and not (out / "results.json").exists()


def test_a_rerun_that_only_hides_a_members_bars_replaces_no_setting(synth_csv, tmp_path, caplog):
    # `timellm --quiet` stores progress=false in the member's settings: rerun without it,
    # the log said the folder "held a finished run with other settings"
    csv, out = synth_csv(n=1400), tmp_path / "r"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24", "--quiet"]
    argv += ["--members", "dlinear@epochs=1", "--out", str(out)]
    assert main([*argv, "--set", "dlinear.progress=false"]) == 0
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "other settings" not in caplog.text
    assert reused_members(out) == 1
    assert main([*argv, "--set", "dlinear.lr=0.01"]) == 0  # a real change is still named
    assert "member_params.dlinear.lr: (unset) -> 0.01" in caplog.text
    # with the members it refits (--set keeps the folder: the others would be reused)
    assert "its results are replaced, refitting dlinear@epochs=1:" in caplog.text


def test_resume_is_no_changed_setting(tmp_path):
    # a finished run's command with --resume added said its results "are replaced"
    from experiments.config import RunConfig
    from experiments.run import _changed_settings

    cfg = RunConfig(dataset="ETTh1", members=["timellm"], out=str(tmp_path))
    (tmp_path / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    cfg.member_params = {"timellm": {"resume": True, "progress": False}}
    assert _changed_settings(tmp_path, cfg) == []
    cfg.member_params = {"timellm": {"lr": 0.01}}
    assert _changed_settings(tmp_path, cfg) == ["member_params.timellm.lr: (unset) -> 0.01"]


def test_a_relative_data_dir_of_an_earlier_run_is_no_changed_setting(
    data_dir, tmp_path, monkeypatch, caplog
):
    # config.yaml kept --data-dir as given before it was stored absolute: the first rerun
    # warned that the folder "held a finished run with other settings (data_dir: d -> ...)"
    (tmp_path / "d").symlink_to(data_dir.resolve())  # $HYBRID_FORECAST_DATA may be relative
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    argv = ["run", "--dataset", "ETTh1", "--data-dir", "d", "--seq-len", "48", "--pred-len"]
    argv += ["12", "--members", "naive", "--percent", "10", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    config, stored = out / "config.yaml", f"data_dir: {(tmp_path / 'd').resolve()}"
    text = config.read_text(encoding="utf-8")
    assert stored in text
    config.write_text(text.replace(stored, "data_dir: d"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "other settings" not in caplog.text


def test_bad_setting_on_a_rerun_leaves_the_finished_run_alone(synth_csv, tmp_path, capsys):
    # refused before the folder is touched: results, config.yaml and run.log as they were
    out = tmp_path / "r"
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = synth_run_argv(csv, out, "--pred-len", "12", "--set", "snaive.period=abc")
    assert main(argv) == 2
    assert "snaive" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(synth_run_argv(csv, tmp_path / "fresh", "--set", "snaive.period=abc")) == 2
    assert not (tmp_path / "fresh").exists()  # no half-made folder either
    # the same key twice: the last value won without a word
    twice = ["--set", "snaive.period=24", "--set", "snaive.period=12"]
    assert main(synth_run_argv(csv, tmp_path / "fresh", *twice)) == 2
    assert "--set snaive.period is given twice" in capsys.readouterr().err


def test_failed_rerun_leaves_no_results_of_the_previous_run(
    synth_csv, tmp_path, capsys, monkeypatch
):
    # A member failing mid-run: the folder must not look finished, with the new
    # config.yaml beside the old results.json (`summary` would file the old numbers
    # under the new settings); run.log says what happened.
    from classical.naive import SeasonalNaive

    out = tmp_path / "r"
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0

    def broken(self, train, val):
        raise ValueError("diverged")

    monkeypatch.setattr(SeasonalNaive, "fit", broken)
    assert main(synth_run_argv(csv, out, "--pred-len", "12")) == 2
    assert "member snaive failed: ValueError: diverged" in capsys.readouterr().err
    assert (out / "config.yaml").is_file()
    for name in ("results.json", "results.md", "forecasts.npz", "router_weights.npz"):
        assert not (out / name).exists(), name
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "removed the previous run's results.json" in log and "run failed: UserError" in log


def test_a_rerun_removes_the_analysis_of_the_old_run(synth_csv, tmp_path):
    csv = synth_csv(n=1400)
    out = tmp_path / "r"
    assert main(synth_run_argv(csv, out)) == 0
    (out / "win_rates.png").write_bytes(b"old analyse figure")
    assert main(synth_run_argv(csv, out, "--router", "median")) == 0
    assert not (out / "win_rates.png").exists()


def test_a_folder_of_ones_own_files_is_not_written_over(synth_csv, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.md").write_text("my notes", encoding="utf-8")
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, mine)) == 2
    assert "holds results.md but is not a run folder (no run.log)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["results.md"]
    assert (mine / "results.md").read_text(encoding="utf-8") == "my notes"
    # one's own config.yaml beside them, even one `run` reads, makes no run folder: the
    # run wrote over it and deleted results.md
    own = "seq_len: 96\npred_len: 24\nmembers: [naive]\n"
    (mine / "config.yaml").write_text(own, encoding="utf-8")
    assert main(synth_run_argv(csv, mine)) == 2
    err = capsys.readouterr().err
    assert "holds config.yaml, results.md but is not a run folder (no run.log)" in err
    assert "choose an empty or new --out" in err
    (mine / "results.md").unlink()  # a config.yaml alone is written over just the same
    assert main(synth_run_argv(csv, mine)) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    assert (mine / "config.yaml").read_text(encoding="utf-8") == own


def test_data_warnings_reach_run_log_and_temp_files_are_swept(synth_csv, tmp_path):
    def gap(df):
        return df.drop(index=[500, 501])

    out = tmp_path / "r"
    (out / "members" / "naive").mkdir(parents=True)
    orphan = out / "members" / "naive" / ".forecasts.npz.abc123.tmp"  # a kill -9 mid-write
    orphan.write_bytes(b"x" * 100)
    assert main(synth_run_argv(synth_csv(n=1400, edit=gap), out)) == 0
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "gap(s) in the h timestamps" in log  # logged before the folder existed
    assert not orphan.exists() and "left by an interrupted write" in log
    assert re.search(r"periods \(train rows, \d+\.\d s\): \[\d", log), "the analysis is timed"


def test_rerun_with_another_seed_needs_its_own_folder(synth_csv, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(synth_run_argv(synth_csv(n=1400), out)) == 0
    before = (out / "results.json").read_text(encoding="utf-8")
    cfg = str(out / "config.yaml")
    assert main(["run", "--config", cfg, "--seed", "1", "--quiet"]) == 2
    assert "give --out" in capsys.readouterr().err
    assert (out / "results.json").read_text(encoding="utf-8") == before
    # refitting only the router into the same folder is what --config is for
    assert main(["run", "--config", cfg, "--router", "median", "--quiet"]) == 0
    assert main(["run", "--config", cfg, "--seed", "1", "--out", str(tmp_path / "s1")]) == 0


def test_a_rerun_with_other_settings_says_what_it_replaces(synth_csv, tmp_path, caplog):
    out, csv = tmp_path / "r", synth_csv(n=1400)

    def replaced() -> list[str]:
        said = [r.getMessage() for r in caplog.records if "held a finished run" in r.getMessage()]
        caplog.clear()
        return said

    assert main(synth_run_argv(csv, out)) == 0
    assert main(synth_run_argv(csv, out)) == 0  # the same run again: nothing replaced
    assert replaced() == []
    assert main(synth_run_argv(csv, out, "--router", "median", "--seed", "3")) == 0
    (said,) = replaced()
    assert "(router: mean -> median; seed: 0 -> 3); its results are replaced" in said
    argv = synth_run_argv(csv, out, "--router", "median", "--seed", "3")
    argv[argv.index("naive,snaive")] = "naive,snaive@period=12"
    assert main(argv) == 0
    (said,) = replaced()
    assert "members: ['naive', 'snaive'] -> ['naive', 'snaive@period=12']" in said
    assert "its results are replaced, refitting snaive@period=12:" in said  # naive reused
    cfg = str(out / "config.yaml")
    assert main(["run", "--config", cfg, "--router", "mean", "--quiet"]) == 0
    assert (
        "(router: median -> mean); its results are replaced, no member refitted" in (replaced()[0])
    )
    # damaged, in a folder a run made: nothing says which settings changed, and one
    # warning says so (test_a_run_folder_whose_config_yaml_is_damaged_is_still_its_runs)
    (out / "config.yaml").write_text("x: [", encoding="utf-8")
    assert main(argv) == 0
    assert replaced() == []


def test_an_identical_rerun_keeps_its_results_until_it_replaces_them(
    synth_csv, tmp_path, monkeypatch
):
    # Ctrl-C during the refit of a rerun of the same settings deleted the finished results
    import experiments.run as run_mod
    from classical.naive import SeasonalNaive

    out, csv = tmp_path / "r", synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    (out / "win_rates.png").write_bytes(b"analyse's figure of this run")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "run.log"}
    (out / "members" / "snaive" / "forecasts.npz").unlink()  # snaive is refitted

    def interrupted(self, *args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(SeasonalNaive, "fit", interrupted)
        assert main(synth_run_argv(csv, out)) == 130
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "run.log"}
    assert after == before
    # a new model replaces the one the results were made with: they go first
    with monkeypatch.context() as m:
        m.setattr(SeasonalNaive, "save", interrupted)
        assert main(synth_run_argv(csv, out)) == 130
    assert not (out / "results.json").exists() and not (out / "win_rates.png").exists()
    assert main(synth_run_argv(csv, out)) == 0
    assert (out / "results.json").is_file() and (out / "forecasts.npz").is_file()
    # killed while this run writes its own: no results.json beside the old outputs
    with monkeypatch.context() as m:
        m.setattr(run_mod, "write_json", interrupted)
        assert main(synth_run_argv(csv, out)) == 130
    assert not (out / "results.json").exists() and not (out / "results.md").exists()


def _ett_folder(root: Path, seed: int) -> Path:
    """A data folder holding an ETTh1.csv of synthetic rows (the ETT split's 14400)."""
    from conftest import synthetic_frame

    (root / "ETT-small").mkdir(parents=True)
    synthetic_frame(14400, seed=seed).to_csv(root / "ETT-small" / "ETTh1.csv", index=False)
    return root


def test_a_finished_run_on_other_data_is_not_replaced_by_its_config(
    tmp_path, monkeypatch, capsys, caplog
):
    # config.yaml says data_dir: null when $HYBRID_FORECAST_DATA named the folder: its
    # rerun under another folder replaced the run on other data without a word
    one, two = _ett_folder(tmp_path / "one", 0), _ett_folder(tmp_path / "two", 1)
    out = tmp_path / "r"
    argv = ["run", "--dataset", "ETTh1", "--seq-len", "48", "--pred-len", "12", "--periods"]
    argv += ["24", "--members", "naive", "--quiet"]
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(one))
    assert main([*argv, "--out", str(out)]) == 0
    assert "data_dir: null" in (out / "config.yaml").read_text(encoding="utf-8")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    config = str(out / "config.yaml")
    capsys.readouterr()
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(two))
    assert main(["run", "--config", config, "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # not the data's warnings too
    assert f"would overwrite the finished run in {out}, made from other data" in line
    assert "give --out" in line and str(two / "ETT-small" / "ETTh1.csv") in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the folder the variable names, given as --data-dir: the same data, no other setting
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(one))
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--config", config, "--data-dir", str(one), "--quiet"]) == 0
    assert "other settings" not in caplog.text
    # --out names the folder: replaced, as with any other setting, and said
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(two))
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--out", str(out)]) == 0
    assert f"held a finished run with other settings (data: {one}" in caplog.text


def test_a_config_copied_out_of_its_run_folder_leaves_that_run_alone(
    synth_csv, tmp_path, monkeypatch, caplog
):
    out = tmp_path / "r"
    assert main(synth_run_argv(synth_csv(n=1400), out)) == 0
    text = (out / "config.yaml").read_text(encoding="utf-8")
    assert f"out: {out}\n" in text  # absolute: the folder it was written in
    before = (out / "results.json").read_bytes()
    copy = tmp_path / "mine.yaml"
    copy.write_text(text.replace("router: mean", "router: median"), encoding="utf-8")
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--config", str(copy), "--quiet"]) == 0
    assert (out / "results.json").read_bytes() == before
    assert f"names out: {out}" in caplog.text
    (new,) = (tmp_path / "w" / "runs").iterdir()
    assert json.loads((new / "results.json").read_text(encoding="utf-8"))["router"] == "median"


def test_features_flag_overrides_the_config(synth_csv, tmp_path):
    out = tmp_path / "s"
    assert main(synth_run_argv(synth_csv(n=1400), out, "--features", "S")) == 0
    other = tmp_path / "m"
    argv = ["run", "--config", str(out / "config.yaml"), "--features", "M"]
    assert main([*argv, "--out", str(other), "--quiet"]) == 0
    assert json.loads((other / "results.json").read_text(encoding="utf-8"))["features"] == "M"


def test_a_run_folders_config_reruns_into_that_folder(synth_csv, tmp_path, monkeypatch):
    # a copied run folder: rerunning its config must not write into the original
    out = tmp_path / "r"
    assert main(synth_run_argv(synth_csv(n=1400), out)) == 0
    cfg = (out / "config.yaml").read_text(encoding="utf-8")
    assert f"data_path: {tmp_path}" in cfg  # absolute: the same file from anywhere
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    before = (out / "results.json").read_bytes()
    monkeypatch.chdir(tmp_path / "copy")  # another working directory too
    assert main(["run", "--config", "config.yaml", "--router", "median", "--quiet"]) == 0
    assert (out / "results.json").read_bytes() == before
    res = json.loads((tmp_path / "copy" / "results.json").read_text(encoding="utf-8"))
    assert res["router"] == "median"


def test_empty_members_and_default_folder(synth_csv, tmp_path, capsys, monkeypatch):
    from experiments.config import RunConfig
    from experiments.run import default_out

    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--members", "", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "e")]) == 2
    assert "no members given" in capsys.readouterr().err
    assert default_out(RunConfig(dataset="ETTh1")) == "runs/ETTh1_512_96_s0"
    cfg = RunConfig(dataset=None, data_path="/x/my data.csv", features="S", seq_len=96)
    assert default_out(cfg) == "runs/my_data_S_96_96_s0"
    # a few-shot cut or another target is another experiment, not a rerun of this one
    cfg = RunConfig(dataset="ETTh1", features="MS", target="HUFL", percent=10)
    assert default_out(cfg) == "runs/ETTh1_MS-HUFL_p10_512_96_s0"
    assert default_out(RunConfig(dataset="ETTh1", target="HUFL")) == "runs/ETTh1_512_96_s0"
    assert default_out(RunConfig(dataset="ETTh1", features="S", target="OT")) == (
        "runs/ETTh1_S_512_96_s0"
    )
    # a few-shot run begun in the name older versions gave it is continued there
    monkeypatch.chdir(tmp_path)
    few = RunConfig(dataset="ETTh1", percent=10)
    (tmp_path / "runs" / "ETTh1_512_96_s0").mkdir(parents=True)
    (tmp_path / "runs" / "ETTh1_512_96_s0" / "config.yaml").write_text(
        few.to_yaml(), encoding="utf-8"
    )
    assert default_out(few) == "runs/ETTh1_512_96_s0"
    assert default_out(RunConfig(dataset="ETTh1", percent=20)) == "runs/ETTh1_p20_512_96_s0"
    # files named in Chinese keep their names, so two of them never share a folder
    a, b = (RunConfig(dataset=None, data_path=f"/x/{n}.csv") for n in ("油温数据", "电力负荷"))
    assert default_out(a) == "runs/油温数据_512_96_s0" != default_out(b)


class _Diverged(NaiveLast):
    """A member whose fit blew up: one NaN in its forecasts."""

    value = np.nan

    def predict(self, windows):
        pred = super().predict(windows).astype(np.float64)
        pred[0, 0, 0] = self.value
        return pred


class _FarOffScale(_Diverged):
    """Finite, but beyond float32: stored as inf (numpy's overflow warning came first)."""

    value = 1e160


def _run_beside_naive(name: str, member: type, csv, out, monkeypatch) -> list[str]:
    """Register ``member`` as ``name`` and return the argv of a run of naive and it."""
    from experiments import registry

    registry._load_builtin()
    monkeypatch.setitem(registry._REGISTRY, name, (lambda ctx: member(), "test", ()))
    argv = synth_run_argv(csv, out)
    argv[argv.index("naive,snaive")] = f"naive,{name}"
    return argv


@pytest.mark.parametrize("member", [_Diverged, _FarOffScale])
def test_non_finite_member_forecasts_stop_the_run(member, synth_csv, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    argv = _run_beside_naive("diverged", member, synth_csv(n=1400), out, monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged forecast 1 non-finite value(s)" in err[0]
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("shared", [False, True])
def test_a_folder_another_command_holds_is_refused_untouched(
    shared, synth_csv, tmp_path, capsys, monkeypatch
):
    # another run writing it, or analyse / forecast reading it: refused before the
    # data is even loaded (minutes of preparation with Time-LLM's checks)
    import experiments.run as run_mod
    from ensemble.io import FolderLock

    out = tmp_path / "run"
    argv = synth_run_argv(synth_csv(n=1400), out)
    out.mkdir()
    lock = FolderLock(out, shared=shared)  # flock: per open file, so here too
    try:
        with monkeypatch.context() as m:
            m.setattr(run_mod, "_prepare", lambda *a, **k: pytest.fail("prepared anyway"))
            assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        # a writer names itself (here: this process); readers share the lock and do not
        who = f"pid {os.getpid()} since " if not shared else "a run writing it, or analyse or "
        assert len(err) == 1 and err[0].startswith(f"error: another command is using {out} (")
        assert who in err[0] and err[0].endswith("; wait for it to finish or give another --out")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        lock.release()
    assert main(argv) == 0 and (out / "results.json").is_file()


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_lets_go_of_its_folder_however_it_ends(fails, synth_csv, tmp_path, monkeypatch):
    import ensemble.io
    import experiments.run as run_mod
    from classical.naive import SeasonalNaive

    held = []

    class Recorded(ensemble.io.FolderLock):
        def __init__(self, folder):
            super().__init__(folder)
            held.append(self)

    monkeypatch.setattr(run_mod, "FolderLock", Recorded)
    if fails:

        def broken(self, train, val):
            raise ValueError("diverged")

        monkeypatch.setattr(SeasonalNaive, "fit", broken)
    assert main(synth_run_argv(synth_csv(n=1400), tmp_path / "r")) == (2 if fails else 0)
    assert len(held) == 1 and held[0]._fh.closed  # released, not left to the collector


def test_out_naming_a_file_is_a_user_error(synth_csv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    for out in (afile, afile / "sub"):
        assert main(synth_run_argv(synth_csv(n=1400), out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot use {out}" in err[0], err


@pytest.mark.parametrize(
    "text,needle",
    [
        ("seq_len: abc", "seq_len: 'abc' is not a whole number"),
        ("seq_len: 48.5", "is not a whole number"),
        ("seq_len: true", "is not a whole number"),
        ("dataset: 5", "dataset: 5 is not a string"),
        ("members: [{a: 1}]", "is not a list of member specs"),
        ("member_params: {naive: 3}", "is not a mapping"),
        ("1: 2", "unknown config key(s) 1"),
        ("seed: 4294967296", "out of range"),
        ("periods: [24, 1]", "periods: [24, 1] is not a list of whole numbers >= 2"),
        (
            "# 变压器油温\nseed: 1",
            "not UTF-8 text (a YAML config is read as UTF-8; a file saved as GBK",
        ),
    ],
)
def test_config_values_are_type_checked(text, needle, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes((text + "\n").encode("gbk"))
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_periods_flag_replaces_the_detected_periods(synth_csv, tmp_path, capsys):
    import json

    argv = ["run", "--data-path", str(synth_csv(n=1200)), "--seq-len", "96", "--pred-len"]
    argv += ["24", "--members", "naive", "--quiet"]
    assert main([*argv, "--periods", "12,48", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "results.json").read_text(encoding="utf-8"))["periods"] == [
        12,
        48,
    ]
    assert "periods:\n- 12\n- 48" in (tmp_path / "a" / "config.yaml").read_text(encoding="utf-8")
    assert main([*argv, "--periods", "12,x", "--out", str(tmp_path / "b")]) == 2
    assert "--periods '12,x'" in capsys.readouterr().err
    for bad in ("0", "24,1"):  # named as the flag, not as a config key
        assert main([*argv, "--periods", bad, "--out", str(tmp_path / "b")]) == 2
        assert f"--periods {bad!r}: each period is a whole number >= 2" in capsys.readouterr().err
    assert main([*argv, "--periods", ",", "--out", str(tmp_path / "b")]) == 2
    assert "--periods ',' has an empty item" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_learned_router_needs_validation_windows(synth_csv, tmp_path, capsys):
    argv = ["run", "--data-path", str(synth_csv(n=120)), "--seq-len", "24", "--pred-len", "12"]
    argv += ["--members", "naive,snaive", "--router", "learned_torch", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "learns from validation windows and this split has" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("dlinear@individual=abc", "individual must be true or false (got 'abc')"),
        ("dlinear@individual=1", "individual must be true or false (got 1)"),
        ("dlinear@kernel=25.7", "kernel must be odd and positive (got 25.7), or auto"),
        # 1e8 passed and failed mid-fit on a 12.8 GB allocation
        ("dlinear@kernel=100000001", "kernel 100000001 is longer than the lookback L="),
        ("snaive@period=24.9", "period must be a whole number (got 24.9)"),
        ("snaive@period=0", "period must be > 0 (got 0)"),
        ("dlinear@seed=-1", "seed must be >= 0 (got -1)"),
        ("dlinear@lr_decay=-2", "lr_decay must be > 0 (got -2)"),
        ("nlinear@patience=-1", "patience must be >= 0 (got -1)"),
        ("nlinear@epochs=true", "epochs must be a whole number (got True)"),
        ("lightgbm@max_train_rows=0", "max_train_rows must be > 0 (got 0)"),
        ("lightgbm@threads=-3", "threads must be > 0 (got -3)"),
        ("lightgbm@level_feature=abc", "level_feature must be true or false"),
        ("arima@d=-1", "d must be >= 0 (got -1)"),
        ("arima@maxiter=0", "maxiter must be > 0 (got 0)"),
        ("arima@fourier=24+1.5", "fourier must be a whole number (got 1.5)"),
        ("arima@fourier=99999999999999999999", "fourier must be <= 10000000"),
        ("lightgbm@threads=99999999999999999999", "threads must be <= 1024"),
        ("lightgbm@rounds=1e12", "rounds must be <= 2147483647"),
        # d = 10 gave a test MSE of 7e13 on ETTh1, exit 0
        ("arima@d=3", "d must be <= 2 (got 3)"),
        # a given season was silently no season: kept, or refused
        ("arima@seasonal=1", "seasonal must be 0 (no seasonal difference) or a period >= 2"),
        ("arima@seasonal=500", "d + season = 500 must be below the lookback"),
        ("arima@fit_rows=3", "fit_rows must be 0 (all rows) or >= 100 (got 3)"),
    ],
)
def test_member_settings_are_cast_strictly_before_any_fit(
    synth_csv, tmp_path, capsys, spec, needle
):
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out, "--periods", "24")
    argv[argv.index("naive,snaive")] = f"naive,{spec}"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{spec}: a setting has the wrong type" in err[0], err
    assert needle in err[0], err
    assert not out.exists()  # refused before the folder is made, let alone a member fitted


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("timellm@device=tpu", "device must be cpu or cuda"),
        ("timellm@inject=ridge@inject_folds=0", "inject_folds must be >= 2"),
        ("timellm@patch_len=200", "patch_len 200 is longer than the lookback 96"),
    ],
)
def test_timellm_settings_are_refused_before_any_fit(synth_csv, tmp_path, capsys, spec, needle):
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out, "--periods", "24")
    argv[argv.index("naive,snaive")] = f"naive,{spec}"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "members,needle",
    [
        ("snaive@period=24,snaive@period=24.0", "listed twice"),
        ("arima@fourier=4+13,arima@fourier=4 +13", "listed twice"),
        ("dlinear@kernel=25@lr=0.01,dlinear@lr=0.01@kernel=25", "listed twice"),
        ("dlinear@kernel=25@kernel=3", "'kernel' is given twice"),
        ("dlinear@=3", "member setting '=3' in 'dlinear@=3' is not key=value"),  # no name
        # other settings, one folder: each overwrote the other's model and forecasts
        ("arima@fourier=24+168,arima@fourier=24_168", "would share the folder members/"),
    ],
)
def test_one_model_written_two_ways_is_refused(members, needle, synth_csv, tmp_path, capsys):
    argv = synth_run_argv(synth_csv(n=1400), tmp_path / "r")
    argv[argv.index("naive,snaive")] = members
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_typed_member_settings_from_yaml_are_cast_strictly():
    from ensemble.errors import UserError
    from experiments import registry

    ctx = registry.MemberContext(96, 24, 3, "h", [24], 0, "x")

    def build(spec: str, **params):
        return registry.build(spec, replace(ctx, params=params))

    m = build("dlinear", kernel=25.0, individual="TRUE", lr="1e-3", seed=7, lr_decay=1)
    assert (m.kernel, m.individual, m.lr, m.seed, m.lr_decay) == (25, True, 0.001, 7, 1.0)
    assert build("snaive", period="24").period == 24
    arima = build("arima", fourier=[24, 168], fit_rows="all")
    assert arima.fourier_periods == [24, 168] and arima.fit_rows is None
    for spec, params in (
        ("dlinear", {"individual": "yes"}),
        ("dlinear", {"lr": float("nan")}),
        ("dlinear", {"lr_decay": 2}),
        ("dlinear", {"seed": 2**32}),
        ("nlinear", {"epochs": [3]}),
        ("lightgbm", {"seed": True}),
        ("dlinear", {"progress": "abc"}),
    ):
        with pytest.raises(UserError, match="a setting has the wrong type"):
            build(spec, **params)


class _Broken(NaiveLast):
    """A member whose library fails in a way fit_member did not list."""

    error: BaseException = RuntimeError("lightgbm: num_data must be positive\nmore detail")

    def fit(self, train, val):
        raise self.error


def test_an_unexpected_member_failure_is_one_line_with_the_traceback_in_run_log(
    synth_csv, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "r"
    argv = _run_beside_naive("broken", _Broken, synth_csv(n=1400), out, monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "member broken failed: RuntimeError: lightgbm: num_data must be positive;" in err[0]
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "Traceback" in log and "more detail" in log
    assert not (out / "results.json").exists()
    # an interrupt or running out of memory is not the member's settings
    monkeypatch.setattr(_Broken, "error", KeyboardInterrupt())
    assert main(argv) == 130
    monkeypatch.setattr(_Broken, "error", MemoryError())
    with pytest.raises(MemoryError):
        main(argv)


def test_snaive_says_when_no_period_fits_the_lookback(synth_csv, tmp_path, caplog):
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out, "--periods", "100000")
    argv[argv.index("naive,snaive")] = "snaive"
    assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    warned = [m for m in warned if "snaive falls back to period 1" in m]  # once, not per build
    assert len(warned) == 1 and "every period (100000) is longer than the lookback 96" in warned[0]
    assert "snaive falls back to period 1" in (out / "run.log").read_text(encoding="utf-8")


def test_snaive_without_a_period_says_a_longer_lookback_would_not_help(synth_csv, tmp_path, caplog):
    def noise(df):
        rng = np.random.default_rng(0)
        for col in df.columns[1:]:
            df[col] = rng.standard_normal(len(df))
        return df

    argv = synth_run_argv(synth_csv(n=1400, edit=noise), tmp_path / "r")
    argv[argv.index("naive,snaive")] = "snaive"
    assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if "falls back to period 1" in r.getMessage()]
    assert len(warned) == 1 and "must repeat 10 times there" in warned[0]
    assert "--periods N when you know the period" in warned[0] and "--seq-len" not in warned[0]


def test_the_best_of_a_tie_is_the_member_and_given_periods_are_labelled(
    synth_csv, tmp_path, capsys
):
    # one member: the ensemble equals it, summed in another order
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "snaive", "--periods", "24", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    best = [
        line.split()[0]
        for line in capsys.readouterr().out.splitlines()
        if "<- best member on val" in line
    ]
    assert best == ["snaive"]  # ties: tests/test_report.py's best_member_on_val test
    md = (tmp_path / "r" / "results.md").read_text(encoding="utf-8")
    assert "periods (given): [24]" in md


def test_the_seed_reaches_the_members(synth_csv, tmp_path):
    # --seed must change a trained member's forecasts, or "mean ± std over seeds" is
    # the spread of one run
    csv = synth_csv(n=1400)

    def dlinear(seed: int) -> np.ndarray:
        out = tmp_path / f"s{seed}"
        argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
        argv += ["--members", "dlinear", "--set", "dlinear.epochs=1", "--seed", str(seed)]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
        with np.load(out / "forecasts.npz") as z:
            return z["test/dlinear"]

    a, b = dlinear(0), dlinear(1)
    assert a.shape == b.shape and not np.allclose(a, b)


def test_periods_are_detected_on_train_rows_only(synth_csv):
    # Val and test rows carrying a strong period of their own must not move the periods.
    from ensemble.data import load_dataset, make_splits
    from experiments.run import detect_periods

    def splits(edit=None):
        return make_splits(load_dataset(data_path=synth_csv(n=3000, edit=edit)), 96, 24)

    plain = splits()
    start = plain.borders[0][1] + 96  # first val row after the lookback shared with train

    def other_cycle(df):
        t = np.arange(len(df) - start)
        for col in df.columns[1:]:
            df.loc[start:, col] = 10 + 20 * np.sin(2 * np.pi * t / 10)
        return df

    assert detect_periods(plain) == [24]
    from experiments import run as run_mod

    run_mod._REPORTS.clear()  # the analyser itself, not the same train rows' saved report
    assert detect_periods(splits(other_cycle)) == [24]


def test_train_rows_analysed_once_per_process(synth_csv, monkeypatch):
    # a bench grid's cells share their train rows across horizons and seeds: 7 s (ETTh1)
    # to a minute (weather) of analysis per cell
    import periodicity
    from ensemble.data import load_dataset, make_splits
    from experiments import run as run_mod
    from experiments.run import detect_periods

    calls = []
    real = periodicity.analyse
    monkeypatch.setattr(periodicity, "analyse", lambda x, **kw: calls.append(1) or real(x, **kw))
    monkeypatch.setattr(run_mod, "_REPORTS", {})
    csv = synth_csv(n=3000)
    a = make_splits(load_dataset(data_path=csv), 96, 24)
    b = make_splits(load_dataset(data_path=csv), 96, 48)  # same train rows
    assert detect_periods(a) == detect_periods(b) == [24] and len(calls) == 1
    assert detect_periods(a, k=1) == [24] and len(calls) == 1

    def shifted(df):
        df.iloc[:, 1:] += 1.0
        return df

    assert detect_periods(
        make_splits(load_dataset(data_path=synth_csv(n=3000, edit=shifted)), 96, 24)
    ) == [24]
    assert len(calls) == 2  # other train rows: analysed


def test_members_trained_by_epochs_report_their_curves_and_kept_epoch(synth_csv, tmp_path):
    from experiments.run import training_curves

    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv()), "--seq-len", "32", "--pred-len", "8"]
    argv += ["--members", "dlinear,arima", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    curve = res["training"]["dlinear"]
    assert set(res["training"]) == {"dlinear"}  # ARIMA has no epochs
    assert curve["epochs"] == len(curve["val_mse"]) == len(curve["train_mse"]) >= 2
    assert curve["best_epoch"] == 1 + int(np.argmin(curve["val_mse"]))
    assert (out / "training.png").stat().st_size > 0
    md = (out / "results.md").read_text(encoding="utf-8")
    row = f"| dlinear | {curve['epochs']} | {curve['best_epoch']} |"
    assert row in md
    val = curve["val_mse"]
    still = curve["best_epoch"] == curve["epochs"] and min(val[:-1]) - val[-1] > 1e-3 * min(
        val[:-1]
    )
    assert curve["still_improving"] is still
    assert (
        "still falling at its last epoch" in (out / "run.log").read_text(encoding="utf-8")
    ) is still
    assert (" **still improving** |" if still else " past its best |") in md

    def curve_of(*val):
        mdir = out / "members" / "other" / "model"
        mdir.mkdir(parents=True, exist_ok=True)
        history = [{"train_mse": 1.0, "val_mse": v} for v in val]
        (mdir / "config.json").write_text(json.dumps({"history": history}), encoding="utf-8")
        return training_curves(out, ["other"])["other"]

    # a history with a diverged (NaN) epoch: the kept epoch is the best finite one
    assert curve_of(0.9, float("nan"), 0.7, 0.8)["best_epoch"] == 3
    assert not curve_of(0.9, float("nan"), 0.7, 0.8)["still_improving"]
    assert curve_of(0.9, 0.8, 0.7)["still_improving"]  # the epoch budget ended it
    # a last gain of 0.05 %: more epochs would not change the comparison
    assert not curve_of(0.9, 0.8, 0.7996)["still_improving"]
    assert not curve_of(0.9)["still_improving"]  # one epoch says nothing either way


def test_a_member_cut_off_by_its_epoch_budget_is_flagged(synth_csv, tmp_path, caplog):
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv()), "--seq-len", "32", "--pred-len", "8"]
    argv += ["--members", "dlinear@epochs=2@lr=0.00001,naive", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["training"]["dlinear@epochs=2@lr=0.00001"]["still_improving"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("still falling at its last epoch (2 of 2 kept)" in m for m in warned)
    assert "| 2 | 2 |" in (out / "results.md").read_text(encoding="utf-8")


def test_a_fitted_member_is_freed_before_the_next_one_loads(synth_csv, tmp_path, monkeypatch):
    # A reference cycle through the frames of a member's fit (the first import of a
    # transformers model class makes one) must not keep its model alive while the next
    # member loads: on a small GPU that is two backbones at once.
    import gc
    import sys
    import weakref

    from classical.dlinear import DLinear

    alive, models = [], []
    fit = DLinear.fit

    def fit_in_a_cycle(self, train, val):
        alive.append(sum(ref() is not None for ref in models))  # earlier members' models
        models.append(weakref.ref(self))
        frame = sys._getframe()
        cycle = [frame]  # the frame holds the list, the list the frame
        assert cycle
        return fit(self, train, val)

    monkeypatch.setattr(DLinear, "fit", fit_in_a_cycle)
    monkeypatch.setattr("experiments.run.HOLDS_A_BACKBONE", {"timellm", "dlinear"})  # cheaper
    argv = ["run", "--data-path", str(synth_csv()), "--seq-len", "32", "--pred-len", "8"]
    argv += ["--members", "dlinear@kernel=5,dlinear@kernel=9,dlinear@kernel=13"]
    argv += ["--out", str(tmp_path / "r"), "--quiet"]
    gc.disable()  # no automatic collection: only the run's own frees the cycles
    try:
        assert main(argv) == 0
    finally:
        gc.enable()
    assert alive == [0, 0, 0]


def test_config_yaml_keeps_non_ascii_text_readable_and_reads_it_back(tmp_path):
    from experiments.config import RunConfig

    cfg = RunConfig(member_params={"timellm": {"description": "变压器油温，每小时一次。"}})
    text = cfg.to_yaml()
    assert "变压器油温，每小时一次。" in text  # not \u escapes
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    again = RunConfig.from_file(tmp_path / "config.yaml")
    assert again.member_params["timellm"]["description"] == "变压器油温，每小时一次。"


def test_a_moved_backbone_folder_does_not_stop_a_rerun_that_reuses_forecasts(
    synth_csv, tmp_path, tiny_backbone, capsys
):
    # the backbone is a local folder (here a stand-in: tiny_backbone loads a random LLaMA)
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=500, channels=2)), "--seq-len", "32"]
    argv += ["--pred-len", "8", "--members", f"naive,timellm@backbone={folder}", "--quiet"]
    for kv in ("d_model=8", "d_ff=16", "n_heads=2", "num_prototypes=16", "epochs=1"):
        argv += ["--set", f"timellm.{kv}"]
    assert main([*argv, "--out", str(out), "--router", "mean"]) == 0
    folder.joinpath("config.json").unlink()
    folder.rmdir()  # the run folder copied to a machine without the model
    # another router: forecasts reused
    assert main([*argv, "--out", str(out), "--router", "median"]) == 0
    assert "reusing forecasts" in (out / "run.log").read_text(encoding="utf-8")
    assert main([*argv, "--seed", "1", "--out", str(tmp_path / "s1")]) == 2  # must fit: refused
    assert "does not exist" in capsys.readouterr().err


def test_a_rerun_refused_for_its_backbone_keeps_the_finished_run(synth_csv, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=400, channels=2)), "--seq-len", "32"]
    argv += ["--pred-len", "8", "--router", "mean", "--quiet", "--out", str(out)]
    assert main([*argv, "--members", "naive"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    # MiniLM has 6 layers: refused before the folder's run is replaced, not at the fit
    assert main([*argv, "--members", "naive,timellm@llm_layers=9"]) == 2
    assert "llm_layers 9 is out of range" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
    fresh = tmp_path / "new"
    assert main([*argv[:-1], str(fresh), "--members", "naive,timellm@llm_dim=999"]) == 2
    assert "does not match backbone" in capsys.readouterr().err
    assert not fresh.exists()  # no half-made folder


def test_a_hand_written_config_with_only_a_data_path_is_the_users_file(synth_csv, tmp_path):
    from experiments.config import RunConfig

    csv = synth_csv(n=400, channels=2)
    (tmp_path / "c.yaml").write_text(f"data_path: {csv}\nmembers: [naive]\n", encoding="utf-8")
    cfg = RunConfig.from_file(tmp_path / "c.yaml")
    assert cfg.dataset is None  # as --data-path alone: not "ETTh1" with its split
    named = tmp_path / "n.yaml"
    named.write_text(f"dataset: ETTh1\ndata_path: {csv}\n", encoding="utf-8")
    assert RunConfig.from_file(named).dataset == "ETTh1"  # a copy of a named dataset
    # a published file by its path under the data folder: that dataset (not ETTh1)
    named.write_text("data_path: ETT-small/ETTm1.csv\n", encoding="utf-8")
    assert RunConfig.from_file(named).dataset == "ETTm1"
    out = tmp_path / "r"
    argv = ["run", "--config", str(tmp_path / "c.yaml"), "--seq-len", "32", "--pred-len", "8"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (res["dataset"], res["split"]) == (csv.stem, "ratio")


def test_members_that_forecast_alike_are_named(synth_csv, tmp_path, caplog):
    argv = ["run", "--data-path", str(synth_csv(n=400, channels=2)), "--seq-len", "32"]
    argv += ["--pred-len", "8", "--quiet", "--out", str(tmp_path / "r")]
    # kernel 25 is DLinear's default: one model under two names
    assert main([*argv, "--members", "naive,dlinear@epochs=1,dlinear@epochs=1@kernel=25"]) == 0
    said = [r.getMessage() for r in caplog.records if "forecast exactly alike" in r.getMessage()]
    assert len(said) == 1 and "dlinear@epochs=1 and dlinear@epochs=1@kernel=25" in said[0]


def test_splits_too_small_for_lightgbm_are_refused_before_any_fit(synth_csv, tmp_path, capsys):
    # 400 rows, 70 % train: L=268, H=12 leave 1 train window of 1 channel (S)
    csv = synth_csv(n=400, channels=1)
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(csv), "--seq-len", "268", "--pred-len", "12", "--quiet"]
    argv += ["--features", "S", "--members", "naive,lightgbm", "--out", str(out)]
    assert main(argv) == 2
    assert "1 train rows and" in capsys.readouterr().err
    assert not out.exists()  # refused with the settings, not after naive had fitted


def test_a_kill_between_a_members_model_and_its_forecasts_leaves_no_stale_forecasts(
    synth_csv, tmp_path, monkeypatch
):
    # A refit used to save its model beside the old fit's forecasts.npz: killed before its
    # own forecasts were written, a later run of the old settings reused the old forecasts
    # while `forecast` loaded the new model
    from experiments import run as run_mod

    out, csv = tmp_path / "r", synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    cache = out / "members" / "snaive" / "forecasts.npz"
    assert cache.is_file()
    write_npz = run_mod.write_npz

    def killed(path, **arrays):
        if path == cache:
            raise KeyboardInterrupt  # after member.save, before the forecasts
        return write_npz(path, **arrays)

    monkeypatch.setattr(run_mod, "write_npz", killed)
    assert main(synth_run_argv(csv, out, "--set", "snaive.period=12")) == 130
    assert (out / "members" / "snaive" / "model").exists() and not cache.exists()


def test_a_refit_stopped_before_it_saves_keeps_the_old_forecasts(synth_csv, tmp_path, monkeypatch):
    # the stale-forecast fix above must not throw away reusable work: a refit of other
    # settings that is stopped while fitting leaves the old fit's forecasts for a rerun
    from classical.naive import SeasonalNaive

    out, csv = tmp_path / "r", synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0

    def stopped(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(SeasonalNaive, "fit", stopped)
    assert main(synth_run_argv(csv, out, "--set", "snaive.period=12")) == 130
    monkeypatch.undo()
    assert main(synth_run_argv(csv, out)) == 0
    assert (out / "run.log").read_text(encoding="utf-8").count("snaive: reusing forecasts") == 1


def test_a_member_that_kept_its_first_epoch_is_flagged(caplog):
    # DLinear at L=96, seed 1: epoch 1 of 4 kept, test 0.442 against seed 0's 0.388
    import logging

    from experiments.run import warn_about_training

    def curve(*val):
        best = int(np.argmin(val))
        return {"epochs": len(val), "best_epoch": best + 1, "still_improving": False}

    with caplog.at_level(logging.WARNING):
        warn_about_training({"a": curve(0.66, 0.67, 0.68, 0.70), "b": curve(0.7, 0.6, 0.65)})
    assert "a: kept its first epoch; the 3 after it did worse" in caplog.text
    assert "b:" not in caplog.text


def test_a_member_above_the_naive_baseline_is_warned_of_and_marked(synth_csv, tmp_path, caplog):
    # Time-LLM after one epoch (ETTh1 L=96: val 0.94 vs seasonal naive's 0.51) went into
    # every table with "one epoch only" in results.md's training table as its only mark
    from experiments.report import below_baseline
    from experiments.scoring import seasonal_baseline

    csv, out = synth_csv(n=1400), tmp_path / "r"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24", "--quiet"]
    argv += ["--members", "naive,snaive,dlinear@epochs=1@lr=0.000001", "--router", "mean"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    base = res["baseline"]
    assert base["val_mse"] < res["val"]["dlinear@epochs=1@lr=0.000001"]["mse"]
    assert base["val_mse"] <= res["val"]["snaive"]["mse"] * (1 + 1e-6)  # the best naive one
    assert below_baseline(res) == ["dlinear@epochs=1@lr=0.000001"]  # never a naive one
    assert "dlinear@epochs=1@lr=0.000001: trained one epoch only" in caplog.text
    assert f"above {base['forecast']}'s" in caplog.text and "train it longer" in caplog.text
    assert "**Above it on validation: dlinear@epochs=1@lr=0.000001**" in (
        out / "results.md"
    ).read_text(encoding="utf-8")
    # the recorded baseline is the function's on the run's own validation windows
    from ensemble.data import load_dataset, make_splits

    splits = make_splits(load_dataset(data_path=csv), 96, 24)
    ch = splits.eval_channels
    name, mse = seasonal_baseline(
        splits.val.inputs(), splits.val.targets()[..., ch], res["periods"], ch
    )
    assert (name, mse) == (base["forecast"], pytest.approx(base["val_mse"], rel=1e-12))
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a trained member is not warned of
        assert main([*argv[:-4], "--members", "snaive,dlinear", "--out", str(tmp_path / "t")]) == 0
    assert "above" not in caplog.text


def test_giving_the_periods_a_run_detected_is_no_change(synth_csv, tmp_path, caplog):
    # `--config F --periods P` with P the periods F's run found itself was refused as
    # "differs from F (None)", and said to replace the run's settings
    csv, out = synth_csv(n=1400), tmp_path / "r"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24", "--quiet"]
    assert main([*argv, "--members", "naive,snaive", "--out", str(out)]) == 0
    found = json.loads((out / "results.json").read_text(encoding="utf-8"))["periods"]
    given = ",".join(map(str, found))
    with caplog.at_level(logging.WARNING):
        assert (
            main(["run", "--config", str(out / "config.yaml"), "--periods", given, "--quiet"]) == 0
        )
    assert "other settings" not in caplog.text
    other = ",".join(map(str, [found[0] * 2]))  # other periods still need --out
    assert main(["run", "--config", str(out / "config.yaml"), "--periods", other, "--quiet"]) == 2


def test_code_version_records_a_code_tree_that_docs_commits_leave_alone(tmp_path, monkeypatch):
    # a docs-only commit changed the commit, and with it analyse refitted the whole
    # router and summary said the seeds ran different code
    from experiments import run as run_module
    from experiments.run import code_version

    root = tmp_path / "clone"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "run.py").write_text("x = 1\n", encoding="utf-8")
    (root / "README.md").write_text("a\n", encoding="utf-8")

    def git(*args: str) -> None:
        who = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "-C", str(root), *who, *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "code")
    monkeypatch.setattr(run_module, "__file__", str(root / "experiments" / "run.py"))
    first = code_version()
    assert set(first) >= {"version", "commit", "modified", "tree"}  # none renamed
    assert first["modified"] is False and len(first["tree"]) == 64
    (root / "README.md").write_text("b\n", encoding="utf-8")
    git("commit", "-qam", "docs")
    docs = code_version()
    assert docs["commit"] != first["commit"] and docs["tree"] == first["tree"]
    (root / "experiments" / "run.py").write_text("x = 2\n", encoding="utf-8")
    assert code_version()["modified"] is True
    git("commit", "-qam", "code again")
    assert code_version()["tree"] != first["tree"]


def _cut_config(run: Path) -> None:  # as `head -c 100` cut one: ends in "pred_l"
    lines = (run / "config.yaml").read_text(encoding="utf-8").splitlines()
    (run / "config.yaml").write_text("\n".join([*lines[:3], "pred_l"]), encoding="utf-8")


def _no_config(run: Path) -> None:
    (run / "config.yaml").unlink()


def _cut_config_no_results(run: Path) -> None:  # a run killed before it finished
    _cut_config(run)
    for name in ("results.json", "results.md"):
        (run / name).unlink()


@pytest.mark.parametrize("damage", [_cut_config, _no_config, _cut_config_no_results])
def test_a_run_folder_whose_config_yaml_is_damaged_is_still_its_runs(
    damage, synth_csv, tmp_path, caplog
):
    # it was refused as "not a run folder ... choose an empty or new --out": following
    # that advice loses the member caches (hours of Time-LLM)
    csv, out = synth_csv(n=1400), tmp_path / "r"
    assert main(synth_run_argv(csv, out)) == 0
    good = (out / "config.yaml").read_text(encoding="utf-8")
    damage(out)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(synth_run_argv(csv, out)) == 0
    said = [r.getMessage() for r in caplog.records if "config.yaml" in r.getMessage()]
    what = "is missing" if damage is _no_config else "cannot be read (not valid YAML"
    assert said[0].startswith(f"{out}: its config.yaml {what}"), said
    assert said[0].endswith("a new config.yaml is written")
    assert reused_members(out) == 2  # the members' own keys decided: both reused
    assert (out / "config.yaml").read_text(encoding="utf-8") == good
    assert (out / "results.json").is_file()


def test_a_folder_of_ones_own_files_with_a_run_log_is_still_refused(synth_csv, tmp_path, capsys):
    # nothing in it that only a run writes: a results.json without the data's digest, no
    # member forecasts carrying a cache key
    mine = tmp_path / "mine"
    (mine / "members" / "naive").mkdir(parents=True)
    files = {
        "run.log": "my log\n",
        "config.yaml": "seq_len: [96\n",
        "results.json": json.dumps({"data": {"file": "x.csv"}}),
        "results.md": "my notes",
    }
    for name, text in files.items():
        (mine / name).write_text(text, encoding="utf-8")
    np.savez(mine / "members" / "naive" / "forecasts.npz", val=np.zeros(3))
    assert main(synth_run_argv(synth_csv(n=1400), mine)) == 2
    err = capsys.readouterr().err
    assert "but is not a run folder (its config.yaml is not a run's: not valid YAML" in err, err
    assert all((mine / n).read_text(encoding="utf-8") == t for n, t in files.items())


def test_a_members_config_json_that_cannot_be_read_is_warned_of(tmp_path, caplog):
    # its training curve was left out of results.json without a word
    from experiments.run import training_curves

    model = tmp_path / "members" / "dlinear" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("garbage", encoding="utf-8")
    (tmp_path / "members" / "naive" / "model").mkdir(parents=True)  # no epochs: no word
    with caplog.at_level(logging.WARNING):
        assert training_curves(tmp_path, ["dlinear", "naive"]) == {}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"dlinear: its saved model's {model}"), said
    assert "JSONDecodeError" in said[0] and "training curve is left out" in said[0]


def test_a_run_of_members_without_torch_does_not_import_it(synth_csv, tmp_path):
    # importing torch was 1.8 s of such a run's 6 (`import router`, the global seeding)
    argv = synth_run_argv(synth_csv(n=800), tmp_path / "r", "--router", "stacked")
    code = (
        "import sys; from experiments.cli import main; "
        f"assert main({argv!r}) == 0; print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr


def test_results_record_the_period_each_member_used_and_a_reuse_keeps_it(synth_csv, tmp_path):
    # periods [168, 24] were listed while snaive at L=96 silently used 24
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive,arima,dlinear@kernel=auto@epochs=1,lightgbm@rounds=2"]
    argv += ["--periods", "168,24", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    want = {
        "naive": None,
        "snaive": {"period": 24},
        "arima": {"season": 24},
        "dlinear@kernel=auto@epochs=1": {"kernel": 25},
        "lightgbm@rounds=2": {"periods": [24]},
    }
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["member_periods"] == want and res["periods"] == [168, 24]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert (
        "as it forecast: snaive period 24; arima season 24; dlinear@kernel=auto@epochs=1 "
        "moving-average kernel 25; lightgbm@rounds=2 periods 24; none: naive." in md
    )
    assert main(argv) == 0  # every member reused: the same record
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert all(f["reused"] for f in again["member_fits"].values())
    assert again["member_periods"] == want


def test_member_periods_of_the_members_that_pick_one():
    from experiments import registry
    from experiments.run import member_periods

    def built(spec, **params):
        ctx = registry.MemberContext(
            seq_len=96,
            pred_len=24,
            n_channels=2,
            freq="h",
            periods=[168, 24, 12],
            seed=0,
            dataset="ETTh1",
            params=params,
        )
        return member_periods(spec, registry.build(spec, ctx))

    assert built("patchtst@patch_len=period") == {"patch_len": 24}
    assert built("arima@fourier=24+168") == {"season": 24, "fourier": [24, 168]}
    assert built("lightgbm") == {"periods": [24, 12]}
    assert built("itransformer") is None and built("nlinear") is None
    # Time-LLM's prompt states the run's periods (the first five), its patches one
    assert built("timellm") == {"patch_len": 16, "prompt_periods": [168, 24, 12]}
    assert built("timellm@prompt=none") == {"patch_len": 16}


def _run_with_code(monkeypatch, argv, answers, installed=None):
    """``main(argv)`` where ``code_version`` answers ``answers`` in turn (the last again
    and again) and, given ``installed``, the libraries are those at the run's end."""
    import experiments.run as run_module

    asked = iter(answers[:-1])
    monkeypatch.setattr(run_module, "code_version", lambda: next(asked, answers[-1]))
    if installed is not None:
        monkeypatch.setattr(run_module, "installed_versions", lambda: installed)
    caches = [getattr(run_module, f, None) for f in ("run_code", "code_label", "code_tree")]

    def clear():
        for f in caches:
            getattr(f, "cache_clear", lambda: None)()

    clear()  # this process's code asked again, of the patched git
    try:
        return main(argv)
    finally:
        clear()  # the next test asks git again


_START = {"version": "0.1.0", "commit": "1011b0a" + "0" * 33, "modified": False, "tree": "t0"}
_LATER = {"version": "0.1.0", "commit": "1666a0c" + "0" * 33, "modified": True, "tree": "t1"}


def test_a_commit_made_while_a_run_ran_is_not_recorded_as_its_code(
    synth_csv, tmp_path, monkeypatch, caplog
):
    # a run started on 1011b0a recorded 1666a0c, modified: the commit made while it ran
    out = tmp_path / "r"
    with caplog.at_level(logging.WARNING):
        # the first question is the run's start; every later one is asked after it
        assert (
            _run_with_code(monkeypatch, synth_run_argv(synth_csv(n=1400), out), [_START, _LATER])
            == 0
        )
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["environment"]["code"] == _START and res["environment"]["code_at_end"] == _LATER
    # the members' record is the same start, not whatever git said when each was saved
    assert {(f["code"], f["tree"]) for f in res["member_fits"].values()} == {("1011b0a00000", "t0")}
    said = [r.getMessage() for r in caplog.records]
    assert any(
        "the code changed while this run ran (it started on 1011b0a00000; the checkout is "
        "1666a0c00000, modified now)" in m
        for m in said
    ), said


def test_libraries_installed_while_a_run_ran_are_said_and_the_starts_recorded(
    synth_csv, tmp_path, monkeypatch, caplog
):
    import experiments.run as run_module

    packages = dict(run_module.package_versions())  # this process's, as the run starts
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out)
    with caplog.at_level(logging.WARNING):
        assert _run_with_code(monkeypatch, argv, [_START], {**packages, "lightgbm": "9.9"}) == 0
    env = json.loads((out / "results.json").read_text(encoding="utf-8"))["environment"]
    assert env["packages"] == packages and env["packages_at_end"]["lightgbm"] == "9.9"
    assert "code_at_end" not in env  # the same code throughout: nothing said of it
    said = [r.getMessage() for r in caplog.records]
    assert any("installed libraries changed while this run ran (lightgbm " in m for m in said)
    assert not any("the code changed" in m for m in said)


def test_snaive_takes_a_period_as_long_as_the_lookback(synth_csv, tmp_path):
    # a period equal to L fits the window exactly once: snaive repeats the whole window
    # (it was taken for one that does not fit, and snaive became the naive forecast)
    from experiments.registry import MemberContext, build

    ctx = MemberContext(24, 24, 3, None, [24, 12], 0, "synth")
    assert build("snaive", ctx).period == 24
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400, period=24), out, "--periods", "24")
    argv[argv.index("--seq-len") + 1] = "24"
    assert main(argv) == 0
    assert "falls back" not in (out / "run.log").read_text(encoding="utf-8")  # to period 1
    with np.load(out / "forecasts.npz") as z:
        naive, snaive = z["test/naive"], z["test/snaive"]
    test = json.loads((out / "results.json").read_text(encoding="utf-8"))["test"]
    assert not np.array_equal(naive, snaive) and test["snaive"]["mse"] < test["naive"]["mse"]


def test_code_version_hashes_the_uncommitted_edits_of_the_code_paths(tmp_path, monkeypatch):
    # two seeds with other edits at one commit were "commit X, modified" both: one code
    from experiments import run as run_module
    from experiments.run import code_version

    root = tmp_path / "clone"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "run.py").write_text("x = 1\n", encoding="utf-8")
    (root / "README.md").write_text("a\n", encoding="utf-8")
    who = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "code"]):
        subprocess.run(["git", "-C", str(root), *who, *args], check=True, capture_output=True)
    monkeypatch.setattr(run_module, "__file__", str(root / "experiments" / "run.py"))
    assert code_version()["diff"] == ""  # nothing edited
    (root / "README.md").write_text("b\n", encoding="utf-8")  # no code path
    (root / "notes.py").write_text("y = 1\n", encoding="utf-8")
    assert code_version()["diff"] == ""
    (root / "experiments" / "run.py").write_text("x = 2\n", encoding="utf-8")
    first = code_version()
    assert first["modified"] is True and re.fullmatch(r"[0-9a-f]{12}", first["diff"])
    assert code_version()["diff"] == first["diff"]  # the same edits: the same hash
    # ... whatever the user's git settings (abbreviated hashes, no a/ b/ prefixes)
    settings = {"core.abbrev": "12", "diff.noprefix": "true", "diff.mnemonicPrefix": "true"}
    monkeypatch.setenv("GIT_CONFIG_COUNT", str(len(settings)))
    for i, (k, v) in enumerate(settings.items()):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", k)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", v)
    assert code_version()["diff"] == first["diff"]
    monkeypatch.delenv("GIT_CONFIG_COUNT")
    (root / "experiments" / "run.py").write_text("x = 3\n", encoding="utf-8")
    assert code_version()["diff"] not in (first["diff"], "")
    (root / "experiments" / "run.py").write_text("x = 2\n", encoding="utf-8")
    (root / "experiments" / "extra.py").write_text("z = 1\n", encoding="utf-8")  # untracked
    with_new = code_version()["diff"]
    assert with_new not in (first["diff"], "")
    (root / "experiments" / "extra.py").write_bytes(b"z = 1\r\n")  # Windows' line ends
    assert code_version()["diff"] == with_new
    # no git clone (an installed wheel): unknown, not "no edits"
    monkeypatch.setattr(run_module, "__file__", str(tmp_path / "site" / "experiments" / "run.py"))
    assert code_version()["diff"] is None


def test_a_run_started_on_edits_and_edited_further_says_the_code_changed(
    synth_csv, tmp_path, monkeypatch, caplog
):
    from experiments.run import code_changed

    edited = {**_START, "modified": True, "diff": "aaaa11112222"}
    further = {**edited, "diff": "bbbb33334444"}
    assert code_changed(edited, further) and not code_changed(edited, dict(edited))
    # a record from before the hash (or no git): unknown, no alarm
    assert not code_changed({**_START, "modified": True}, further)
    assert not code_changed(edited, {**further, "diff": None})
    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out)
    with caplog.at_level(logging.WARNING):
        assert _run_with_code(monkeypatch, argv, [edited, further]) == 0
    env = json.loads((out / "results.json").read_text(encoding="utf-8"))["environment"]
    assert env["code"] == edited and env["code_at_end"] == further
    said = [r.getMessage() for r in caplog.records]
    assert any(
        "it started on 1011b0a00000, modified (edits aaaa1111); the checkout is "
        "1011b0a00000, modified (edits bbbb3333) now" in m
        for m in said
    ), said
