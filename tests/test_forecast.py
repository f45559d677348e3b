"""experiments.forecast and `hybrid-forecast forecast`: a finished run forecasts the future."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble.errors import UserError
from experiments.cli import main

H = 24


def _finished_run(tmp_path_factory, members: str, router: str, calm_and_noisy: bool = False):
    """(csv, run folder) of a run on two synthetic channels with a 24-step cycle, H=24;
    ``calm_and_noisy``: blocks of 100 rows alternate between the cycle's own noise and 15
    times as much (regimes a router reading the windows' features can tell apart)."""
    from conftest import synthetic_frame

    root = tmp_path_factory.mktemp("fc")
    csv = root / "synth.csv"
    frame = synthetic_frame(n=1400, channels=2, period=24)
    if calm_and_noisy:
        rng = np.random.default_rng(0)
        amp = np.where((np.arange(len(frame)) // 100) % 2 == 1, 3.0, 0.2)
        for col in ("x0", "OT"):
            frame[col] += amp * rng.standard_normal(len(frame))
    frame.to_csv(csv, index=False)
    out = root / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", str(H)]
    argv += ["--members", members, "--router", router, "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return csv, out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run of every kind of member (stateless, trained, ARIMA's seasonal terms by row,
    LightGBM's calendar features) under the learned router (which keeps a router without
    features here: `gated_run` has one that reads them)."""
    members = "naive,dlinear@epochs=2,arima@fourier=168,lightgbm@rounds=20"
    return _finished_run(tmp_path_factory, members, "learned")


def test_the_rows_before_the_last_test_targets_forecast_the_last_test_window(
    finished, tmp_path, capsys
):
    # Cut the file where the run's last test window starts its forecast: the forecast of
    # the steps after it is then that window's forecast, members and ensemble alike.
    csv, out = finished
    cut = tmp_path / "cut.csv"
    pd.read_csv(csv).iloc[:-H].to_csv(cut, index=False)
    assert (
        main(["forecast", str(out), "--data-path", str(cut), "--out", str(tmp_path / "f.csv")]) == 0
    )
    said = capsys.readouterr().out
    assert f"forecast of the {H} steps after" in said and "router weights" in said
    full = pd.read_csv(csv)
    # an origin inside the run's rows is said to be a backtest (a file holding the run's
    # first rows alone forecast from inside its train split without a word)
    assert f"(before the run's last row, {pd.Timestamp(full['date'].iloc[-1])}" in said
    assert "out of sample only from an origin in its test split" in said
    frame = pd.read_csv(tmp_path / "f.csv")
    assert list(frame.columns[:3]) == ["date", "channel", "ensemble"]
    assert frame["date"].iloc[0] == full["date"].iloc[-H]  # the first step after the cut
    with np.load(out / "forecasts.npz") as z:
        expected = {
            k: z[f"test/{k}"][-1]
            for k in ("ensemble", "naive", "arima@fourier=168", "lightgbm@rounds=20")
        }
    from ensemble.data import load_dataset, make_splits

    scaler = make_splits(load_dataset(data_path=csv), 96, H).scaler
    for name, scaled in expected.items():
        raw = scaler.inverse_transform(scaled)  # [H, C]
        got = frame[name].to_numpy().reshape(H, -1)
        np.testing.assert_allclose(got, raw, rtol=1e-4, atol=1e-4, err_msg=name)
    weights = frame.filter(like="weight_").to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)
    # each row's weights are its step's: they rebuild its ensemble (the stacked
    # incumbent weighs each step apart)
    specs = [c.removeprefix("weight_") for c in frame.columns if c.startswith("weight_")]
    rebuilt = sum(frame[f"weight_{m}"] * frame[m] for m in specs)
    np.testing.assert_allclose(rebuilt, frame["ensemble"], rtol=1e-6, atol=1e-6)
    # so does a cut at an earlier test window: ARIMA's filter starts where the run's did
    with np.load(out / "forecasts.npz") as z:
        tests = {k: z[f"test/{k}"] for k in ("ensemble", "arima@fourier=168", "naive")}
    n_windows = len(tests["naive"])
    w = n_windows - 31  # from test window 5H - 1 on: the router's skill features score
    # windows back to w - 5H + 1, which the run's test windows hold from there on
    assert w >= 5 * H - 1
    earlier = tmp_path / "earlier.csv"
    full.iloc[: len(full) - H - (n_windows - 1 - w)].to_csv(earlier, index=False)
    argv = ["forecast", str(out), "--data-path", str(earlier), "--out", str(tmp_path / "e.csv")]
    assert main(argv) == 0
    at_w = pd.read_csv(tmp_path / "e.csv")
    for name, forecasts in tests.items():
        got = at_w[name].to_numpy().reshape(H, -1)
        raw = scaler.inverse_transform(forecasts[w])
        np.testing.assert_allclose(got, raw, rtol=1e-4, atol=1e-4, err_msg=name)
    # a file holding only the recent rows forecasts the same (rows counted from the run's)
    recent = tmp_path / "recent.csv"
    pd.read_csv(cut).iloc[-1000:].to_csv(recent, index=False)
    argv = ["forecast", str(out), "--data-path", str(recent), "--out", str(tmp_path / "g.csv")]
    assert main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "g.csv"), frame)


def test_a_learned_run_refits_its_choice_not_the_fold_search(finished, tmp_path, monkeypatch):
    # the search only finds the same choice again (about 20 s on ETTh1); results.json
    # names it, and the refit's weights are still checked against the run's
    import json

    from experiments.forecast import forecast_run
    from router.learned import LearnedRouter

    csv, out = finished
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sum(c["chosen"] for c in res["combiners"].values()) == 1
    monkeypatch.setattr(LearnedRouter, "fit", lambda *a, **k: pytest.fail("fold search rerun"))
    cut = tmp_path / "cut.csv"
    pd.read_csv(csv).iloc[:-H].to_csv(cut, index=False)
    fc = forecast_run(out, cut)
    with np.load(out / "forecasts.npz") as z:
        last = z["test/ensemble"][-1]
    from ensemble.data import load_dataset, make_splits

    raw = make_splits(load_dataset(data_path=csv), 96, H).scaler.inverse_transform(last)
    np.testing.assert_allclose(fc.frame["ensemble"].to_numpy().reshape(H, -1), raw, rtol=1e-4)


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    """A run whose router reads window features (a gating network over them,
    `learned_torch`), with ARIMA, whose forecasts depend on how many rows its filter has
    scanned; on calm and noisy blocks, where the gate beats every static prior on the
    inner split (on the plain cycle a static prior beats it, and is kept)."""
    return _finished_run(
        tmp_path_factory,
        "naive,dlinear@epochs=2,arima@fourier=168",
        "learned_torch",
        calm_and_noisy=True,
    )


def test_a_router_that_reads_features_forecasts_the_runs_test_windows(gated_run, tmp_path):
    # the features of the newest window are recomputed from the file's rows (and the members'
    # recent errors): cut where a test window starts, the router must weigh that window
    # as the run did
    csv, out = gated_run
    with np.load(out / "router_weights.npz") as z:
        run_weights = z["test"]  # [W, C, M]
    with np.load(out / "forecasts.npz") as z:
        run_ensemble = z["test/ensemble"]  # [W, H, C]
    assert np.ptp(run_weights, axis=0).max() > 0.1  # the weights follow the features
    from ensemble.data import load_dataset, make_splits

    scaler = make_splits(load_dataset(data_path=csv), 96, H).scaler
    full = pd.read_csv(csv)
    n = len(run_ensemble)
    for w in (n - 1, n - 31):
        cut = tmp_path / f"cut{w}.csv"
        full.iloc[: len(full) - H - (n - 1 - w)].to_csv(cut, index=False)
        assert main(["forecast", str(out), "--data-path", str(cut), "--out", str(cut) + ".fc"]) == 0
        frame = pd.read_csv(str(cut) + ".fc")
        got = frame["ensemble"].to_numpy().reshape(H, -1)
        np.testing.assert_allclose(got, scaler.inverse_transform(run_ensemble[w]), rtol=1e-4)
        weights = frame.filter(like="weight_").to_numpy()[:2]  # first step: one row per channel
        np.testing.assert_allclose(weights, run_weights[w], atol=1e-5)


def test_the_forecast_is_the_runs_from_test_window_5h_minus_1_on(gated_run, tmp_path):
    # the router's skill features of window w score the windows w - H back to w - 5H + 1
    # (skill_context_rows): the run's test windows hold them all from w = 5H - 1 on, where
    # a cut file forecasts as the run did; one window earlier the run scored one window
    # fewer than the file's rows give, and the router weighs otherwise
    from ensemble.data import load_dataset, make_splits
    from router.features import LONG, skill_context_rows

    assert skill_context_rows(96, H) == 96 + (LONG + 1) * H - 1 and LONG == 4
    csv, out = gated_run
    with np.load(out / "router_weights.npz") as z:
        run_weights = z["test"]  # [W, C, M]
    with np.load(out / "forecasts.npz") as z:
        run_ensemble = z["test/ensemble"]
    scaler = make_splits(load_dataset(data_path=csv), 96, H).scaler
    full = pd.read_csv(csv)
    n = len(run_ensemble)
    got = {}
    for w in (5 * H - 1, 5 * H - 2):
        cut = tmp_path / f"cut{w}.csv"
        full.iloc[: len(full) - H - (n - 1 - w)].to_csv(cut, index=False)
        assert main(["forecast", str(out), "--data-path", str(cut), "--out", str(cut) + ".fc"]) == 0
        frame = pd.read_csv(str(cut) + ".fc")
        assert frame["date"].iloc[0] == full["date"].iloc[len(full) - H - (n - 1 - w)]
        got[w] = (
            frame["ensemble"].to_numpy().reshape(H, -1),
            frame.filter(like="weight_").to_numpy()[:2],  # first step: a row per channel
        )
    first = 5 * H - 1
    np.testing.assert_allclose(
        got[first][0], scaler.inverse_transform(run_ensemble[first]), rtol=1e-4
    )
    np.testing.assert_allclose(got[first][1], run_weights[first], atol=1e-5)
    gap = {w: float(np.abs(got[w][1] - run_weights[w]).max()) for w in got}
    before = first - 1  # the window before differs (a little: one window of 4H more)
    assert gap[before] > 1e-5 and gap[before] > 10 * gap[first], gap


def test_rows_read_must_be_one_step_apart_past_the_runs_data(finished, tmp_path, capsys):
    # an extra, missing or off-step row among the newer rows shifted the lookback under
    # the same forecast dates (4.3 OT units off on ETTh1), with rc 0 and at most the
    # loader's "gap(s) ... rows used as they are"
    csv, out = finished
    frame = pd.read_csv(csv)
    last = pd.Timestamp(frame["date"].iloc[-1])

    def newer(steps) -> pd.DataFrame:  # frame's last rows' values at ``steps`` hours after
        extra = frame.iloc[-len(steps) :].copy()
        extra["date"] = [str(last + pd.Timedelta(hours=h)) for h in steps]
        return pd.concat([frame, extra])

    hours = list(np.arange(1, 49, dtype=float))
    cases = {
        "offstep": (
            newer(hours[:5] + [5.5] + hours[5:]),
            f"{last + pd.Timedelta(hours=5.5)} is not one step (h)",
        ),
        "gap": (newer(hours[:20] + hours[21:]), "the steps between are missing"),
        "two-hourly": (newer([2.0 * h for h in hours[:30]]), "the steps between are missing"),
        "late start": (newer([h + 1 for h in hours]), "the steps between are missing"),
        "recent, gap": (newer(hours[:20] + hours[21:]).iloc[-300:], "the steps between are"),
    }
    dates = {}
    for name, (bad, needle) in cases.items():
        path = tmp_path / "bad.csv"
        bad.to_csv(path, index=False)
        argv = ["forecast", str(out), "--data-path", str(path), "--out", str(tmp_path / "f.csv")]
        err = _one_line_error(argv, capsys)
        assert needle in err and "consecutive steps of h" in err, (name, err)
        dates[name] = err
    assert str(last + pd.Timedelta(hours=22)) in dates["gap"]
    assert str(last + pd.Timedelta(hours=2)) in dates["late start"]
    assert "pass --fill ffill" in dates["gap"]
    assert not (tmp_path / "f.csv").exists()
    # the fix the message names: the missing row with empty values, forward-filled
    filled = newer(hours)
    filled.iloc[len(frame) + 20, 1:] = np.nan
    filled.to_csv(tmp_path / "filled.csv", index=False)
    argv = ["forecast", str(out), "--data-path", str(tmp_path / "filled.csv"), "--out", "-"]
    assert main([*argv, "--fill", "ffill"]) == 0


def test_steps_are_counted_on_the_runs_calendar(tmp_path):
    # business days skip weekends and daily dates keep local midnights across a daylight-
    # saving change (as the loader reads them): neither is a gap; a missing day is
    from ensemble.data import load_dataset
    from experiments.forecast import _check_steps

    def data(dates, name):
        path = tmp_path / f"{name}.csv"
        values = np.sin(np.arange(len(dates)))
        pd.DataFrame({"date": dates, "OT": values}).to_csv(path, index=False)
        return load_dataset(data_path=path)

    days = pd.bdate_range("2020-01-01", periods=330)
    run, rows = data(days[:300].astype(str), "run"), 100
    _check_steps(data(days.astype(str), "b"), run, rows)
    with pytest.raises(UserError, match=f"row at {days[320].date()}.*steps between are missing"):
        _check_steps(data(days.delete(319).astype(str), "b_gap"), run, rows)
    local = pd.date_range("2019-01-01", "2019-04-30", freq="D", tz="Europe/Berlin")
    text = local.strftime("%Y-%m-%dT%H:%M:%S%z").str.replace(r"(\d\d)(\d\d)$", r"\1:\2", regex=True)
    run = data(text[:80], "drun")  # ends before the change on 31 March
    _check_steps(data(text, "d"), run, 60)
    with pytest.raises(UserError, match="steps between are missing"):
        _check_steps(data(text.delete(95), "d_gap"), run, 60)


def test_bad_inputs_are_refused_before_the_routers_refit(finished, tmp_path, capsys, monkeypatch):
    # --data-path was loaded after the router's refit (16 s on ETTh1), and --out first
    # written after every member had forecast
    import experiments.forecast

    monkeypatch.setattr(
        experiments.forecast, "_refit_router", lambda *a, **k: pytest.fail("router refitted")
    )
    csv, out = finished
    other = tmp_path / "other.csv"
    pd.read_csv(csv).rename(columns={"x0": "y0"}).to_csv(other, index=False)
    assert "not the run's" in _one_line_error(
        ["forecast", str(out), "--data-path", str(other)], capsys
    )
    (tmp_path / "file").write_text("", encoding="utf-8")
    err = _one_line_error(["forecast", str(out), "--out", str(tmp_path / "file" / "f.csv")], capsys)
    assert "cannot write a file in" in err and "give another path" in err
    err = _one_line_error(["forecast", str(out), "--out", str(tmp_path)], capsys)
    assert "is a folder; give a file name" in err
    assert not (tmp_path / "new").exists()
    # a folder yet to make is made when written (as before): not refused, nothing made here
    with pytest.raises(pytest.fail.Exception, match="router refitted"):
        main(["forecast", str(out), "--out", str(tmp_path / "new" / "f.csv")])
    assert not (tmp_path / "new").exists()


def test_columns_in_another_order_are_read_by_name(synth_csv, tmp_path, capsys, caplog):
    # names identify the columns: a file with the run's names in another order was refused
    csv = synth_csv(n=1000, channels=3)
    out = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", str(H), "--quiet"]
    assert main([*argv, "--members", "naive,dlinear@epochs=1", "--out", str(out)]) == 0
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["date", "x0", "x1", "OT"]
    swapped = tmp_path / "swapped.csv"
    frame[["date", "x1", "x0", "OT"]].to_csv(swapped, index=False)
    argv = ["forecast", str(out), "--data-path", str(swapped), "--out", str(tmp_path / "s.csv")]
    caplog.clear()
    assert main(argv) == 0
    assert "its columns are the run's in another order; read by name" in caplog.text
    capsys.readouterr()
    assert main(["forecast", str(out), "--out", str(tmp_path / "f.csv")]) == 0
    assert "backtest" not in capsys.readouterr().out  # after the run's own last row: the future
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), pd.read_csv(tmp_path / "f.csv"))
    twice = tmp_path / "twice.csv"  # not one to one: still refused
    frame.assign(x0=frame["x1"]).rename(columns={"x0": "x2"}).to_csv(twice, index=False)
    assert "not the run's" in _one_line_error(
        ["forecast", str(out), "--data-path", str(twice)], capsys
    )


def test_refusals_name_this_commands_options(finished, tmp_path, capsys):
    # the loader's words sent users astray: --data-dir (forecast has none), "give it with
    # --run-data" to one who just did, "remove the column" where every column is needed
    csv, out = finished
    err = _one_line_error(
        ["forecast", str(out), "--data-path", str(tmp_path / "missing.csv")], capsys
    )
    assert "--data-path" in err and "not found" in err and "--data-dir" not in err
    edited = tmp_path / "edited.csv"
    pd.read_csv(csv).assign(OT=lambda d: d["OT"] + 1).to_csv(edited, index=False)
    err = _one_line_error(["forecast", str(out), "--run-data", str(edited)], capsys)
    assert "give --run-data the run's own file" in err and "or give it with" not in err
    text = tmp_path / "text.csv"
    frame = pd.read_csv(csv)
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[len(frame) - 3, "OT"] = "abc"
    frame.to_csv(text, index=False)
    err = _one_line_error(["forecast", str(out), "--data-path", str(text)], capsys)
    assert "not numeric" in err and "remove the column" not in err and "fix the value" in err


def test_the_default_is_the_steps_after_the_runs_own_data(finished, capsys):
    csv, out = finished
    assert main(["forecast", str(out)]) == 0
    frame = pd.read_csv(out / "forecast.csv")
    last = pd.Timestamp(pd.read_csv(csv)["date"].iloc[-1])
    dates = pd.to_datetime(frame["date"].unique())
    assert len(dates) == H and dates[0] == last + pd.Timedelta("1h")
    assert (out / "forecast.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # for Excel
    assert np.isfinite(frame.drop(columns=["date", "channel"]).to_numpy()).all()


def test_a_newer_file_must_hold_the_runs_rows_where_it_shares_their_times(
    finished, tmp_path, capsys
):
    csv, out = finished
    frame = pd.read_csv(csv)
    edited = frame.copy()
    edited.loc[500, "OT"] += 1.0  # a training row, whose values the scaler came from
    edited.to_csv(tmp_path / "edited.csv", index=False)
    err = _one_line_error(
        ["forecast", str(out), "--data-path", str(tmp_path / "edited.csv")], capsys
    )
    assert "differs from the run's data at" in err and "OT" in err and "1 value(s) differ" in err
    zoned = frame.copy()
    zoned["date"] = pd.to_datetime(zoned["date"]).dt.tz_localize("Asia/Shanghai").astype(str)
    zoned.to_csv(tmp_path / "zoned.csv", index=False)
    err = _one_line_error(
        ["forecast", str(out), "--data-path", str(tmp_path / "zoned.csv")], capsys
    )
    # said which file has the offsets (a +08:00 file was told "a time zone (UTC)")
    assert "gives its dates with a UTC offset and the run's file without" in err
    # rows repeated, dropped or added at the run's times shift the lookback under the same
    # dates: an edited second copy of a row was not compared (np.intersect1d matched once)
    copy = frame.iloc[[400]].assign(OT=frame["OT"].iloc[400] + 50.0)
    cases = {
        "repeats the row at": pd.concat([frame.iloc[:401], copy, frame.iloc[401:]]),
        "repeats the row at ": pd.concat([frame, frame.iloc[[-1]]]),
        "lacks the run's row at": frame.drop(index=700),
        "that the run's data does not": pd.concat(  # half past, between two hours
            [
                frame.iloc[:401],
                copy.assign(date=lambda d: d["date"].str[:14] + "30:00"),
                frame.iloc[401:],
            ]
        ),
    }
    newer = frame.iloc[-2:].assign(date=lambda d: pd.to_datetime(d["date"]) + pd.Timedelta("2h"))
    cases["(past the run's data)"] = pd.concat([frame, newer.iloc[[0, 0]]])
    for needle, bad in cases.items():
        bad.to_csv(tmp_path / "bad.csv", index=False)
        err = _one_line_error(
            ["forecast", str(out), "--data-path", str(tmp_path / "bad.csv")], capsys
        )
        assert (
            needle.strip() in err
            and "--data-path must be the run's file" in err
            or ("drop the repeated rows" in err)
        ), (needle, err)
        # equal counts of rows read as a contradiction ("17418 rows where the run's data
        # has 17418"): a repeated row is said to be held once by the run's data
        assert "rows where the run's data has" not in err, err
        if needle == "repeats the row at":
            assert "which the run's data holds once" in err, err
    rounded = tmp_path / "rounded.csv"  # re-saved by a spreadsheet with 4 decimals
    frame.round(4).to_csv(rounded, index=False)
    assert main(["forecast", str(out), "--data-path", str(rounded), "--out", "-"]) == 0


def test_a_refused_file_is_one_line_without_the_warnings_of_its_loading(finished, tmp_path):
    import subprocess
    import sys

    csv, out = finished
    frame = pd.read_csv(csv)
    bad = tmp_path / "repeated.csv"  # loading warns of the repeated timestamp; then refused
    pd.concat([frame.iloc[:401], frame.iloc[[400]], frame.iloc[401:]]).to_csv(bad, index=False)
    argv = ["forecast", str(out), "--data-path", str(bad), "--out", str(tmp_path / "f.csv")]
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *argv], capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("error: ") and "repeats the row at" in p.stderr
    assert not (tmp_path / "f.csv").exists()


def test_the_forecast_on_stdout_is_utf8_whatever_the_console(synth_csv, tmp_path):
    # redirected on a Western Windows (cp1252), a Chinese channel came out as \u9ad8...
    import os
    import subprocess
    import sys

    csv = synth_csv(n=600, edit=lambda df: df.rename(columns={"x0": "高压负荷"}))
    out = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "48", "--pred-len", "24", "--quiet"]
    assert main([*argv, "--members", "naive", "--router", "mean", "--out", str(out)]) == 0
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"}
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "forecast", str(out), "--out", "-"],
        capture_output=True,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode("utf-8")
    assert text.startswith("date,channel,ensemble") and ",高压负荷," in text


def test_a_moved_backbone_folder_is_named_with_backbone(synth_csv, tmp_path, monkeypatch, capsys):
    # a run folder carried to another machine: the Time-LLM's backbone is elsewhere there
    # (a relative path was kept as given, and found from the run's working folder only)
    from conftest import TINY_LLAMA
    from transformers import AutoTokenizer

    from timellm.backbone import _minilm_dir, random_backbone

    def backbone(path, seed):
        random_backbone("llama", seed=seed, **TINY_LLAMA).model.save_pretrained(path)
        AutoTokenizer.from_pretrained(_minilm_dir()).save_pretrained(path)

    monkeypatch.chdir(tmp_path)
    backbone(tmp_path / "bb", 0)
    csv, out = synth_csv(n=400), tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "32", "--pred-len", "8", "--quiet"]
    argv += ["--members", "naive,timellm", "--router", "mean", "--out", str(out)]
    tiny = ["backbone=bb", "llm_layers=1", "d_model=8", "d_ff=16", "n_heads=2", "epochs=1"]
    tiny += ["num_prototypes=16", "train_stride=8", "val_stride=8"]
    assert main([*argv, *(a for kv in tiny for a in ("--set", f"timellm.{kv}"))]) == 0
    capsys.readouterr()
    with np.load(out / "forecasts.npz") as z:
        expected = z["test/timellm"][-1]
    (tmp_path / "bb").rename(tmp_path / "moved")
    cut = tmp_path / "cut.csv"
    pd.read_csv(csv).iloc[:-8].to_csv(cut, index=False)
    err = _one_line_error(["forecast", str(out), "--data-path", str(cut)], capsys)
    assert f"backbone folder {tmp_path / 'bb'} is not there" in err and "--backbone DIR" in err
    assert main(["forecast", str(out), "--data-path", str(cut), "--backbone", "moved"]) == 0
    frame = pd.read_csv(out / "forecast.csv")
    from ensemble.data import load_dataset, make_splits

    scaler = make_splits(load_dataset(data_path=csv), 32, 8).scaler
    got = frame["timellm"].to_numpy().reshape(8, -1)
    np.testing.assert_allclose(got, scaler.inverse_transform(expected), rtol=1e-4, atol=1e-4)
    # analyse's looks at the saved Time-LLM need it as well
    from experiments.analyse import analyse

    with pytest.raises(UserError, match="backbone folder .* is not there"):
        analyse(out, out=tmp_path / "an", prototypes=True)
    assert analyse(out, out=tmp_path / "an", prototypes=True, backbone="moved").is_file()
    backbone(tmp_path / "other", 1)  # other weights at the path given: refused
    capsys.readouterr()
    err = _one_line_error(["forecast", str(out), "--backbone", "other"], capsys)
    assert err.endswith(
        "holds other weights or another tokenizer than "
        f"{out / 'members' / 'timellm' / 'model'} was trained on; give the folder holding those"
    )


def test_a_hub_id_backbone_needs_no_folder_and_an_unused_backbone_is_said(
    finished, tmp_path, caplog
):
    from timellm.member import backbone_override

    model = tmp_path / "model"
    model.mkdir()
    for saved, given, expect in (
        ("Qwen/Qwen2.5-3B", None, {}),  # a hub id: the cache finds it, not a folder
        ("Qwen/Qwen2.5-3B", "copy", {"backbone": "copy"}),  # or a local copy of it
        ("mymodel", "elsewhere", {"backbone": "elsewhere"}),  # saved relative, as before
        ("minilm", "x", {}),
        (str(tmp_path), "elsewhere", {"backbone": "elsewhere"}),
        (str(tmp_path), None, {}),  # still there
    ):
        (model / "config.json").write_text(json.dumps({"backbone": saved}), encoding="utf-8")
        assert backbone_override(model, given, "timellm") == expect, saved
    csv, out = finished  # no Time-LLM: --backbone has nothing to do, and says so
    assert (
        main(["forecast", str(out), "--backbone", "/nowhere", "--out", str(tmp_path / "f.csv")])
        == 0
    )
    assert "--backbone /nowhere is not used" in caplog.text


def test_a_run_on_one_target_forecasts_it_and_refuses_another(synth_csv, tmp_path, capsys):
    out, csv = tmp_path / "run", synth_csv(n=600)
    argv = ["run", "--data-path", str(csv), "--seq-len", "48", "--pred-len", "24", "--quiet"]
    argv += ["--features", "MS", "--members", "naive,arima", "--router", "learned"]
    assert main([*argv, "--out", str(out)]) == 0
    # 144 rows of test windows' inputs, fewer than the router's skill features read before
    # the last window (L + 5H - 1 = 167): ARIMA's filter still starts where the run's did,
    # and the last test window is forecast as the run forecast it
    cut = tmp_path / "cut.csv"
    pd.read_csv(csv).iloc[:-24].to_csv(cut, index=False)
    assert (
        main(["forecast", str(out), "--data-path", str(cut), "--out", str(tmp_path / "f.csv")]) == 0
    )
    frame = pd.read_csv(tmp_path / "f.csv")
    assert set(frame["channel"]) == {"OT"}
    from ensemble.data import load_dataset, make_splits

    splits = make_splits(load_dataset(data_path=csv, features="MS"), 48, 24)
    assert splits.test.windows().context.shape[0] == 144
    with np.load(out / "forecasts.npz") as z:
        for name in ("arima", "ensemble"):
            saved = splits.scaler.inverse_transform(z[f"test/{name}"][-1], splits.eval_channels)
            np.testing.assert_allclose(frame[name], saved.ravel(), rtol=1e-5, err_msg=name)
    text = (out / "config.yaml").read_text(encoding="utf-8")
    (out / "config.yaml").write_text(text.replace("target: null", "target: x0"), encoding="utf-8")
    err = _one_line_error(["forecast", str(out)], capsys)
    assert "gives channels ['x0'] but the run" in err


def test_a_gap_in_the_newer_rows_is_filled_when_asked(finished, tmp_path, capsys):
    csv, out = finished
    newer = tmp_path / "newer.csv"
    frame = pd.read_csv(csv)
    extra = frame.iloc[-48:].copy()  # two more days, with a sensor gap in them
    extra["date"] = pd.date_range(frame["date"].iloc[-1], periods=49, freq="h")[1:].astype(str)
    extra.loc[extra.index[5], "x0"] = np.nan
    pd.concat([frame, extra]).to_csv(newer, index=False)
    argv = ["forecast", str(out), "--data-path", str(newer), "--out", str(tmp_path / "f.csv")]
    assert main(argv) == 2
    assert "pass --fill ffill" in capsys.readouterr().err  # the flag the hint names exists
    assert main([*argv, "--fill", "ffill"]) == 0
    assert np.isfinite(pd.read_csv(tmp_path / "f.csv")["ensemble"]).all()


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_what_cannot_be_forecast_is_one_line(finished, tmp_path, capsys):
    csv, out = finished
    assert "not a run folder" in _one_line_error(["forecast", str(tmp_path)], capsys)
    err = _one_line_error(["forecast", str(out.parent)], capsys)  # runs/, not runs/x
    assert "not a run folder (no results.json or config.yaml)" in err and f"e.g. {out}" in err
    half = tmp_path / "half"  # an interrupted run: its config.yaml, no results.json yet
    half.mkdir()
    (half / "config.yaml").write_bytes((out / "config.yaml").read_bytes())
    assert "(no results.json)" in _one_line_error(["forecast", str(half)], capsys)
    other = tmp_path / "other.csv"
    pd.read_csv(csv).rename(columns={"x0": "y0"}).to_csv(other, index=False)
    err = _one_line_error(["forecast", str(out), "--data-path", str(other)], capsys)
    assert "not the run's" in err
    short = tmp_path / "short.csv"
    pd.read_csv(csv).iloc[:50].to_csv(short, index=False)
    err = _one_line_error(["forecast", str(out), "--data-path", str(short)], capsys)
    assert "needs at least 96" in err
    err = _one_line_error(["forecast", str(out), "--out", str(out / "results.json")], capsys)
    assert "would replace the run's own results.json" in err


def test_a_damaged_run_folder_is_one_line_and_a_rerun_repairs_it(finished, tmp_path, capsys):
    import json
    import shutil

    _, out = finished
    run = tmp_path / "run"

    def damaged(edit) -> str:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(out, run)
        edit(run)
        return _one_line_error(["forecast", str(run), "--out", str(tmp_path / "f.csv")], capsys)

    def set_result(key, value):
        def edit(r):
            res = json.loads((r / "results.json").read_text(encoding="utf-8"))
            res[key] = value
            (r / "results.json").write_text(json.dumps(res), encoding="utf-8")

        return edit

    state = next((run_ := out / "members" / "dlinear_epochs=2" / "model").glob("*.pt"))
    assert "cannot load dlinear@epochs=2's saved model" in damaged(
        lambda r: (r / state.relative_to(out)).write_bytes(b"garbage")
    )
    assert "delete that folder and rerun" in damaged(
        lambda r: (r / run_.relative_to(out) / "config.json").write_text("{", encoding="utf-8")
    )
    for name in ("forecasts.npz", "router_weights.npz"):
        assert f"{name} is damaged" in damaged(
            lambda r, name=name: (r / name).write_bytes(b"PK\x03\x04")
        )
    assert "results.json is damaged" in damaged(set_result("members", []))
    assert "results.json is damaged" in damaged(set_result("periods", ["x"]))
    # hand edits of the wrong type: tracebacks, or a string read as one-letter members
    for key, value in (
        ("data", None),
        ("combiners", [1]),
        ("combiners", {"mean": 1}),
        ("members", "naive"),
        ("member_fits", "x"),
    ):
        assert "results.json is damaged" in damaged(set_result(key, value)), (key, value)
    specs = json.loads((out / "results.json").read_text(encoding="utf-8"))["members"]
    err = damaged(set_result("members", specs[::-1]))
    assert "lists the members" in err and "(in another order)" in err, err
    assert "(other members)" in damaged(set_result("members", specs[:-1]))

    def shorter(r):
        text = (r / "config.yaml").read_text(encoding="utf-8")
        edited = text.replace("seq_len: 96", "seq_len: 48")
        (r / "config.yaml").write_text(edited, encoding="utf-8")

    assert "says seq_len: 48 but the run" in damaged(shorter)

    def fewer_rows(r):
        text = (r / "config.yaml").read_text(encoding="utf-8")
        (r / "config.yaml").write_text(
            text.replace("percent: 100", "percent: 50"), encoding="utf-8"
        )

    assert "gives windows" in damaged(fewer_rows)
    assert not (tmp_path / "f.csv").exists()

    # the model folder gone: the rerun the message asks for fits that member again
    assert "has no saved model" in damaged(lambda r: shutil.rmtree(r / run_.relative_to(out)))
    assert main(["run", "--config", str(run / "config.yaml"), "--out", str(run), "--quiet"]) == 0
    assert (run / run_.relative_to(out)).is_dir()
    assert main(["forecast", str(run), "--out", str(tmp_path / "f.csv")]) == 0


def test_a_changed_data_file_or_router_is_refused(finished, tmp_path, capsys):
    import shutil

    csv, out = finished
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    with np.load(copy / "router_weights.npz") as z:
        saved = {k: z[k] for k in z.files}
    saved["val"] = np.roll(saved["val"], 1, axis=-1)  # another router's weights
    np.savez(copy / "router_weights.npz", **saved)
    assert "gives other weights than the run's" in _one_line_error(["forecast", str(copy)], capsys)
    original = csv.read_bytes()
    try:
        csv.write_bytes(original.replace(b"\n2020-01-01 01:00:00,", b"\n2020-01-01 01:00:00,9", 1))
        assert "is not the file the run" in _one_line_error(["forecast", str(out)], capsys)
    finally:
        csv.write_bytes(original)


def test_a_router_without_features_forecasts_from_the_last_window_only(
    synth_csv, tmp_path, monkeypatch
):
    from classical.naive import NaiveLast

    csv = synth_csv(n=1400)
    out = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", str(H)]
    assert main([*argv, "--members", "naive,snaive", "--out", str(out), "--quiet"]) == 0
    seen = []
    predict = NaiveLast.predict
    monkeypatch.setattr(NaiveLast, "predict", lambda self, w: seen.append(w.n) or predict(self, w))
    cut = tmp_path / "cut.csv"
    pd.read_csv(csv).iloc[:-H].to_csv(cut, index=False)
    from experiments.forecast import forecast_run

    fc = forecast_run(out, cut)
    assert seen == [1, 1]  # the run's last validation window (the model's check), the last
    with np.load(out / "forecasts.npz") as z:
        last = z["test/ensemble"][-1]
    from ensemble.data import load_dataset, make_splits

    raw = make_splits(load_dataset(data_path=csv), 96, H).scaler.inverse_transform(last)
    np.testing.assert_allclose(fc.frame["ensemble"].to_numpy().reshape(H, -1), raw, rtol=1e-5)


def test_a_moved_run_names_its_data_and_odd_files_still_forecast(finished, tmp_path, capsys):
    import shutil

    csv, out = finished
    moved, data = tmp_path / "moved", tmp_path / "data"
    shutil.copytree(out, moved)
    data.mkdir()
    (data / "synth.csv").write_bytes(csv.read_bytes())
    # the run's data file is not where config.yaml says (another machine)
    cfg = (moved / "config.yaml").read_text(encoding="utf-8")
    (moved / "config.yaml").write_text(
        cfg.replace(str(csv), str(tmp_path / "gone.csv")), encoding="utf-8"
    )
    assert "--run-data FILE" in _one_line_error(["forecast", str(moved)], capsys)
    # a wrong --run-data is named as that flag, not as run's --dataset/--data-path
    for given, said in (
        (tmp_path / "nothere.csv", "is not found"),
        (data / "ETTh2.csv", "is ETTh2's file"),
    ):
        if given.stem == "ETTh2":
            given.write_bytes(csv.read_bytes())
        err = _one_line_error(["forecast", str(moved), "--run-data", str(given)], capsys)
        assert err.startswith(f"error: --run-data {given} {said}; give the file the run in"), err
    argv = ["forecast", str(moved), "--run-data", str(data / "synth.csv")]
    assert main([*argv, "--out", str(tmp_path / "m.csv")]) == 0
    assert main([*argv, "--out", str(data / "synth.csv")]) == 2  # never over the data
    assert "is the --run-data file" in capsys.readouterr().err
    # a file adding earlier history: rows are counted back from the run's first
    full = pd.read_csv(csv)
    earlier = full.iloc[:48].copy()
    earlier["date"] = pd.to_datetime(full["date"].iloc[:48]) - pd.Timedelta("48h")
    longer = tmp_path / "longer.csv"
    pd.concat([earlier.astype({"date": str}), full]).to_csv(longer, index=False)
    argv = ["forecast", str(out), "--data-path", str(longer), "--out", str(tmp_path / "l.csv")]
    assert main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "l.csv"), pd.read_csv(tmp_path / "m.csv"))


def test_a_run_on_data_with_a_repeated_timestamp_forecasts(synth_csv, tmp_path, capsys):
    def repeat(df):
        df.loc[300, "date"] = df.loc[299, "date"]
        return df

    csv = synth_csv(n=1400, edit=repeat)
    out = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", str(H)]
    assert main([*argv, "--members", "naive,arima@fourier=168", "--out", str(out), "--quiet"]) == 0
    assert main(["forecast", str(out)]) == 0
    assert (
        main(["forecast", str(out), "--data-path", str(csv), "--out", str(tmp_path / "f.csv")]) == 0
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "f.csv"), pd.read_csv(out / "forecast.csv")
    )


def test_a_model_that_is_not_the_runs_is_refused_and_other_code_is_said(
    finished, tmp_path, capsys, caplog
):
    # another seed's model copied into the run: the router's weights still match (they
    # come from forecasts.npz), so the forecast went on with the wrong member
    import shutil

    csv, out = finished
    other = tmp_path / "seed1"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", str(H), "--quiet"]
    argv += ["--members", "naive,dlinear@epochs=2", "--router", "mean", "--seed", "1"]
    assert main([*argv, "--out", str(other)]) == 0
    capsys.readouterr()
    swapped = tmp_path / "swapped"
    shutil.copytree(out, swapped)
    member = Path("members") / "dlinear_epochs=2" / "model"
    shutil.rmtree(swapped / member)
    shutil.copytree(other / member, swapped / member)
    err = _one_line_error(["forecast", str(swapped), "--out", str(tmp_path / "f.csv")], capsys)
    assert err.startswith("error: dlinear@epochs=2's saved model in ") and "rerun the run" in err
    assert "is not the one behind the run's forecasts" in err
    # the run's own models pass; a member fitted by other code is said, as run says it
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    res["member_fits"]["naive"]["code"] = "0123456789ab"
    res["member_fits"]["naive"]["tree"] = "another tree"  # else the same code, unsaid
    del res["data"]["sha256"]
    kept = tmp_path / "kept"
    shutil.copytree(out, kept)
    (kept / "results.json").write_text(json.dumps(res), encoding="utf-8")
    caplog.clear()
    assert main(["forecast", str(kept), "--out", str(tmp_path / "f.csv")]) == 0
    said = caplog.text
    assert "naive: models loaded from a fit by code 0123456789ab" in said, said
    assert "records no checksum of the run's data (data.sha256)" in said, said
    assert "dlinear@epochs=2" not in said.split("models loaded")[0]


def test_out_inside_the_run_folder_is_only_a_new_file_of_its_own(finished, tmp_path, capsys):
    import shutil

    _, out = finished
    run = tmp_path / "run"
    shutil.copytree(out, run)
    for target in (
        run / "members" / "naive" / "forecasts.npz",
        run / "members" / "naive" / "x.csv",
        run / ".lock",
        run / ".f.csv",
        run / "members",
        run,
    ):
        before = target.read_bytes() if target.is_file() else None
        err = _one_line_error(["forecast", str(run), "--out", str(target)], capsys)
        assert "is inside the run folder" in err, (target, err)
        assert (target.read_bytes() if target.is_file() else None) == before
    # a link at the top level into the members' files is refused where it leads
    (run / "link.csv").symlink_to(run / "members" / "naive" / "model")
    assert "inside the run folder" in _one_line_error(
        ["forecast", str(run), "--out", str(run / "link.csv")], capsys
    )
    assert main(["forecast", str(run), "--out", str(run / "mine.csv")]) == 0
    assert pd.read_csv(run / "mine.csv").shape[0] > 0


def test_daily_dates_across_daylight_saving_keep_the_files_offset(tmp_path, caplog):
    # offsets written as they change (+01:00 in winter, +02:00 in summer) are read as UTC;
    # the forecast's days were then 23:00 UTC (01:00 local after the next change)
    from experiments.api import HybridForecaster

    n = 400  # 2019-01-01 .. 2020-02-04: across two changes, ending in winter (+01:00)
    dates = pd.date_range("2019-01-01", periods=n, freq="D", tz="Europe/Berlin")
    t = np.arange(n)
    values = np.sin(2 * np.pi * t / 7) + 0.1 * np.random.default_rng(0).standard_normal(n)
    csv = tmp_path / "daily.csv"
    pd.DataFrame({"date": dates.astype(str), "a": values}).to_csv(csv, index=False)
    run = tmp_path / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "28", "--pred-len", "7", "--quiet"]
    assert main([*argv, "--members", "naive,snaive", "--router", "mean", "--out", str(run)]) == 0
    caplog.clear()
    assert main(["forecast", str(run), "--out", str(tmp_path / "f.csv")]) == 0
    said = caplog.text
    assert said.count("offsets change") == 1 and "keep the last row's offset (UTC+01:00)" in said
    got = pd.read_csv(tmp_path / "f.csv")["date"].unique().tolist()
    expected = pd.date_range("2020-02-05", periods=7, freq="D", tz="Europe/Berlin")
    assert got == expected.astype(str).tolist()  # local midnights, in the file's offset
    # the API reads the same file as the command line does, and dates it alike
    hf = HybridForecaster(members=["naive", "snaive"], router="mean", seq_len=28, pred_len=7)
    with pytest.warns(UserWarning, match=r"offsets change .* \(UTC\+01:00\)"):
        fc = hf.fit(pd.read_csv(csv), time_col="date").predict()
    assert fc["date"].astype(str).tolist() == got


def test_a_member_on_a_language_model_that_differs_is_warned_of_not_refused(tmp_path, caplog):
    # a GPU run in bf16 forecast here in float32 differs a little: no refusal that would
    # send the user to refit hours of Time-LLM; any other member is refused
    from experiments.forecast import _check_member_is_the_runs

    saved = np.zeros((4, 2))
    args = (tmp_path / "members" / "timellm", tmp_path)
    _check_member_is_the_runs("timellm", saved + 0.01, saved, *args, on_backbone=True)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        _check_member_is_the_runs("timellm", saved + 0.3, saved, *args, on_backbone=True)
    assert "timellm's saved model in" in caplog.text and "may not be the one" in caplog.text
    with pytest.raises(UserError, match="is not the one behind"):
        _check_member_is_the_runs("dlinear", saved + 0.001, saved, *args)
    with pytest.raises(UserError):  # no forecast at all: refused whatever the member
        _check_member_is_the_runs("timellm", saved + np.nan, saved, *args, on_backbone=True)


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    """(csv, run folder) of a quick run on the target alone (features S)."""
    from conftest import synthetic_frame

    root = tmp_path_factory.mktemp("fc_s")
    csv = root / "synth.csv"
    synthetic_frame(n=600, channels=3, period=24).to_csv(csv, index=False)
    out = root / "run"
    argv = ["run", "--data-path", str(csv), "--seq-len", "48", "--pred-len", str(H), "--quiet"]
    argv += ["--features", "S", "--members", "naive,snaive", "--router", "mean", "--out", str(out)]
    assert main(argv) == 0
    return csv, out


def test_columns_beside_the_runs_are_left_out_text_or_numeric(target_run, tmp_path, caplog):
    # a note beside the run's columns was refused ("not numeric ...; fix the value (the
    # forecast needs each of the run's columns)") where a numeric one was left out
    csv, out = target_run
    assert main(["forecast", str(out), "--out", str(tmp_path / "own.csv")]) == 0
    for name, value in (("note", "ok"), ("extra", 1.5)):
        newer = tmp_path / f"{name}.csv"
        pd.read_csv(csv).assign(**{name: value}).to_csv(newer, index=False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hybrid_forecast.forecast"):
            argv = [
                "forecast",
                str(out),
                "--data-path",
                str(newer),
                "--out",
                str(tmp_path / "f.csv"),
            ]
            assert main(argv) == 0
        assert f"column(s) x0, x1, {name} left out: not among the run's (OT)" in caplog.text
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "f.csv"), pd.read_csv(tmp_path / "own.csv")
        )


def test_a_long_file_is_refused_with_the_pivot(target_run, tmp_path, capsys):
    # unique_id, ds, y rows were "timestamps go backwards ...; sort the file by date", and
    # sorted, a refusal of the id column as not numeric
    csv, out = target_run
    long = pd.read_csv(csv).melt(id_vars="date", var_name="unique_id", value_name="y")
    pivot = "df.pivot(index='date', columns='unique_id', values='y').reset_index()"
    path = tmp_path / "long.csv"
    for frame in (long, long.sort_values("date", kind="stable")):
        frame.to_csv(path, index=False)
        err = _one_line_error(["forecast", str(out), "--data-path", str(path)], capsys)
        assert "is a long file" in err and "a column per channel (OT)" in err and pivot in err
    # other names: an id column and one of numbers, on repeating dates, without the run's
    long.rename(columns={"unique_id": "sensor", "y": "reading"}).to_csv(path, index=False)
    err = _one_line_error(["forecast", str(out), "--data-path", str(path)], capsys)
    assert "columns='sensor', values='reading'" in err
    # the pivot the message gives forecasts
    long.pivot(index="date", columns="unique_id", values="y").reset_index().to_csv(
        path, index=False
    )
    assert main(["forecast", str(out), "--data-path", str(path)]) == 0


@pytest.mark.parametrize("windows", [True, False])
def test_the_rerun_a_damaged_run_is_told_is_quoted_for_the_shell(
    windows, finished, tmp_path, capsys, monkeypatch
):
    # a run folder with a space was two words of the command printed to copy
    import shutil

    monkeypatch.setattr("ensemble.shell._WINDOWS", windows)
    _, out = finished
    run = tmp_path / "my run"
    shutil.copytree(out, run)
    cfg = run / "config.yaml"
    if windows:
        rerun = f'hybrid-forecast run --config "{cfg}" --out "{run}"'
    else:
        rerun = f"hybrid-forecast run --config '{cfg}' --out '{run}'"
    res = json.loads((run / "results.json").read_text(encoding="utf-8"))
    res["members"] = res["members"][::-1]
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    argv = ["forecast", str(run), "--out", str(tmp_path / "f.csv")]
    err = _one_line_error(argv, capsys)
    assert "lists the members" in err and f"{rerun})" in err, err
    res["members"] = res["members"][::-1]
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    shutil.rmtree(run / "members" / "dlinear_epochs=2" / "model")
    err = _one_line_error(argv, capsys)
    assert "has no saved model" in err and f"{rerun})" in err, err


def test_dates_pandas_cannot_count_and_an_emptied_config_are_one_line(finished, tmp_path, capsys):
    # year 9999 loaded (pandas 3 reads it in microseconds) and failed in `_instants` with
    # OutOfBoundsDatetime; an emptied config.yaml read as the defaults was "edited"
    import shutil

    csv, out = finished
    far = tmp_path / "far.csv"
    df = pd.read_csv(csv)
    df["date"] = pd.date_range("9999-01-01", periods=len(df), freq="h").strftime("%Y-%m-%d %H:%M")
    df.to_csv(far, index=False)
    argv = ["forecast", str(out), "--out", str(tmp_path / "f.csv")]
    err = _one_line_error([*argv, "--data-path", str(far)], capsys)
    assert "timestamp 9999-01-01 00:00:00 at row 1 (line 2) is outside the dates handled" in err
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "config.yaml").write_text("", encoding="utf-8")
    err = _one_line_error(["forecast", str(run)], capsys)
    assert f"{run / 'config.yaml'}: the file is empty" in err, err
    assert err.endswith("put the run's config.yaml back, or rerun the run (its members are reused)")
    assert "tune" not in err  # not the advice for a --config file
    assert not (tmp_path / "f.csv").exists()
