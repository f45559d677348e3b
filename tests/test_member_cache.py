"""A member's saved forecasts: reused for the same experiment however it is spelled,
refitted for other data, settings or files, found under the keys and folder names of
earlier versions, refitted when damaged."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import reused_members, synth_run_argv

from experiments.cli import main


def test_member_cache_key_follows_the_detected_periods(small_synth_splits):
    # Members build features and prompts from the periods: a cache made under other
    # periods (e.g. by an older analyser) must not be reused.
    from experiments.config import RunConfig
    from experiments.member_cache import data_key

    splits = small_synth_splits()
    cfg = RunConfig(dataset=None, data_path="synth3.csv", seq_len=96, pred_len=24)
    key = data_key(cfg, splits, "lightgbm", [24, 168])
    assert key == data_key(cfg, splits, "lightgbm", [24, 168])
    assert key != data_key(cfg, splits, "lightgbm", [24, 168, 408])
    seed1 = RunConfig(dataset=None, data_path="synth3.csv", seq_len=96, pred_len=24, seed=1)
    assert key != data_key(seed1, splits, "lightgbm", [24, 168])
    # what a member derives from them (ARIMA's season, whose default rule changed) too
    arima = data_key(cfg, splits, "arima", [], {"season": 0})
    assert arima != data_key(cfg, splits, "arima", [], {"season": 24})
    assert data_key(cfg, splits, "arima", []) == data_key(cfg, splits, "arima", [], None)
    # how the file was named is not what the member sees; its own settings are
    respelled = RunConfig(dataset="synth3", data_path=None, target="OT", seq_len=96, pred_len=24)
    assert key == data_key(respelled, splits, "lightgbm", [24, 168])
    cfg.member_params = {"lightgbm": {"progress": False}}  # bars only
    assert key == data_key(cfg, splits, "lightgbm", [24, 168])
    # --resume on a finished Time-LLM run re-forecast every window (hours on a GPU)
    cfg.member_params = {"lightgbm": {"resume": True}}
    assert key == data_key(cfg, splits, "lightgbm", [24, 168])
    cfg.member_params = {"lightgbm": {"num_leaves": 15}}
    assert key != data_key(cfg, splits, "lightgbm", [24, 168])


def test_member_forecasts_are_not_reused_for_changed_data(synth_csv, tmp_path):
    # Same file name and settings, other values: the saved member forecasts are stale.
    out = tmp_path / "r"
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))["test"]["naive"]
    df = pd.read_csv(csv)
    df["OT"] = df["OT"].to_numpy()[::-1]  # not a rescaling: scores are in scaled space
    df.to_csv(csv, index=False)
    assert main(synth_run_argv(csv, out)) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["test"]["naive"] != first


def test_member_forecasts_are_not_reused_for_shifted_dates_or_another_spec(synth_csv, tmp_path):
    # LightGBM's calendar features read the timestamps; and "fourier=24+168" and
    # "fourier=24_168" share a folder name
    out = tmp_path / "r"
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    df = pd.read_csv(csv)
    df["date"] = (pd.to_datetime(df["date"]) + pd.Timedelta(hours=7)).astype(str)
    df.to_csv(csv, index=False)
    assert main(synth_run_argv(csv, out)) == 0
    assert (out / "run.log").read_text(encoding="utf-8").count("reusing forecasts") == 0
    assert main(synth_run_argv(csv, out)) == 0  # unchanged now: reused
    assert (out / "run.log").read_text(encoding="utf-8").count("run: naive: reusing forecasts") == 1
    with np.load(out / "members" / "naive" / "forecasts.npz") as z:
        assert str(z["spec"]) == "naive" and len(str(z["dates"])) == 16


def test_member_folder_names_stay_short_for_windows_paths(synth_csv, tmp_path):
    from experiments.member_cache import member_dir

    assert member_dir("timellm@patch_len=24@stride=24") == "timellm_patch_len=24_stride=24"
    stats = "min+max+median+trend+mean+std+volatility+seasonal_strength+window_period+periods"
    long_a, long_b = f"timellm@prompt_stats={stats}", f"timellm@prompt_stats={stats}+acf1"
    a, b = member_dir(long_a), member_dir(long_b)
    assert len(a) == len(b) == 64 and a != b and a == member_dir(long_a)
    assert a.startswith("timellm_prompt_stats=min_max_median")
    # a run with a long spec writes and reuses that folder
    spec = "dlinear@epochs=1@batch_size=64@patience=1@lr_decay=0.5@kernel=25@individual=false"
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", f"naive,{spec}", "--out", str(out), "--quiet"]
    assert main(argv) == 0 and main(argv) == 0
    assert {p.name for p in (out / "members").iterdir()} == {"naive", member_dir(spec)}
    assert len(member_dir(spec)) == 64
    assert (out / "run.log").read_text(encoding="utf-8").count("reusing forecasts") == 2
    # a folder from before names were cut keeps its saved forecasts in use
    (out / "members" / member_dir(spec)).rename(out / "members" / spec.replace("@", "_"))
    assert main(argv) == 0
    assert (out / "run.log").read_text(encoding="utf-8").count("reusing forecasts") == 4
    assert not (out / "members" / member_dir(spec)).exists()


def test_a_member_folder_named_as_earlier_versions_named_it_is_still_found(tmp_path):
    from experiments.member_cache import member_path

    spec = "timellm@backbone=D:/模型/千问2.5-3B"
    assert member_path(tmp_path, spec).name == "timellm_backbone=D_模型_千问2.5-3B"
    old = tmp_path / "members" / "timellm_backbone=D_2.5-3B"  # ASCII only, before
    old.mkdir(parents=True)
    assert member_path(tmp_path, spec) == old


def test_a_config_rerun_into_a_new_folder_copies_the_members_it_can(synth_csv, tmp_path):
    first, second, third = tmp_path / "r", tmp_path / "median", tmp_path / "seed1"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    assert main([*argv, "--members", "naive,dlinear@epochs=2", "--out", str(first), "--quiet"]) == 0
    cfg = str(first / "config.yaml")
    assert (
        main(["run", "--config", cfg, "--router", "median", "--out", str(second), "--quiet"]) == 0
    )
    log = (second / "run.log").read_text(encoding="utf-8")
    assert "dlinear@epochs=2: copied from" in log and "fit " not in log  # nothing refitted
    a, b = (
        json.loads((d / "results.json").read_text(encoding="utf-8"))["test"]
        for d in (first, second)
    )
    assert a["dlinear@epochs=2"] == b["dlinear@epochs=2"] and a["naive"] == b["naive"]
    from experiments.member_cache import member_path

    assert (member_path(second, "dlinear@epochs=2") / "model").is_dir()  # a whole run folder
    assert not list((second / "members").glob(".*"))  # no temporary copy left
    (second / "members" / ".naive.copy").mkdir()  # one an interrupted copy left
    assert main(["run", "--config", str(second / "config.yaml"), "--quiet"]) == 0
    assert not (second / "members" / ".naive.copy").exists()
    # a source another run is writing, or a copy that fails: fitted here instead
    from ensemble.io import FolderLock

    busy = FolderLock(first)
    try:
        assert main(["run", "--config", cfg, "--out", str(tmp_path / "busy"), "--quiet"]) == 0
    finally:
        busy.release()
    log = (tmp_path / "busy" / "run.log").read_text(encoding="utf-8")
    assert "a run is writing to" in log and "dlinear@epochs=2: fit" in log
    reading = FolderLock(first, shared=True)  # an analyse or forecast of it: copied
    try:
        assert main(["run", "--config", cfg, "--out", str(tmp_path / "read"), "--quiet"]) == 0
    finally:
        reading.release()
    log = (tmp_path / "read" / "run.log").read_text(encoding="utf-8")
    assert "a run is writing to" not in log and log.count("copied from") == 2

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("shutil.copytree", full_disk)
        assert main(["run", "--config", cfg, "--out", str(tmp_path / "full"), "--quiet"]) == 0
    log = (tmp_path / "full" / "run.log").read_text(encoding="utf-8")
    assert "cannot copy it from" in log and "dlinear@epochs=2: fit" in log
    assert not list((tmp_path / "full" / "members").glob(".*"))
    # another seed is another fit: nothing to copy
    assert main(["run", "--config", cfg, "--seed", "1", "--out", str(third), "--quiet"]) == 0
    log = (third / "run.log").read_text(encoding="utf-8")
    assert "copied from" not in log and "dlinear@epochs=2: fit" in log


def test_a_copy_a_scanner_holds_for_a_moment_is_renamed_when_it_lets_go(
    tmp_path, monkeypatch, caplog
):
    # Windows: an antivirus or the indexer reading the new files refuses the rename of
    # the copied folder for a moment; that refitted the member (hours for Time-LLM)
    import os

    import ensemble.io
    from experiments import member_cache

    source = tmp_path / "r"
    src = source / "members" / "timellm"
    (src / "model").mkdir(parents=True)
    (src / "forecasts.npz").write_bytes(b"forecasts")
    (src / "model" / "adapter.pt").write_bytes(b"weights")
    dst = tmp_path / "new" / "members" / "timellm"
    dst.parent.mkdir(parents=True)
    monkeypatch.setattr(ensemble.io, "_RETRY_REPLACE", True)
    monkeypatch.setattr(ensemble.io, "_REPLACE_DELAYS", (0.0, 0.0, 0.0))
    refused = []

    def scanned(real):
        def move(a, b, *args, **kwargs):
            if os.fspath(b) == os.fspath(dst) and len(refused) < 2:
                refused.append(a)  # Windows: [WinError 5] Access is denied
                raise PermissionError(13, "Permission denied", os.fspath(a), None, os.fspath(b))
            return real(a, b, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "rename", scanned(os.rename))
    monkeypatch.setattr(os, "replace", scanned(os.replace))
    with caplog.at_level(logging.INFO):
        member_cache.copy_members([("timellm", src, dst)], source)
    assert len(refused) == 2 and "fitting it instead" not in caplog.text, caplog.text
    assert (dst / "model" / "adapter.pt").read_bytes() == b"weights"
    assert not list(dst.parent.glob(".*"))  # no temporary copy left


def _registered_copy(root, edit=None):
    """A synthetic series where ``--dataset weather --data-dir ROOT`` reads it (the
    70/10/20 split, as for any file): one file, two ways to name it."""
    from conftest import synthetic_frame

    df = synthetic_frame(n=1400)
    if edit is not None:
        df = edit(df)
    path = root / "weather" / "weather.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def _by_name(root, out, *extra: str) -> tuple[list[str], list[str]]:
    """(``--dataset weather --data-dir ROOT``, the rest of a cheap run into ``out``)."""
    rest = ["--seq-len", "96", "--pred-len", "24", "--members", "naive,snaive"]
    rest += ["--out", str(out), "--quiet", *extra]
    return ["run", "--dataset", "weather", "--data-dir", str(root)], rest


def test_member_forecasts_are_reused_for_the_file_by_name_or_by_path(tmp_path):
    # The key is what the member sees, not how the command line named the data.
    path = _registered_copy(tmp_path / "data")
    out = tmp_path / "r"
    by_name, rest = _by_name(tmp_path / "data", out)
    assert main([*by_name, *rest]) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert reused_members(out) == 0
    assert main(["run", "--data-path", str(path), *rest]) == 0
    assert reused_members(out) == 2
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["dataset"] == "weather" and res["test"] == first["test"]
    assert main([*by_name, *rest]) == 0  # and back
    assert reused_members(out) == 4


def test_member_forecasts_are_reused_with_the_default_target_named(tmp_path):
    out = tmp_path / "r"
    by_name, rest = _by_name(_registered_copy(tmp_path / "data").parents[1], out)
    assert main([*by_name, *rest]) == 0
    assert main([*by_name, "--target", "OT", *rest]) == 0
    assert reused_members(out) == 2
    # another target is another forecast (the channels are reordered, target last)
    assert main([*by_name, "--target", "x0", *rest]) == 0
    assert reused_members(out) == 2
    for features in ("S", "MS"):  # and so is another feature set
        assert main([*by_name, "--target", "x0", "--features", features, *rest]) == 0
        assert reused_members(out) == 2
    assert main([*by_name, "--target", "x0", "--features", "MS", *rest]) == 0
    assert reused_members(out) == 4


def test_ms_members_fit_to_the_target_are_reused_and_all_channel_fits_refitted(
    synth_csv, tmp_path, monkeypatch
):
    # DLinear and LightGBM fit the target alone under MS since the twenty-eighth session:
    # their caches are reused as such, and a cache of an all-channel fit (keyed without
    # the loss channels, as older versions wrote it) is refitted, not reported as new
    from classical.dlinear import DLinear

    csv, out = synth_csv(n=1400), tmp_path / "ms"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--features", "MS", "--target", "x0"]
    argv += ["--members", "dlinear@epochs=1,lightgbm@rounds=5", "--out", str(out), "--quiet"]
    with monkeypatch.context() as m:
        m.setattr(DLinear, "uses_loss_channels", False)  # the key an older version wrote
        assert main(argv) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert main(argv) == 0
    assert reused_members(out) == 1  # LightGBM only: DLinear's old-key cache is refitted
    assert main(argv) == 0
    assert reused_members(out) == 3  # both now
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["test"] == first["test"]  # the refit is the fit the first run made
    with np.load(out / "forecasts.npz") as z:
        assert z["test/dlinear@epochs=1"].shape[-1] == 1  # the target only


def test_forecasts_saved_before_a_member_forecast_otherwise_are_fitted_again(
    synth_csv, tmp_path, monkeypatch
):
    # DLinear's patience 0 stopped at the first epoch without improvement before aa79775
    # (and a diverged fit was kept): reused, such forecasts passed as today's
    from classical.dlinear import DLinear

    csv, out = synth_csv(n=1400), tmp_path / "r"
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "dlinear@epochs=1,naive", "--out", str(out), "--quiet"]
    with monkeypatch.context() as m:
        m.setattr(DLinear, "cache_version", 0)  # the key earlier code wrote
        assert main(argv) == 0
    assert main(argv) == 0
    assert reused_members(out) == 1  # naive only
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "dlinear@epochs=1: its saved forecasts are of other settings, or of a version" in log
    assert main(argv) == 0
    assert reused_members(out) == 3  # and both now: DLinear's new forecasts are reused


def test_member_forecasts_are_refitted_for_another_file_of_the_same_name(tmp_path):
    out = tmp_path / "r"
    by_name, rest = _by_name(_registered_copy(tmp_path / "data").parents[1], out)
    assert main([*by_name, *rest]) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))

    def reverse(df):
        df["OT"] = df["OT"].to_numpy()[::-1]
        return df

    other = _registered_copy(tmp_path / "other", edit=reverse)
    assert main(["run", "--data-path", str(other), *rest]) == 0
    assert reused_members(out) == 0
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["test"] != first["test"]
    assert main(["run", "--data-path", str(other), *rest, "--percent", "50"]) == 0
    assert reused_members(out) == 0  # fewer train windows: other rows, refitted


def _old_style_key(cfg: dict, periods: list[int]) -> str:
    """The member cache key the versions before the data-keyed one wrote."""
    import hashlib

    names = ("dataset", "data_path", "features", "target", "fill")
    names += ("seq_len", "pred_len", "percent", "seed")
    d = {k: cfg[k] for k in names} | {"member_params": {}, "periods": periods}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_member_caches_of_earlier_versions_are_still_reused(tmp_path):
    # Existing run folders hold forecasts that took an hour (Time-LLM): a cache keyed the
    # old way counts when the run is spelled as before; respelled, it is refitted once.
    path = _registered_copy(tmp_path / "data")
    out = tmp_path / "r"
    by_name, rest = _by_name(tmp_path / "data", out)
    assert main([*by_name, *rest]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    old = _old_style_key(
        cfg, json.loads((out / "results.json").read_text(encoding="utf-8"))["periods"]
    )
    for member in ("naive", "snaive"):
        cache = out / "members" / member / "forecasts.npz"
        with np.load(cache) as z:
            kept = {k: z[k] for k in ("val", "test", "timings", "data", "dates")}
        np.savez(cache, key=np.array(old), **kept)
    assert main([*by_name, *rest]) == 0
    assert reused_members(out) == 2
    assert (out / "run.log").read_text(encoding="utf-8").count("(saved by an earlier version)") == 2
    assert main(["run", "--data-path", str(path), "--target", "OT", *rest]) == 0
    assert reused_members(out) == 2  # respelled: refitted, under the new key
    assert main([*by_name, *rest]) == 0
    assert reused_members(out) == 4
    assert main([*by_name, *rest, "--pred-len", "12"]) == 0  # a real change still refits
    assert reused_members(out) == 4


def _drop_timings(cache) -> None:
    with np.load(cache) as z:
        kept = {k: z[k] for k in z.files if k != "timings"}
    np.savez(cache, **kept)


def _rewrite_test(change):
    def damage(cache) -> None:
        with np.load(cache) as z:
            kept = {k: z[k] for k in z.files}
        kept["test"] = change(kept["test"])
        np.savez(cache, **kept)

    return damage


def _one_nan(test: np.ndarray) -> np.ndarray:
    test = test.copy()
    test[3, 0, 0] = np.nan
    return test


@pytest.mark.parametrize(
    "damage,what",
    [
        (lambda c: c.write_bytes(c.read_bytes()[:1000]), "BadZipFile"),  # a copy cut short
        (lambda c: c.write_bytes(b""), "EOFError|ValueError"),  # numpy 2 | numpy 1
        (_drop_timings, "KeyError"),
        # reused, a NaN stopped the run; a window short scored the wrong windows
        (_rewrite_test(_one_nan), "non-finite forecasts"),
        (_rewrite_test(lambda t: t[:-1]), "forecasts of shape"),
    ],
)
def test_a_damaged_member_cache_is_refitted(synth_csv, tmp_path, caplog, damage, what):
    out = tmp_path / "r"
    csv = synth_csv(n=1400)
    assert main(synth_run_argv(csv, out)) == 0
    before = json.loads((out / "results.json").read_text(encoding="utf-8"))["test"]
    cache = out / "members" / "snaive" / "forecasts.npz"
    damage(cache)
    caplog.clear()
    assert main(synth_run_argv(csv, out)) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "member snaive: damaged cache" in warned[0], warned
    assert re.search(what, warned[0]) and warned[0].endswith("refitting")
    assert "damaged cache" in (out / "run.log").read_text(encoding="utf-8")
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["test"] == before
    with np.load(cache) as z:  # replaced by a whole one, reused from now on
        assert {"val", "test", "timings"} <= set(z.files)
    assert main(synth_run_argv(csv, out)) == 0
    assert (out / "run.log").read_text(encoding="utf-8").count("snaive: reusing forecasts") == 1


def test_a_member_whose_backbone_files_changed_is_fitted_again(
    synth_csv, tmp_path, monkeypatch, caplog
):
    # Time-LLM's forecasts were reused for another model copied to the same backbone
    # path: the cache is now stamped with the folder's content (`identity_stamps`)
    from classical.naive import SeasonalNaive

    out, csv = tmp_path / "r", synth_csv(n=1400)
    content = {"backbone": "base"}
    monkeypatch.setattr(SeasonalNaive, "identity_stamps", lambda self: dict(content), raising=False)
    assert main(synth_run_argv(csv, out)) == 0
    assert main(synth_run_argv(csv, out)) == 0
    log_text = (out / "run.log").read_text(encoding="utf-8")
    assert log_text.count("snaive: reusing forecasts") == 1
    content["backbone"] = "instruct"
    caplog.clear()
    assert main(synth_run_argv(csv, out)) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("files in its backbone folder changed" in w for w in warned), warned
    assert (out / "run.log").read_text(encoding="utf-8").count("snaive: reusing forecasts") == 1


@pytest.mark.parametrize("missing", [("data", "dates"), ("dates",)])
def test_a_cache_without_the_data_stamps_is_fitted_again(tmp_path, missing):
    # caches of versions before the data (11-22) and timestamps (12-05) were stamped were
    # reused on a changed file: an edited test value kept naive's old forecasts
    out = tmp_path / "r"
    by_name, rest = _by_name(_registered_copy(tmp_path / "data").parents[1], out)
    assert main([*by_name, *rest]) == 0
    cache = out / "members" / "naive" / "forecasts.npz"
    with np.load(cache) as z:
        kept = {k: z[k] for k in z.files if k not in missing}
    np.savez(cache, **kept)
    assert main([*by_name, *rest]) == 0
    assert reused_members(out) == 1  # snaive; naive fitted again, and said why
    assert "did not stamp the data's " + " and ".join(missing) in (out / "run.log").read_text(
        encoding="utf-8"
    )


def test_a_reused_member_is_credited_to_the_code_that_fitted_it(
    synth_csv, tmp_path, monkeypatch, caplog
):
    # results.json's environment names this run's code; a reused member's forecasts came
    # from an earlier fit, perhaps before a fix to the member
    import experiments.run as run_module

    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out)
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text(encoding="utf-8"))["member_fits"]
    mine = {
        "code": run_module.code_label(),
        "tree": run_module.code_tree(),
        "reused": False,
        "packages": run_module.fitted_with(),
    }
    assert first and all(t == mine for t in first.values())
    # a later commit that changed only docs or tests: the same code, nothing to say
    monkeypatch.setattr(run_module, "code_label", lambda: "0123456789ab")
    monkeypatch.setattr(run_module, "code_tree", lambda: "the same tree")
    for fit in first.values():
        fit["tree"] = "the same tree"
    with caplog.at_level(logging.WARNING):
        run_module.say_who_fitted(first, out / "members", "forecasts reused")
    assert "from a fit by code" not in caplog.text
    monkeypatch.setattr(run_module, "code_tree", lambda: "another tree")  # other code
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))["member_fits"]
    assert all(t["reused"] and t["code"] == first[m]["code"] for m, t in again.items())
    # once for all of them, not a line per member (a student's edited checkout: 5 lines)
    said = [r.getMessage() for r in caplog.records if "from a fit by code" in r.getMessage()]
    assert len(said) == 1, said
    assert f": forecasts reused from a fit by code {first['naive']['code']}" in said[0]
    assert all(m in said[0].split(":")[0] for m in first)


def test_a_member_fitted_under_other_package_versions_is_said_once(
    synth_csv, tmp_path, monkeypatch, caplog
):
    # a cache fitted under lightgbm 4.5 was reused silently under 4.6: only the code was
    # compared, and another library forecasts otherwise for the same settings
    import experiments.run as run_module

    out = tmp_path / "r"
    argv = synth_run_argv(synth_csv(n=1400), out)
    assert main(argv) == 0
    now = run_module.fitted_with()
    assert "torch" in now and "lightgbm" in now and "hybrid-forecast" not in now
    with np.load(out / "members" / "naive" / "forecasts.npz") as z:
        assert json.loads(str(z["timings"]))["packages"] == now
    fits = json.loads((out / "results.json").read_text(encoding="utf-8"))["member_fits"]
    assert all(f["packages"] == now for f in fits.values())
    old = now["lightgbm"]
    monkeypatch.setattr(run_module, "fitted_with", lambda: {**now, "lightgbm": "9.9.9"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    said = [r.getMessage() for r in caplog.records if "package versions" in r.getMessage()]
    assert said == [
        f"naive, snaive: forecasts reused from fits under other package versions (lightgbm "
        f"{old} -> 9.9.9); delete their folders in {out / 'members'} to fit them with these"
    ]
    again = json.loads((out / "results.json").read_text(encoding="utf-8"))["member_fits"]
    assert all(f["reused"] and f["packages"] == now for f in again.values())
    # a cache written before the versions were recorded: nothing to compare, nothing said
    cache = out / "members" / "snaive" / "forecasts.npz"
    with np.load(cache) as z:
        kept = {k: z[k] for k in z.files}
    timings = json.loads(str(kept["timings"]))
    del timings["packages"]
    kept["timings"] = np.array(json.dumps(timings))
    np.savez(cache, **kept)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    said = [r.getMessage() for r in caplog.records if "package versions" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("naive: forecasts reused"), said
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert (
        res["member_fits"]["snaive"]["packages"] is None and res["member_fits"]["snaive"]["reused"]
    )
    assert "packages" not in res["timings_s"]["snaive"]  # timings_s keeps its seconds only


def _no_weights(model):
    (model / "state_dict.pt").unlink()


def _garbage_config(model):
    (model / "config.json").write_text("garbage\n", encoding="utf-8")


def _same_size_garbage(model):  # the manifest's sizes agree: the JSON must still parse
    size = (model / "config.json").stat().st_size
    (model / "config.json").write_text("x" * size, encoding="utf-8")


def _legacy_emptied(model):  # saved before the manifest: an empty folder is known bad
    for f in model.iterdir():
        f.unlink()


@pytest.mark.parametrize(
    "damage,what",
    [
        (_no_weights, "no state_dict.pt"),
        (_garbage_config, "config.json is"),
        (_same_size_garbage, "config.json cannot be read: JSONDecodeError"),
        (_legacy_emptied, "(empty)"),
    ],
)
def test_a_damaged_model_folder_is_refitted(synth_csv, tmp_path, caplog, damage, what):
    # its forecasts were reused: results.json lost the member's training curve and
    # `forecast` failed on the model later
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,dlinear@epochs=1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    before = json.loads((out / "results.json").read_text(encoding="utf-8"))
    model = out / "members" / "dlinear_epochs=1" / "model"
    listed = json.loads((model / "saved_files.json").read_text(encoding="utf-8"))["files"]
    assert set(listed) == {"state_dict.pt", "config.json"}
    damage(model)
    caplog.clear()
    assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(
        f"member dlinear@epochs=1: damaged model folder {model} ("
    ), warned
    assert what in warned[0] and warned[0].endswith("refitting"), warned
    after = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert after["training"] == before["training"] and after["test"] == before["test"]
    assert not after["member_fits"]["dlinear@epochs=1"]["reused"]
    assert after["member_fits"]["naive"]["reused"]
    assert main(argv) == 0  # saved whole again: reused from now on
    assert (out / "run.log").read_text(encoding="utf-8").count(
        "dlinear@epochs=1: reusing forecasts"
    ) == 1
