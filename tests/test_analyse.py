"""The routing report on a small fake run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_run_folder

from ensemble.errors import UserError
from experiments.analyse import analyse, load_run, val_vs_test, window_features


def test_report_from_a_fake_run_folder(synth_csv, tmp_path, monkeypatch):
    members = ["naive", "snaive", "timellm"]
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", members=members)
    # its ensemble is the mean under an inverse_error label: as a run of this code, not
    # one whose router is refitted for the ablations
    monkeypatch.setattr("experiments.analyse_ablations.same_code", lambda res: True)
    # one training ablation already run, found by the sibling naming convention
    sib = tmp_path / "run-patch16"
    sib.mkdir()
    same = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    same = {k: same[k] for k in ("dataset", "seq_len", "pred_len", "seed")}
    test = {"timellm": {"mse": 0.4, "mae": 0.5}, "ensemble": {"mse": 0.3, "mae": 0.4}}
    (sib / "results.json").write_text(json.dumps({**same, "test": test}), encoding="utf-8")
    path = analyse(run_dir)
    md = path.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    assert len(pngs) >= 3, pngs
    assert {"weights_distribution.png", "weights_vs_features.png", "win_rates.png"} <= set(pngs)
    for section in (
        "Weight distribution",
        "Weights against window features",
        "Win rates per regime",
        "Where the router beats or loses to the mean",
        "Member disagreement as a warning sign",
        "Ablations",
    ):
        assert section in md
    assert "## Weights along the horizon" in md
    assert "| 1 | 1.000 | 0.000 | 0.000 |" in md and "| 24 | 0.000 | 1.000 | 0.000 |" in md
    # the weight tables say they are averages over the steps (a folder without the flag:
    # known from its step weights)
    assert "each window's average over the horizon's steps" in md
    for m in members:
        assert f"without {m}" in md
    assert "refitted on the other members' validation forecasts" in md  # inverse_error refit
    assert "sibling run" in md and "0.4000" in md  # patch16 read from run-patch16
    assert "## Does the router weight a member where it does better?" in md
    # its timellm weight moves by at most 0.034 between regimes: not named a preference
    assert "mean weight on timellm differs by under 0.05 between the regimes" in md
    assert "hybrid-forecast run --config" in md and "timellm.prompt=none" in md  # not run yet
    # the run injects nothing: the injection ablation adds injection instead of removing it
    assert "timellm.inject=ridge" in md and "timellm.inject=none" not in md
    an = json.loads((run_dir / "routing_analysis.json").read_text(encoding="utf-8"))
    assert abs(sum(an["win_rate"].values()) - 1) < 1e-9
    assert set(an["regimes"]) >= {"seasonal_strength", "volatility"}
    assert "## Error correlation between members" in md
    # per channel: the mean weights of router_weights.npz and each member's own test MSE
    assert "## Weights per channel" in md
    with np.load(run_dir / "router_weights.npz") as z:
        np.testing.assert_allclose(an["channel_weights"], z["test"].mean(axis=0), rtol=1e-6)
    assert [int(np.argmin(e)) for e in an["channel_mse"]] == [0, 0, 0]  # naive: least noise
    assert md.count(" | **") == 3  # one lowest MSE in bold per channel row
    # the ensemble here is the mean: their test difference is exactly nothing
    assert an["router_vs_mean"]["dm"]["p"] == 1.0
    abl = {r["variant"]: r for r in an["ablation"]}
    assert abl["mean of all members"]["p_vs_full"] == 1.0
    assert abl["without naive"]["p_vs_full"] < 0.01  # dropping the best member is clearly worse
    corr = np.array(an["error_corr"])  # independent noise per member: near 0 off the diagonal
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert np.abs(corr[~np.eye(3, dtype=bool)]).max() < 0.05


def test_the_members_forecasts_are_kept_as_written(synth_csv, tmp_path):
    # float64 copies of every member's forecasts doubled analyse's memory on wide data
    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    assert {a.dtype for a in (*run.test.values(), *run.val.values())} == {np.dtype(np.float32)}


def test_error_correlation_sees_shared_errors(synth_csv, tmp_path):
    from experiments.analyse import error_correlation

    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    run.test["snaive"] = run.true + 2.0 * (run.test["naive"] - run.true)  # same errors, scaled
    corr = np.array(error_correlation(run, max_values=10_000))
    assert corr[0, 1] > 0.999 and abs(corr[0, 2]) < 0.1


def test_disagreement_ranks_the_windows_whose_forecasts_go_wrong(synth_csv, tmp_path):
    from experiments.analyse import disagreement, per_window_mse

    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    rng = np.random.default_rng(1)
    W = run.true.shape[0]
    scale = np.linspace(0.05, 2.0, W)[rng.permutation(W), None, None]  # hard and easy windows
    for m in run.members:
        run.test[m] = run.true + scale * rng.standard_normal(run.true.shape)
    run.ensemble = np.mean([run.test[m] for m in run.members], axis=0)

    def dis():
        err = np.stack([per_window_mse(run.test[m], run.true) for m in run.members])
        ens = per_window_mse(run.ensemble, run.true)
        return disagreement(run, ens, ens, err)

    d = dis()
    assert d["spearman"] > 0.8
    mse = [b["ensemble_mse"] for b in d["bins"]]
    assert len(mse) == 5 and mse == sorted(mse) and mse[-1] > 10 * mse[0]
    assert sum(b["share"] for b in d["bins"]) == pytest.approx(1.0)
    spread = [b["spread"] for b in d["bins"]]
    assert spread == sorted(spread)
    # identical members never disagree: no bins, no correlation
    for m in run.members:
        run.test[m] = run.test[run.members[0]]
    d = dis()
    assert (
        d["spearman"] is None
        and d["bins"] == []
        and len(d["channels_left_out"]) == run.true.shape[2]
    )
    # one channel where they agree throughout: left out, the others binned evenly
    run.test = {m: run.true + scale * rng.standard_normal(run.true.shape) for m in run.members}
    for m in run.members:
        run.test[m][..., 0] = run.test[run.members[0]][..., 0]
    d = dis()
    assert d["channels_left_out"] == [0]
    assert [round(b["share"], 2) for b in d["bins"]] == [0.2] * 5


def test_the_report_names_a_channel_the_members_agree_on(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    (run_dir / "results.json").write_text(
        json.dumps({**res, "channels": ["x0", "x1", "OT"]}), encoding="utf-8"
    )
    with np.load(run_dir / "forecasts.npz") as z:
        arrays = dict(z)
    for m in ("snaive", "window_mean"):  # every member alike on channel x1
        arrays[f"test/{m}"][..., 1] = arrays["test/naive"][..., 1]
    np.savez(run_dir / "forecasts.npz", **arrays)
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert "Left out: x1, where the members' spread never varies." in md


def test_per_step_weights_that_were_not_saved_are_said_to_be_averaged(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="stacked_tilted")
    with np.load(run_dir / "router_weights.npz") as z:
        kept = {k: z[k] for k in z.files if k != "step_weights"}
    np.savez(run_dir / "router_weights.npz", **kept, horizon_averaged=np.array(True))
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert "each window's average over the horizon's steps" in md
    assert "this run folder holds only each window's average over the horizon" in md
    np.savez(run_dir / "router_weights.npz", **kept, horizon_averaged=np.array(False))
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert "average over the horizon's steps" not in md and "holds only" not in md


def test_a_tilted_router_reports_its_stacked_step_profile_and_tilt_share(synth_csv, tmp_path):
    # its parts are saved in router_weights.npz, yet the report said they were not
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="stacked_tilted")
    with np.load(run_dir / "router_weights.npz") as z:
        kept = {k: z[k] for k in z.files if k != "step_weights"}
    w, c, m = kept["test"].shape
    ramp = np.linspace(0.0, 1.0, 24)[:, None, None] * np.ones((1, c, 1))  # [H, C, 1]
    stacked = np.concatenate([1 - ramp, ramp, 0 * ramp], axis=2)  # naive -> snaive along H
    stacked[:, 0] = [0.0, 0.0, 1.0]  # another profile on channel 0: the table is the mean
    share = np.full((w, c), 0.25)
    share[0, 0] = 0.0
    parts = dict(
        stacked_step_channel_weights=stacked.astype(np.float32),
        tilt_test=kept["test"],
        tilt_share_test=share.astype(np.float32),
    )
    np.savez(run_dir / "router_weights.npz", **kept, **parts, horizon_averaged=np.array(True))
    md = analyse(run_dir).read_text(encoding="utf-8")
    text = md.split("## Weights along the horizon\n", 1)[1].split("\n## ", 1)[0]
    assert "not saved" not in text and "holds only" not in text
    assert "`(1 - s[w, c]) * S[h, c] + s[w, c] * t[w, c]`" in text
    mean = share.astype(np.float32).mean()
    assert f"the tilt's share s is {mean:.3f} on average (0.000 to 0.250" in text
    # channel mean of S at the first and last step: 2 of 3 channels ramp, 1 is all window_mean
    assert "| 1 | 0.667 | 0.000 | 0.333 |" in text and "| 24 | 0.000 | 0.667 | 0.333 |" in text
    assert "`stacked_step_channel_weights`" in text and "`tilt_share_test`" in text
    # parts of another shape: the file is damaged, in one line
    _edit_npz(run_dir / "router_weights.npz", tilt_share_test=np.zeros((3, c)))
    with pytest.raises(UserError, match="router_weights.npz is damaged .*tilt_share_test"):
        load_run(run_dir)


def test_a_per_channel_rule_prefers_no_regime_whatever_its_channels_mix(synth_csv, tmp_path):
    # channel 0 is mostly "≈24" and weighs member 0 heavily; the others are mostly
    # "other" with even weights: pooled over the pairs, member 0 looked preferred at ≈24
    from experiments.analyse import analyse_run

    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="stacked"))
    W, _, C = run.true.shape
    M = len(run.members)
    w = np.full((W, C, M), 1.0 / M)
    w[:, 0] = [0.8] + [0.2 / (M - 1)] * (M - 1)
    run.weights = w
    rng = np.random.default_rng(0)
    mostly = lambda share: np.where(rng.random(W) < share, 24.0, 100.0)  # noqa: E731
    period = np.stack([mostly(0.9)] + [mostly(0.2) for _ in range(C - 1)], axis=1)
    an = analyse_run(run, {"dominant_period": period}, None)
    regs = an["regimes"]["dominant_period"]
    first = run.members[0]
    assert abs(regs["≈24"]["mean_weight"][first] - regs["other"]["mean_weight"][first]) < 1e-12
    # a rule whose weight does follow the regime within each channel still shows it
    run.weights = np.where((period == 24.0)[..., None], [0.7, 0.2, 0.1][:M], 1.0 / M)
    regs = analyse_run(run, {"dominant_period": period}, None)["regimes"]["dominant_period"]
    gap = regs["≈24"]["mean_weight"][first] - regs["other"]["mean_weight"][first]
    assert gap == pytest.approx(0.7 - 1.0 / M, abs=1e-9)
    # windows without a value ("n/a") have no weight to compare: their row keeps the
    # table's columns
    from experiments.analyse_report import _regimes_section

    vol = rng.random((W, C))
    vol[:5] = np.nan
    an = analyse_run(run, {"volatility": vol}, None)
    assert an["regimes"]["volatility"]["n/a"]["mean_weight"] is None
    table = [ln for ln in _regimes_section(run, an) if ln.startswith("|")]
    assert len({ln.count("|") for ln in table}) == 1, table


def test_a_tie_for_the_lowest_error_is_a_win_shared_by_the_tied_members():
    from experiments.analyse import win_shares

    err = np.array([[[1.0, 2.0]], [[1.0, 3.0]], [[2.0, 1.0]]])  # [M=3, W=1, C=2]
    np.testing.assert_array_equal(win_shares(err)[:, 0], [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])


def test_report_without_data_still_writes(synth_csv, tmp_path, caplog):
    csv = synth_csv(n=1200)
    run_dir = fake_run_folder(csv, tmp_path / "run", router="mean")
    moved = csv.rename(tmp_path / "moved.csv")  # features are skipped, the rest is reported
    md = analyse(run_dir, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "could not be reloaded" in md and "without naive" in md
    assert len(list((tmp_path / "report").glob("*.png"))) >= 3
    assert "give the run's data file with --run-data FILE" in caplog.text
    # the run's file where it is now (a run folder moved to another machine)
    md = analyse(run_dir, out=tmp_path / "again", run_data=moved).read_text(encoding="utf-8")
    assert "could not be reloaded" not in md and "Features computed" in md
    with pytest.raises(UserError, match="--run-data .*nope.csv"):  # named, so not skipped
        analyse(run_dir, out=tmp_path / "third", run_data=tmp_path / "nope.csv")


def test_data_changed_since_the_run_is_not_used(synth_csv, tmp_path):
    # Same length and dates, other values (a re-exported file): features and router
    # refits from it would describe other numbers than the saved forecasts.
    import pandas as pd

    csv = synth_csv(n=1200)
    run_dir = fake_run_folder(csv, tmp_path / "run", router="mean")
    df = pd.read_csv(csv)
    df.iloc[-300:, 1:] *= -3.0  # test rows only
    df.to_csv(csv, index=False)
    md = analyse(run_dir, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "could not be reloaded" in md and "without naive" in md  # its checksum differs
    # named with --run-data: refused, not skipped
    with pytest.raises(UserError, match=r"--run-data .*not the file the run was fitted on"):
        analyse(run_dir, out=tmp_path / "named", run_data=csv)
    # a run folder from before results.json held the checksum: its test windows compared
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    del res["data"]
    (run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    md = analyse(run_dir, out=tmp_path / "old").read_text(encoding="utf-8")
    assert "do not match the run's test windows" in md and "without naive" in md


def test_an_edited_run_data_file_is_refused_where_only_validation_rows_changed(synth_csv, tmp_path):
    # validation targets pass the test-window comparison, but the router refits and the
    # ablations would learn from other numbers than the run's
    import pandas as pd

    csv = synth_csv(n=1200)
    run_dir = fake_run_folder(csv, tmp_path / "run", router="mean")
    edited = tmp_path / "edited.csv"
    df = pd.read_csv(csv)
    df.iloc[900:950, 1:] *= 3.0  # validation rows
    df.to_csv(edited, index=False)
    with pytest.raises(UserError, match="SHA-256 differs"):
        analyse(run_dir, out=tmp_path / "r", run_data=edited)
    with pytest.raises(UserError, match=r"--run-data .*nope.csv is not found; check the path"):
        analyse(run_dir, out=tmp_path / "r", run_data=Path("/nope.csv"))


def test_run_data_of_another_dataset_or_a_folder_is_said_in_analyse_s_words(synth_csv, tmp_path):
    # load_dataset's message named `run`'s --dataset and --data-path; a folder was "not found"
    import shutil

    csv = synth_csv(n=1200)
    run_dir = fake_run_folder(csv, tmp_path / "run", router="mean")
    other = shutil.copy(csv, tmp_path / "ETTh2.csv")  # a registered dataset's file name
    with pytest.raises(UserError) as exc:
        analyse(run_dir, out=tmp_path / "r", run_data=other)
    assert str(exc.value) == (
        f"--run-data {other} is ETTh2's file, but the run was fitted on synth: give the "
        "run's own file"
    )
    with pytest.raises(UserError) as exc:
        analyse(run_dir, out=tmp_path / "r", run_data=csv.parent)
    assert str(exc.value) == (
        f"--run-data {csv.parent} is a folder; give the run's CSV file, e.g. --run-data {csv}"
    )
    assert not (tmp_path / "r").exists()


def test_a_refused_analyse_makes_no_out_folder_and_checks_it_first(
    synth_csv, tmp_path, monkeypatch, capsys
):
    # the empty --out stayed behind; an unwritable one failed after the whole analysis
    import tempfile

    from experiments import analyse as analyse_module
    from experiments.cli import main

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="mean")
    out = tmp_path / "new" / "report"
    with pytest.raises(UserError, match="nope.csv is not found"):
        analyse(run_dir, out=out, run_data=tmp_path / "nope.csv")
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    assert main(["analyse", str(run_dir), "--out", str(tmp_path / "afile" / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'afile'} is a file, not a folder" in err[0], err

    def refused(*a, **kw):  # a read-only folder (root ignores chmod, so simulated)
        raise PermissionError(13, "Permission denied")

    def no_analysis(*a, **kw):
        raise AssertionError("analysed before the --out check")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    monkeypatch.setattr(analyse_module, "analyse_run", no_analysis)
    with pytest.raises(UserError, match=rf"cannot create files in {tmp_path} \(Permission"):
        analyse(run_dir, out=out)


def test_backbone_without_a_check_that_reads_it_is_refused(synth_csv, tmp_path, capsys):
    # `analyse RUN --backbone DIR` alone ignored DIR without a word
    from experiments.cli import main

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="mean")
    argv = ["analyse", str(run_dir), "--backbone", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backbone is read by --prompt-probe and --prototypes" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_file_is_said_to_be_no_run_folder(tmp_path, capsys):
    # it was told to `run --out afile` first, which cannot write into a file either
    from experiments.cli import main

    (tmp_path / "afile").write_text("x", encoding="utf-8")
    assert main(["analyse", str(tmp_path / "afile"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {tmp_path / 'afile'} is a file, not a run folder; give the folder "
        "`hybrid-forecast run` wrote"
    ]


def test_not_a_run_folder_is_a_user_error(tmp_path):
    from ensemble.errors import UserError

    with pytest.raises(UserError, match="results.json"):
        load_run(tmp_path)


def test_a_folder_that_is_no_run_is_left_as_it_was(tmp_path, capsys):
    # exit 2, but the locks it took left .lock and .analyse.lock in the user's folder
    from experiments.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("x", encoding="utf-8")
    assert main(["analyse", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a finished run folder (no results.json)" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]


def test_an_unfinished_run_is_told_the_command_that_resumes_it(synth_csv, tmp_path, capsys):
    # `run --out DIR` would have rerun it with the default settings over its own
    from experiments.cli import main

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="median")
    (run_dir / "results.json").unlink()  # interrupted before its results
    assert main(["analyse", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unfinished run" in err[0]
    cfg = run_dir / "config.yaml"
    assert f"`hybrid-forecast run --config {cfg} --out {run_dir}`" in err[0]
    assert not (run_dir / ".analyse.lock").exists()  # no report was written: no lock of one


def test_without_config_the_warning_names_analyses_own_flag(synth_csv, tmp_path, caplog):
    # it named `run`'s --dataset and --data-path, which analyse does not take
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="mean")
    (run_dir / "config.yaml").unlink()
    md = analyse(run_dir, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "could not be reloaded" in md
    assert f"no {run_dir / 'config.yaml'}" in caplog.text and "--run-data FILE" in caplog.text
    assert "--data-path" not in caplog.text and "--dataset" not in caplog.text


def test_window_features_on_known_shapes():
    t = np.arange(192, dtype=np.float64)
    seasonal = np.sin(2 * np.pi * t / 24)
    trend = 0.05 * t
    rng = np.random.default_rng(0)
    x = np.stack(
        [seasonal, trend + 0.01 * rng.standard_normal(192), rng.standard_normal(192)], axis=-1
    )[None]
    f = window_features(x, period=24)
    assert f["seasonal_strength"][0, 0] > 0.95 and f["dominant_period"][0, 0] == pytest.approx(24)
    assert f["trend_strength"][0, 1] > 0.95
    assert f["seasonal_strength"][0, 2] < 0.5
    assert f["volatility"][0, 2] > f["volatility"][0, 0]


def test_window_features_steps_are_sized_by_lookback_and_channels():
    # 512 windows a step whatever L x C took 14 GB at 862 channels; the values are per window
    x = np.lib.stride_tricks.sliding_window_view(
        np.random.default_rng(1).standard_normal((300, 5)), 96, axis=0
    ).transpose(0, 2, 1)  # [205, 96, 5], a strided view as the run's splits give
    whole = window_features(x, period=24, threads=1)
    steps = window_features(x, period=24, max_elements=96 * 5 * 7, threads=1)  # 7 windows a step
    threaded = window_features(x, period=24, max_elements=96 * 5 * 7, threads=3)  # 30 steps
    for k, v in whole.items():
        np.testing.assert_array_equal(steps[k], v)
        assert threaded[k].tobytes() == steps[k].tobytes(), k


def test_window_features_of_a_constant_window():
    x = np.stack([np.full(192, 0.7), np.zeros(192)], axis=-1)[None]  # [1, 192, 2]
    f = window_features(x, period=24)
    assert (f["seasonal_strength"] == 0).all() and (f["trend_strength"] == 0).all()
    assert np.isnan(f["dominant_period"]).all() and (f["volatility"] == 0).all()


def test_val_vs_test_ratios_and_ranks_against_the_best_on_validation():
    res = {
        "val": {"a": {"mse": 0.5}, "b": {"mse": 0.4}, "c": {"mse": 0.8}},
        "test": {"a": {"mse": 0.6}, "b": {"mse": 0.66}, "c": {"mse": 0.55}},
    }
    w = np.broadcast_to(np.array([0.2, 0.7, 0.1]), (5, 2, 3))
    rows = {r["member"]: r for r in val_vs_test(res, ["a", "b", "c"], w)}
    assert [m for m, r in rows.items() if r["reference"]] == ["b"]  # lowest on validation
    assert rows["c"]["val_ratio"] == pytest.approx(2.0)
    assert rows["c"]["test_ratio"] == pytest.approx(0.55 / 0.66)
    assert [rows[m]["val_rank"] for m in "abc"] == [2, 1, 3]
    assert [rows[m]["test_rank"] for m in "abc"] == [2, 3, 1]
    assert rows["b"]["mean_weight"] == pytest.approx(0.7)
    assert val_vs_test({"val": {}, "test": res["test"]}, ["a", "b", "c"], None) == []


def test_report_says_where_validation_and_test_rank_the_members_differently(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    res["test"]["naive"]["mse"] = 10.0  # best on validation, worst on test
    (run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    text = analyse(run_dir).read_text(encoding="utf-8")
    section = text.split("## Validation against test")[1].split("\n## ")[0]
    assert "relative to naive's" in section
    assert "differently (naive, snaive, window_mean moved)" in section


def test_prompt_probe_needs_a_saved_timellm_and_writes_nothing_without_one(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    with pytest.raises(UserError, match="--prompt-probe needs"):
        analyse(run_dir, prompt_probe=True)
    assert not (run_dir / "routing_report.md").exists()


@pytest.mark.parametrize(
    "damage", ["results.json", "forecasts.npz", "router_weights.npz", "config.yaml"]
)
def test_damaged_run_files_are_a_user_error(damage, synth_csv, tmp_path):
    from ensemble.errors import UserError

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    path = run_dir / damage
    if damage == "config.yaml":
        path.write_text("members: [dlinear\n", encoding="utf-8")
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut short
    with pytest.raises(UserError, match=f"{damage} is damaged.*rerun the run"):
        load_run(run_dir)


def test_router_weights_of_other_members_are_a_damaged_file(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    z = dict(np.load(run_dir / "router_weights.npz"))
    np.savez(run_dir / "router_weights.npz", **{**z, "members": np.array(["a", "b", "c"])})
    with pytest.raises(UserError, match="router_weights.npz is damaged"):
        load_run(run_dir)


def test_a_run_folder_being_rerun_is_not_written_into(synth_csv, tmp_path):
    from ensemble.io import FolderLock

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    lock = FolderLock(run_dir)  # a rerun holds it
    try:
        with pytest.raises(UserError, match="a run is writing to"):
            analyse(run_dir)
        assert not (run_dir / "routing_report.md").exists()
        with pytest.raises(UserError, match="a run is writing to"):  # it reads the run too
            analyse(run_dir, out=tmp_path / "elsewhere")
    finally:
        lock.release()
    reader = FolderLock(run_dir, shared=True)  # a forecast, another analyse: shared
    try:
        assert analyse(run_dir).is_file()
    finally:
        reader.release()
    writing = FolderLock(run_dir, name=".analyse.lock")  # another analyse writing its report
    try:
        with pytest.raises(UserError, match="another analyse is writing its report into"):
            analyse(run_dir)
        assert analyse(run_dir, out=tmp_path / "mine").is_file()  # its own folder: fine
    finally:
        writing.release()
    with pytest.raises(UserError, match="not a finished run folder"):
        analyse(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_analyse_reads_the_run_under_its_lock(synth_csv, tmp_path, monkeypatch):
    # taken before the run is read: a rerun finishing between the read and the lock
    # left a report of the old router beside the new results
    import experiments.analyse as analyse_mod
    from ensemble.io import held

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    real = analyse_mod.load_run

    def load_run(path):
        assert held(run_dir)  # a rerun would be refused here
        return real(path)

    monkeypatch.setattr(analyse_mod, "load_run", load_run)
    assert analyse(run_dir).is_file()


def test_prototypes_need_a_saved_timellm_and_write_nothing_without_one(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    with pytest.raises(UserError, match="--prototypes needs a Time-LLM member"):
        analyse(run_dir, out=tmp_path / "report", prototypes=True)
    assert not (tmp_path / "report").exists()


def test_a_run_without_a_period_says_so_in_the_report(tmp_path):
    import pandas as pd

    from experiments.cli import main

    rng = np.random.default_rng(0)
    csv = tmp_path / "noise.csv"
    dates = pd.date_range("2020-01-01", periods=600, freq="h").astype(str)
    pd.DataFrame({"date": dates, "a": rng.normal(size=600)}).to_csv(csv, index=False)
    out = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "32", "--pred-len", "8"]
    assert main([*argv, "--members", "naive,window_mean", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["periods"] == []
    text = analyse(out).read_text(encoding="utf-8")
    assert "period None" not in text and "no seasonal or trend strength" in text


def test_spearman_gives_ties_their_average_rank():
    from scipy.stats import spearmanr

    from experiments.analyse import _spearman

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 300).astype(float)  # heavy ties, as dominant periods have
    b = a + rng.integers(0, 3, 300)
    order = rng.permutation(300)
    assert _spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert _spearman(a[order], b[order]) == pytest.approx(_spearman(a, b), abs=1e-12)


def test_weights_fixed_per_channel_show_no_response_to_features():
    # one weight per channel, features higher on the channel with the higher weight:
    # pooled over channels that looked like a perfect response to the feature
    from experiments.analyse import _within_channel_spearman

    rng = np.random.default_rng(0)
    feature = rng.random((200, 2)) + np.array([0.0, 5.0])
    weight = np.broadcast_to(np.array([0.2, 0.8]), (200, 2))
    assert _within_channel_spearman(feature, weight) is None
    moving = weight + 0.01 * feature  # weights that do follow the feature within channels
    assert _within_channel_spearman(feature, moving) == pytest.approx(1.0)


def test_report_says_when_weights_only_differ_between_channels(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    note = "not from window to window"
    assert note not in analyse(run_dir).read_text(
        encoding="utf-8"
    )  # the fake router's weights vary
    with np.load(run_dir / "router_weights.npz") as z:
        saved = dict(z)
    saved["test"] = np.broadcast_to(saved["test"][:1], saved["test"].shape).copy()
    np.savez(run_dir / "router_weights.npz", **saved)
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert note in md
    an = json.loads((run_dir / "routing_analysis.json").read_text(encoding="utf-8"))
    assert not an["weights_vary_by_window"]
    assert all(v is None for row in an["weight_feature_corr"].values() for v in row.values())


def test_regimes_are_terciles_within_each_channel():
    # channel 0's values all lie below channel 1's: pooled terciles made channel 0 "low"
    # and channel 1 "high", so a per-channel router seemed to respond to the feature
    from experiments.analyse import regimes

    v = np.stack([np.arange(30.0), 100 + np.arange(30.0)], axis=1)  # [W=30, C=2]
    lab = regimes({"volatility": v}, [])["volatility"]
    for c in range(2):
        assert [int(np.sum(lab[:, c] == r)) for r in ("low", "mid", "high")] == [10, 10, 10]


def test_figure_deciles_are_within_each_channel():
    from experiments.analyse_report import within_channel_deciles

    v = np.stack([np.arange(50.0), 1000 - np.arange(50.0)], axis=1)
    v[3, 0] = np.nan
    d = within_channel_deciles(v)
    assert d[3, 0] == -1 and d[0, 1] == 9 and d[49, 1] == 0
    for c in range(2):
        assert sorted(set(d[:, c][d[:, c] >= 0].tolist())) == list(range(10))
    dry = np.zeros((50, 1))  # a rain channel: mostly dry windows share one decile
    dry[40:, 0] = np.arange(1.0, 11.0)
    d = within_channel_deciles(dry)[:, 0]
    assert len(set(d[:40].tolist())) == 1 and d[49] == 9


def test_the_mean_router_is_neither_better_nor_worse_than_the_mean(synth_csv, tmp_path):
    # with equal weights the ensemble is the mean up to float32 storage: every pair used
    # to count as better or worse by rounding, and the first member was "on top" everywhere
    out = tmp_path / "run"
    from experiments.cli import main

    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive,window_mean", "--router", "mean", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    an = json.loads((analyse(out).parent / "routing_analysis.json").read_text(encoding="utf-8"))
    rv = an["router_vs_mean"]
    assert rv["router_better_share"] == 0.0 and rv["router_worse_share"] == 0.0
    assert [round(s["top_share"], 6) for s in an["weights"].values()] == [0.333333] * 3


def test_non_finite_forecasts_are_one_line(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    z = dict(np.load(run_dir / "forecasts.npz"))
    z["test/snaive"][0, 0, 0] = np.nan
    np.savez(run_dir / "forecasts.npz", **z)
    with pytest.raises(UserError, match="test/snaive has 1 non-finite"):
        load_run(run_dir)


def test_out_into_another_runs_folder_is_refused(synth_csv, tmp_path):
    a = fake_run_folder(synth_csv(n=1200), tmp_path / "a")
    b = fake_run_folder(synth_csv(n=1200), tmp_path / "b")
    with pytest.raises(UserError, match="another run's folder"):
        analyse(a, out=b)
    assert not (b / "routing_report.md").exists()


def test_an_analyse_killed_in_a_shared_out_leaves_no_other_runs_report(
    synth_csv, tmp_path, monkeypatch
):
    # killed while drawing run b's figures, --out held run a's report beside them
    import experiments.analyse_report as report

    a = fake_run_folder(synth_csv(n=1200), tmp_path / "a")
    b = fake_run_folder(synth_csv(n=1300), tmp_path / "b")
    out = tmp_path / "shared"
    analyse(a, out=out)
    assert (out / "routing_report.md").is_file() and (out / "routing_analysis.json").is_file()

    def killed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "make_figures", killed)
    with pytest.raises(KeyboardInterrupt):
        analyse(b, out=out)
    assert not (out / "routing_report.md").exists()
    assert not (out / "routing_analysis.json").exists()


def test_weight_follows_skill_sees_a_router_that_weights_the_winner():
    from experiments.analyse import weight_follows_skill, win_shares

    rng = np.random.default_rng(0)
    err = rng.uniform(0.5, 1.5, size=(2, 200, 3))  # [M, W, C]
    winner = err.argmin(axis=0)
    wins = win_shares(err)
    w0 = np.where(winner == 0, 0.9, 0.1)  # member "a" weighted exactly where it wins
    w = np.stack([w0, 1 - w0], axis=-1)  # [W, C, M]
    w[:, 2] = [0.5, 0.5]  # channel 2: a fixed per-channel rule, left out
    out = weight_follows_skill(w, err, wins, ["a", "b"])
    assert out["a"]["channels"] == 2
    assert out["a"]["above"]["win_rate"] == 1.0 and out["a"]["below"]["win_rate"] == 0.0
    assert out["a"]["above"]["mse_ratio"] < 1 < out["a"]["below"]["mse_ratio"]
    assert out["a"]["above"]["share"] + out["a"]["below"]["share"] == pytest.approx(1.0)
    # a router with few distinct weights (rules' leaves): the two sides never overlap,
    # as top and bottom fifths cut at tied quantiles did (80 % and 75 % of the windows)
    w3 = np.stack([np.where(np.arange(200) < 150, 0.7, 0.2)[:, None].repeat(3, 1)] * 2, -1)
    w3[..., 1] = 1 - w3[..., 0]
    sides = weight_follows_skill(w3, err, wins, ["a", "b"])["a"]
    assert sides["above"]["share"] == 0.75 and sides["below"]["share"] == 0.25
    fixed = weight_follows_skill(np.full((200, 3, 2), 0.5), err, wins, ["a", "b"])
    assert fixed == {"a": None, "b": None}


def test_strengths_use_a_centred_trend_for_an_even_period():
    # The p-term average of an even period sits half a step off its row: a curved trend
    # then leaks into the remainder (seasonal strength 0.995 here, instead of 1)
    t = np.arange(192, dtype=np.float64)
    x = (np.sin(2 * np.pi * t / 24) + 0.001 * t**2)[None, :, None]
    f = window_features(x, period=24)
    assert f["seasonal_strength"][0, 0] > 0.9999 and f["trend_strength"][0, 0] > 0.9999


def test_weights_fixed_per_channel_say_nothing_about_when_timellm_is_preferred(synth_csv, tmp_path):
    run_dir = fake_run_folder(
        synth_csv(n=1200), tmp_path / "run", members=["naive", "snaive", "timellm"]
    )
    z = dict(np.load(run_dir / "router_weights.npz"))
    z["test"] = np.full_like(z["test"], 1 / 3)  # the mean router
    np.savez(run_dir / "router_weights.npz", **z)
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert "weights timellm most" not in md  # "low (0.333, against 0.333 in low)" before
    assert "## Does the router weight a member where it does better?" not in md
    assert "Not answerable for this run: its router gives each member the same weight" in md


def test_a_regime_is_named_a_preference_only_past_a_stated_gap_in_weight():
    # ETTh1: 0.599 against 0.582 (a tenth of the weight's spread) was printed as "weights
    # timellm most in" that regime
    from experiments.analyse_report import _skill_section

    side = {"share": 0.5, "win_rate": 0.4, "mse_ratio": 1.0}
    an = {
        "weight_follows_skill": {"timellm": {"above": side, "below": side}},
        "regimes": {
            "dominant_period": {
                "≈24": {"mean_weight": {"timellm": 0.599}},
                "other": {"mean_weight": {"timellm": 0.582}},
            },
            "volatility": {
                "low": {"mean_weight": {"timellm": 0.40}},
                "high": {"mean_weight": {"timellm": 0.70}},
            },
        },
    }
    text = "\n".join(_skill_section(an, ["timellm"]))
    assert "volatility high (0.700, against 0.400 in low)" in text and "descriptive" in text
    assert "dominant period" not in text


def _edit_npz(path: Path, **changes) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, **{**arrays, **changes})


def _nan_weight(run_dir: Path) -> None:
    with np.load(run_dir / "router_weights.npz") as z:
        w = z["test"].copy()
    w[0, 0, 0] = np.nan
    _edit_npz(run_dir / "router_weights.npz", test=w)


def _edit_results(run_dir: Path, **changes) -> None:
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    (run_dir / "results.json").write_text(json.dumps({**res, **changes}), encoding="utf-8")


@pytest.mark.parametrize(
    "edit, file, needle",
    [
        (
            lambda d: _edit_npz(d / "forecasts.npz", **{"test/true": np.zeros((5, 24, 1))}),
            "forecasts.npz",
            "test/naive has shape",
        ),
        (
            lambda d: _edit_npz(d / "forecasts.npz", **{"test/ensemble": np.zeros((5, 24))}),
            "forecasts.npz",
            "test/ensemble has shape",
        ),
        (
            lambda d: _edit_npz(d / "forecasts.npz", **{"val/snaive": np.zeros((5, 24, 1))}),
            "forecasts.npz",
            "val/snaive has shape",
        ),
        (
            lambda d: _edit_npz(d / "router_weights.npz", test=np.full((10, 3, 3), 1 / 3)),
            "router_weights.npz",
            "test has shape",
        ),
        (_nan_weight, "router_weights.npz", "non-finite weights"),
        (
            lambda d: _edit_npz(d / "router_weights.npz", step_weights=np.ones((3, 3))),
            "router_weights.npz",
            "step_weights has shape",
        ),
        (lambda d: _edit_results(d, periods=["x"]), "results.json", "periods holds 'x'"),
        (lambda d: _edit_results(d, periods=[24.5]), "results.json", "periods holds 24.5"),
        (lambda d: _edit_results(d, members="naive"), "results.json", "members is not a list"),
        (lambda d: _edit_results(d, members=[1, 2]), "results.json", "members is not a list"),
    ],
)
def test_hand_edited_run_files_are_one_line_naming_the_file(
    edit, file, needle, synth_csv, tmp_path
):
    # arrays of other shapes, NaN weights and unparsable periods ended in a traceback
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    edit(run_dir)
    with pytest.raises(UserError, match=f"{file} is damaged .*{needle}"):
        load_run(run_dir)


def test_a_hand_edited_run_file_exits_2_with_one_line(synth_csv, tmp_path, capsys):
    from experiments.cli import main

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    _edit_results(run_dir, periods=["x"])
    assert main(["analyse", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json is damaged" in err
    assert not (run_dir / "routing_report.md").exists()


def test_periods_given_as_strings_are_read_as_ints(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    _edit_results(run_dir, periods=["24", 12.0])
    assert load_run(run_dir).results["periods"] == [24, 12]


def test_an_analyse_leaves_no_figure_of_an_earlier_one(synth_csv, tmp_path):
    # a rerun that draws fewer figures (the weights or the probe gone) left the earlier
    # ones beside the new report
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    analyse(run_dir)
    assert (run_dir / "weights_distribution.png").is_file()
    (run_dir / "router_weights.npz").unlink()
    (run_dir / "prompt_probe.png").write_bytes(b"\x89PNG old")  # no probe kept in the JSON
    (run_dir / "test_windows.png").write_bytes(b"\x89PNG run")  # the run's own: kept
    (run_dir / "prompt_probe.pdf").write_bytes(b"%PDF old")  # an earlier copy goes with it
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert not (run_dir / "prompt_probe.pdf").exists()
    pngs = {p.name for p in run_dir.glob("*.png")}
    assert pngs == {
        "router_vs_mean.png",
        "weights_vs_features.png",
        "win_rates.png",
        "test_windows.png",
    }
    assert "weights_distribution" not in md


def test_an_analyse_killed_in_the_run_folder_leaves_no_old_report(synth_csv, tmp_path, monkeypatch):
    import experiments.analyse_report as report

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    analyse(run_dir)

    def killed(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "make_figures", killed)
    with pytest.raises(KeyboardInterrupt):
        analyse(run_dir)
    assert not (run_dir / "routing_report.md").exists()
    assert (run_dir / "routing_analysis.json").is_file()  # the checks a later analyse keeps
