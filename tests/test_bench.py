"""The bench grid: resume after a kill, aggregation, the table beside published numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REAL_DATA

from ensemble.errors import UserError
from experiments.bench import (
    BenchSpec,
    bench_markdown,
    cell_config,
    cell_done,
    cell_folder,
    collect,
    plan,
    plot_bench,
    run_bench,
    summarise,
    validate,
)
from experiments.reference import build_reference, load_reference

# beside the data folder (../shared): found from $HYBRID_FORECAST_DATA for a checkout elsewhere
SHARED_FACTS = REAL_DATA.parent / "reference" / "published_results.csv"


def _spec(csv: Path, out: Path, **kw) -> BenchSpec:
    d = dict(
        datasets=[str(csv)],
        horizons=[24],
        seeds=[0, 1],
        members=["naive", "snaive", "window_mean"],
        router="mean",
        seq_len=96,
        out=str(out),
    )
    d.update(kw)
    return BenchSpec(**d)


def fake_run(cfg, progress: bool = False) -> dict:
    """Writes the results.json a real run would (the bench only reads that file)."""
    from ensemble.io import write_json, write_text

    write_text(Path(cfg.out) / "config.yaml", cfg.to_yaml())
    rng = np.random.default_rng(cfg.seed)
    names = list(cfg.members) + ["ensemble"]
    res = {
        "dataset": Path(cfg.data_path).stem if cfg.data_path else cfg.dataset,
        "seq_len": cfg.seq_len,
        "pred_len": cfg.pred_len,
        "seed": cfg.seed,
        "members": list(cfg.members),
        "router": cfg.router,
        "val": {n: {"mse": 0.5, "mae": 0.5} for n in names},
        "test": {n: {"mse": float(0.4 + 0.1 * rng.random()), "mae": 0.45} for n in names},
        "timings_s": {n: {"fit": 0.5, "predict": 0.1} for n in cfg.members},
        "periods": [24, 12],
    }
    write_json(Path(cfg.out) / "results.json", res)
    return res


def test_a_second_bench_on_the_same_folder_is_refused_and_changes_nothing(synth_csv, tmp_path):
    # it replaced bench_spec.json with its own grid before stopping at a busy cell, and
    # --report-only then reported that grid
    from ensemble.errors import UserError
    from ensemble.io import FolderLock

    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    held = FolderLock(spec.out)  # the first bench, still running
    try:
        with pytest.raises(UserError, match="another bench is writing to"):
            run_bench(spec, progress=False, run_fn=lambda cfg: pytest.fail("ran a cell"))
    finally:
        held.release()
    assert not (Path(spec.out) / "bench_spec.json").exists()
    assert run_bench(spec, progress=False, run_fn=fake_run)["ran"]  # free again


def test_a_cell_another_command_is_using_is_skipped_and_the_grid_goes_on(synth_csv, tmp_path):
    # a run of its own started by hand, or an analyse of it: the bench stopped at it and
    # never tried the cells after it
    from ensemble.io import FolderLock

    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    first, second = plan(spec)
    (busy_folder := cell_folder(spec, first)).mkdir(parents=True)
    held = FolderLock(busy_folder)
    try:
        info = run_bench(spec, progress=False, run_fn=fake_run)
    finally:
        held.release()
    assert (info["busy"], info["ran"]) == ([first.name], [second.name])
    assert run_bench(spec, progress=False, run_fn=fake_run)["ran"] == [first.name]  # later


def test_bench_resumes_after_a_kill(synth_csv, tmp_path):
    run = fake_run
    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    calls: list[str] = []

    def killed_on_second(cfg):
        calls.append(cfg.out)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C (or a kill) in the middle of cell 2
        return run(cfg, progress=False)

    with pytest.raises(KeyboardInterrupt):
        run_bench(spec, progress=False, run_fn=killed_on_second)
    cells = plan(spec)
    assert [cell_done(spec, c) for c in cells] == [True, False]

    calls.clear()
    info = run_bench(
        spec,
        progress=False,
        run_fn=lambda cfg: (calls.append(cfg.out), run(cfg, progress=False))[1],
    )
    assert len(calls) == 1 and calls[0].endswith(cells[1].name)
    assert info["skipped"] == [cells[0].name] and info["ran"] == [cells[1].name]

    # a third start has nothing left to do
    calls.clear()
    info = run_bench(spec, progress=False, run_fn=lambda cfg: calls.append(cfg.out))
    assert calls == [] and len(info["skipped"]) == 2

    out = Path(spec.out)
    long = pd.read_csv(out / "bench.csv")
    assert set(long["seed"]) == {0, 1}
    assert {"naive", "snaive", "window_mean", "ensemble"} <= set(long["forecast"])
    assert {"mse", "mae", "fit_s", "periods"} <= set(long.columns)
    assert (long["periods"] == "24+12").all()  # each cell's analyser periods
    for cell in cells:  # every row is its cell's results.json, field for field
        res = json.loads((out / "cells" / cell.name / "results.json").read_text(encoding="utf-8"))
        rows = long[long["seed"] == res["seed"]].set_index("forecast")
        for name, s in res["test"].items():
            assert rows.loc[name, "mse"] == pytest.approx(s["mse"])
            assert rows.loc[name, "mae"] == pytest.approx(s["mae"])
    md = (out / "bench.md").read_text(encoding="utf-8")
    assert "±" in md and "synth" in md
    assert (out / "bench_mse.png").is_file() and (out / "bench.log").is_file()


def test_cell_with_other_settings_is_not_done(synth_csv, tmp_path):
    # A rerun of the grid in the same folder with other members, features or --set must
    # not report the old cell's numbers under the new settings.
    spec = _spec(synth_csv(n=1200), tmp_path / "bench", seeds=[0])
    cell = plan(spec)[0]
    fake_run(cell_config(spec, cell))
    assert cell_done(spec, cell)
    for change in (
        dict(members=["naive", "snaive"]),
        dict(features="S"),
        dict(member_params={"snaive": {"period": 12}}),
        dict(router="median"),
    ):
        other = _spec(synth_csv(n=1200), tmp_path / "bench", seeds=[0], **change)
        assert not cell_done(other, cell), change
    (Path(spec.out) / "cells" / cell.name / "config.yaml").unlink()  # an unfinished write
    assert not cell_done(spec, cell)


def test_a_grid_of_other_features_runs_beside_the_cells_not_over_them(synth_csv, tmp_path):
    import shutil

    csv = synth_csv(n=1200)
    m_grid = _spec(csv, tmp_path / "bench", seeds=[0])
    run_bench(m_grid, progress=False, run_fn=fake_run)
    m_cell = plan(m_grid)[0]
    m_results = (Path(m_grid.out) / "cells" / m_cell.name / "results.json").read_bytes()
    s_grid = _spec(csv, tmp_path / "bench", seeds=[0], features="S")
    info = run_bench(s_grid, progress=False, run_fn=fake_run)
    s_cell = plan(s_grid)[0]
    assert info["ran"] == [s_cell.name] and s_cell.name != m_cell.name
    assert cell_done(m_grid, m_cell) and cell_done(s_grid, s_cell)
    assert (Path(m_grid.out) / "cells" / m_cell.name / "results.json").read_bytes() == m_results

    # an S cell run before the features were in the name keeps its folder: not rerun
    old = _spec(csv, tmp_path / "old", seeds=[0], features="S")
    shutil.copytree(Path(s_grid.out) / "cells" / s_cell.name, Path(old.out) / "cells" / m_cell.name)
    cfg_file = Path(old.out) / "cells" / m_cell.name / "config.yaml"
    cfg_file.write_text(
        cfg_file.read_text(encoding="utf-8").replace(str(tmp_path / "bench"), old.out),
        encoding="utf-8",
    )
    info = run_bench(old, progress=False, run_fn=fake_run)
    assert info["ran"] == [] and info["skipped"] == [s_cell.name]
    # and an M grid there runs beside it instead of replacing it
    old_s = (Path(old.out) / "cells" / m_cell.name / "results.json").read_bytes()
    m_there = _spec(csv, tmp_path / "old", seeds=[0])
    info = run_bench(m_there, progress=False, run_fn=fake_run)
    assert info["ran"] == [m_cell.name] and cell_done(m_there, m_cell)
    assert (Path(old.out) / "cells" / m_cell.name / "results.json").read_bytes() == old_s
    assert sorted(p.name for p in (Path(old.out) / "cells").iterdir()) == [
        m_cell.name,
        m_cell.name.replace("_96_", "_M_96_", 1),
    ]


def test_a_damaged_cell_is_run_again_not_read(synth_csv, tmp_path, caplog):
    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    run_bench(spec, progress=False, run_fn=fake_run)
    cells = plan(spec)
    path = Path(spec.out) / "cells" / cells[0].name / "results.json"
    path.write_text(path.read_text(encoding="utf-8")[:200], encoding="utf-8")  # cut short
    assert not cell_done(spec, cells[0]) and cell_done(spec, cells[1])
    assert set(collect(spec)["seed"]) == {1}  # no traceback: the damaged cell is left out
    ran: list[str] = []
    info = run_bench(spec, progress=False, run_fn=lambda c: (ran.append(c.out), fake_run(c))[1])
    assert info["ran"] == [cells[0].name] and len(ran) == 1
    assert "results.json is damaged; the cell is run again" in caplog.text
    assert set(pd.read_csv(Path(spec.out) / "bench.csv")["seed"]) == {0, 1}
    res = json.loads(path.read_text(encoding="utf-8"))
    res["test"]["naive"]["mse"] = None  # an MSE that overflowed: written as null, no damage
    path.write_text(json.dumps(res), encoding="utf-8")
    assert cell_done(spec, cells[0])


def test_two_files_with_one_name_are_refused(synth_csv, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    csv = synth_csv(n=1200)
    for d in (a, b):
        (d / "x.csv").write_bytes(csv.read_bytes())
    spec = _spec(csv, tmp_path / "bench", datasets=[str(a / "x.csv"), str(b / "x.csv")])
    with pytest.raises(UserError, match="more than once"):
        validate(spec)


def test_failed_cell_does_not_stop_the_grid(synth_csv, tmp_path):
    spec = _spec(synth_csv(n=1200), tmp_path / "bench")

    def flaky(cfg):
        raise RuntimeError("boom")

    info = run_bench(spec, progress=False, run_fn=flaky)
    assert len(info["failed"]) == 2 and "boom" in next(iter(info["failed"].values()))
    assert "boom" in (Path(spec.out) / "bench.log").read_text(encoding="utf-8")


def test_a_refused_cell_is_its_own_failure_and_the_grid_goes_on(synth_csv, tmp_path, capsys):
    # a cell folder holding the user's notes raised UserError: the bench exited 2 at that
    # cell, the cells after it never ran, no bench.md, and every rerun stopped there
    from experiments.cli import main

    out = tmp_path / "bench"
    notes = out / "cells" / "synth_96_24_s0"
    notes.mkdir(parents=True)
    (notes / "results.md").write_text("notes\n", encoding="utf-8")
    argv = ["bench", "--datasets", str(synth_csv(n=1200)), "--horizons", "24,48"]
    argv += ["--seeds", "0,1", "--seq-len", "96", "--members", "naive,snaive"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 1  # as for any failed cell
    printed = capsys.readouterr().out
    assert "bench: 3 cells ran, 0 already done, 1 failed" in printed
    assert f"failed synth_96_24_s0: {notes} holds results.md but is not a run folder" in printed
    assert (out / "bench.md").is_file() and (notes / "results.md").read_text(
        encoding="utf-8"
    ) == "notes\n"
    assert set(pd.read_csv(out / "bench.csv")["pred_len"]) == {24, 48}


def test_refusals_that_differ_by_cell_do_not_stop_the_grid(synth_csv, tmp_path):
    # the same refusal for the first two cells is about every cell (test above); refusals
    # naming each its own cell, or the same words after a cell has run, are the cells'
    spec = _spec(synth_csv(n=1200), tmp_path / "bench", seeds=[0, 1, 2])

    def own(cfg):
        raise UserError(f"member naive failed in {cfg.out}")

    info = run_bench(spec, progress=False, run_fn=own)
    assert sorted(info["failed"]) == [c.name for c in plan(spec)] and info["ran"] == []
    assert (Path(spec.out) / "bench.md").is_file()

    def after_one(cfg):
        if cfg.seed == 0:
            return fake_run(cfg)
        raise UserError("the same words")

    info = run_bench(spec, progress=False, run_fn=after_one)
    assert info["ran"] == [plan(spec)[0].name] and len(info["failed"]) == 2

    # the seeds of one dataset refused alike (a GPU out of memory at its size): the other
    # dataset's cells still run
    other = synth_csv(n=1200, name="other.csv")
    spec = _spec(other, tmp_path / "two", datasets=[spec.datasets[0], str(other)])

    def too_big(cfg):
        if "other" not in cfg.data_path:
            raise UserError("GPU out of memory")
        return fake_run(cfg)

    info = run_bench(spec, progress=False, run_fn=too_big)
    assert len(info["failed"]) == 2 and len(info["ran"]) == 2


@pytest.mark.parametrize("progress", [False, True])
def test_a_failed_cell_says_one_line_on_the_console_and_its_traceback_in_bench_log(
    progress, synth_csv, tmp_path
):
    # the console got a 15-line traceback per failed cell
    import io
    import logging

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    logging.getLogger().addHandler(console)

    def flaky(cfg):
        raise RuntimeError("boom")

    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    try:
        run_bench(spec, progress=progress, run_fn=flaky)
    finally:
        logging.getLogger().removeHandler(console)
    said = stream.getvalue()
    assert said.count("failed: RuntimeError: boom") == 2 and "Traceback" not in said
    log = (tmp_path / "bench" / "bench.log").read_text(encoding="utf-8")
    assert log.count("Traceback (most recent call last)") == 2 and "in flaky" in log


def test_csv_cells_are_the_same_file_from_any_working_directory(
    synth_csv, tmp_path, monkeypatch, capsys
):
    # a cell's config.yaml kept the path as typed: rerun from elsewhere it read no file,
    # and the bench run from another folder ran every finished cell again, or took
    # another file of the same relative path for the one it ran
    import experiments.run
    from experiments.cli import main
    from experiments.config import RunConfig

    monkeypatch.setattr(experiments.run, "run", fake_run)
    for d, n in (("a", 1200), ("b", 1300)):  # b/data/x.csv: other data, the same spelling
        (tmp_path / d / "data").mkdir(parents=True)
        synth_csv(n=n).replace(tmp_path / d / "data" / "x.csv")
    out = tmp_path / "bench"
    argv = ["bench", "--horizons", "24", "--seeds", "0", "--seq-len", "96", "--members"]
    argv += ["naive", "--out", str(out), "--quiet", "--datasets"]

    def bench(cwd: str, *flags: str) -> str:
        monkeypatch.chdir(tmp_path / cwd)
        capsys.readouterr()
        assert main([*argv, *flags]) == 0
        return capsys.readouterr().out

    assert "1 cells ran" in bench("a", "data/x.csv", "--data-dir", "data")
    cfg = RunConfig.from_file(out / "cells" / "x_96_24_s0" / "config.yaml")
    assert cfg.data_path == str(tmp_path / "a" / "data" / "x.csv")
    assert cfg.data_dir == str(tmp_path / "a" / "data")
    assert "0 cells ran, 1 already done" in bench(".", "a/data/x.csv", "--data-dir", "a/data")
    assert "1 cells ran, 0 already done" in bench("b", "data/x.csv", "--data-dir", "data")

    # a cell of a bench from before, its path recorded as typed: done from where it ran
    old = _spec("data/x.csv", out, seeds=[0], members=["naive"])
    monkeypatch.chdir(tmp_path / "a")
    fake_run(cell_config(old, plan(old)[0]))
    assert RunConfig.from_file(out / "cells" / "x_96_24_s0" / "config.yaml").data_path == (
        "data/x.csv"
    )
    now = _spec(str(tmp_path / "a" / "data" / "x.csv"), out, seeds=[0], members=["naive"])
    assert cell_done(now, plan(now)[0])
    monkeypatch.chdir(tmp_path / "b")  # from here the old path names another file
    assert not cell_done(now, plan(now)[0])


def test_table_shows_published_numbers_with_sources():
    spec = BenchSpec(
        datasets=["ETTh1"], horizons=[96, 192], seeds=[0, 1, 2], members=["dlinear"], seq_len=512
    )
    rows = []
    for h in (96, 192):
        for seed in (0, 1, 2):
            for f, v in (("dlinear", 0.38), ("ensemble", 0.37)):
                rows.append(
                    dict(
                        dataset="ETTh1",
                        seq_len=512,
                        pred_len=h,
                        seed=seed,
                        forecast=f,
                        mse=v + 0.01 * seed,
                        mae=0.1235 if f == "dlinear" else 0.1233,  # a tie when printed (".3f")
                        val_mse=0.7,
                        fit_s=1.0,
                        predict_s=0.1,
                    )
                )
    summary = summarise(pd.DataFrame(rows))
    row = summary[(summary["forecast"] == "dlinear") & (summary["pred_len"] == 96)].iloc[0]
    assert (
        row["mse"] == pytest.approx(0.39)
        and row["mse_std"] == pytest.approx(0.01)
        and row["n"] == 3
    )
    md = bench_markdown(spec, summary)
    assert "0.390 ± 0.010" in md
    assert "DLinear" in md and "0.375" in md  # LTSF-Linear's ETTh1-96
    assert "LTSF-Linear LTSF-Benchmark.md" in md and "Lookback 336 (ours: 512)" in md
    assert "drop_last" in md
    mae = md.split("test MAE")[1].split("\n## ")[0]
    # tied as printed: both bold, at both H; the same every seed, not "± 0.000"
    assert mae.count("**0.123 (every seed)**") == 4 and "± 0.000" not in md
    # a published number of another lookback says so in its head, not only in a footnote
    assert "| DLinear (L=336) [" in md and "not a test of significance" in md
    # every table row has as many cells as its header (else Markdown renders no table)
    tables = [b for b in md.split("\n\n") if b.startswith("| H |")]
    assert len(tables) == 2
    for table in tables:
        cells = {line.count("|") for line in table.splitlines()}
        assert len(cells) == 1, table
    # a file named ETTh1 that is not the published one: no published number beside it
    md = bench_markdown(spec, summary, unpublished={"ETTh1"})
    assert "0.375" not in md and "No published numbers beside ETTh1" in md
    # published numbers are multivariate: an MS bench shows none of them
    spec.features = "MS"
    md = bench_markdown(spec, summary)
    assert "0.375" not in md and "features MS" in md and "not shown" in md


def test_a_cell_short_of_seeds_or_diverged_says_so_and_is_not_bold():
    spec = BenchSpec(datasets=["ETTh1"], horizons=[96], seeds=[0, 1, 2], members=["a", "b", "c"])
    rows = []
    for seed in (0, 1, 2):
        for f, v in (("a", 0.40), ("b", 0.30), ("c", 0.50)):
            if f == "b" and seed == 2:  # b's third seed failed: 2 of 3
                continue
            mse = np.inf if (f == "c" and seed == 1) else v + 0.01 * seed  # overflowed
            rows.append(
                dict(
                    dataset="ETTh1",
                    seq_len=96,
                    pred_len=96,
                    seed=seed,
                    forecast=f,
                    mse=mse,
                    mae=v,
                    val_mse=0.7,
                    fit_s=1.0,
                    predict_s=0.1,
                )
            )
    md = bench_markdown(spec, summarise(pd.DataFrame(rows)))
    mse = md.split("— test MSE")[1].split("\n## ")[0]
    assert "0.305 ± 0.007 (2 of 3 seeds)" in mse and "**0.305" not in mse  # lowest, not bold
    assert "**0.410 ± 0.010**" in mse  # the best of the complete cells
    assert "inf (diverged)" in mse  # was averaged over the other seeds and could be bold


def test_repeated_seeds_or_horizons_are_refused(synth_csv, tmp_path):
    for kw in (dict(seeds=[0, 0, 1]), dict(horizons=[24, 24])):
        with pytest.raises(UserError, match="twice"):
            validate(_spec(synth_csv(n=1200), tmp_path / "bench", **kw))


def test_reference_table_keeps_every_fact_and_source():
    ref = load_reference()
    assert ref["source"].str.len().min() > 0
    assert not (ref["protocol_note"].str.lower() == "same").any()  # ditto resolved
    dl = ref[(ref["model"] == "DLinear") & (ref["dataset"] == "ETTh1") & (ref["pred_len"] == 96)]
    assert dl["mse"].iloc[0] == pytest.approx(0.375) and dl["member"].iloc[0] == "dlinear"


def test_reference_table_is_built_from_the_shared_facts():
    # the packaged table must be what build_reference makes of the collected facts
    if not SHARED_FACTS.is_file():
        pytest.skip(f"{SHARED_FACTS} not found; set HYBRID_FORECAST_DATA to ../shared/data")
    ref = load_reference()
    built = build_reference(SHARED_FACTS)
    assert len(built) == len(ref)
    assert np.allclose(built["mse"].astype(float), ref["mse"], equal_nan=True)


def test_collect_ignores_cells_of_other_grids(synth_csv, tmp_path):
    spec = _spec(synth_csv(n=1200), tmp_path / "bench", seeds=[0])
    stray = Path(spec.out) / "cells" / "other_96_24_s5"
    stray.mkdir(parents=True)
    (stray / "results.json").write_text("{}", encoding="utf-8")
    assert collect(spec).empty


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """A finished `--router learned` run folder, and benchmarks/ on the import path."""
    import sys

    from conftest import synthetic_frame

    from experiments.cli import main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    tmp = tmp_path_factory.mktemp("learned")
    out = tmp / "run"
    csv = tmp / "synth.csv"
    synthetic_frame(1400, 3, 24).to_csv(csv, index=False)
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", "naive,snaive,window_mean", "--router", "learned"]
    assert main(argv + ["--out", str(out), "--quiet"]) == 0
    return out


def test_reroute_refits_the_learned_router_of_a_finished_run(learned_run):
    """benchmarks/reroute.py reproduces the run's own learned ensemble from the saved files."""
    from reroute import reroute

    out = learned_run
    row = reroute(out)
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert row["learned"] == round(res["test"]["ensemble"]["mse"], 4)
    assert row["mean"] == round(res["test"]["mean"]["mse"], 4)
    assert row["chosen"] in {"lgbm", "torch", "rules", "stacked"}


def test_channel_scripts_reproduce_the_library_rules(learned_run):
    """Pre-registrations 5 and 6: the scripts' rules are the library's, on a real run folder."""
    from channel_gate import score as gate_score
    from channel_stacked import score as channel_score

    res = json.loads((learned_run / "results.json").read_text(encoding="utf-8"))
    combiners = res["combiners"]
    row = channel_score(learned_run)  # raises if the library's stacked is not channel_in
    assert row["step_in"] == pytest.approx(combiners["stacked_pooled"]["test"]["mse"], rel=1e-6)
    assert row["channel_in"] == pytest.approx(combiners["stacked"]["test"]["mse"], rel=1e-6)
    assert row["mean"] == pytest.approx(res["test"]["mean"]["mse"], rel=1e-6)
    gate = gate_score(learned_run)  # raises if the library's gated choice is not G's
    assert gate["U"] == pytest.approx(res["test"]["ensemble"]["mse"], rel=1e-6)  # the default
    assert gate["U_chose"] == next(k for k, v in combiners.items() if v["chosen"]).replace(
        "learned_", ""
    )


def test_tilt_script_reproduces_the_library_rules(learned_run):
    """Pre-registration 7: the script's U is the run's ensemble, its tilt the run's reference."""
    from tilt_gate import score as tilt_score

    res = json.loads((learned_run / "results.json").read_text(encoding="utf-8"))
    row = tilt_score(learned_run)
    assert row["U"] == pytest.approx(res["test"]["ensemble"]["mse"], rel=1e-6)
    tilted = res["combiners"]["stacked_tilted"]["test"]["mse"]
    assert row["stacked_tilted"] == pytest.approx(tilted, rel=1e-6)
    assert row["T_chose"] in {"stacked_tilted", "lgbm", "torch", "rules"}
    if row["T_chose"] == "stacked_tilted":
        assert row["T"] == row["stacked_tilted"]


def _finished_bench(csv: Path, out: Path) -> BenchSpec:
    spec = _spec(csv, out)
    run_bench(spec, progress=False, run_fn=fake_run)
    return spec


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_report_only_refuses_a_grid_with_no_finished_cell(synth_csv, tmp_path, capsys):
    # The bench ran with L=96; a report for L=512 would replace its tables with empty ones.
    from experiments.cli import main

    spec = _finished_bench(synth_csv(n=1200), tmp_path / "bench")
    out = Path(spec.out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    argv = ["bench", "--report-only", "--out", str(out), "--datasets", spec.datasets[0]]
    assert main([*argv, "--horizons", "24", "--seeds", "0,1", "--seq-len", "512"]) == 2
    line = _one_error_line(capsys)
    assert "no finished cell" in line and "synth_96_24_s0" in line and "bench_spec.json" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_report_only_takes_the_grid_from_bench_spec(synth_csv, tmp_path, capsys):
    from experiments.cli import main

    spec = _finished_bench(synth_csv(n=1200), tmp_path / "bench")
    (Path(spec.out) / "bench.md").unlink()
    assert main(["bench", "--report-only", "--out", spec.out]) == 0
    md = (Path(spec.out) / "bench.md").read_text(encoding="utf-8")
    assert "Lookback L=96" in md and "## synth" in md and "No finished cells" not in md


@pytest.mark.parametrize("folder", ["missing", "run"])
def test_report_only_refuses_a_folder_that_is_no_bench(folder, tmp_path, capsys):
    from experiments.cli import main

    out = tmp_path / folder
    if folder == "run":  # a run folder: its files must stay as they are
        out.mkdir()
        (out / "results.json").write_text("{}", encoding="utf-8")
        (out / "config.yaml").write_text("seq_len: 96\n", encoding="utf-8")
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert main(["bench", "--report-only", "--out", str(out)]) == 2
    assert "--report-only rebuilds the tables of a bench" in _one_error_line(capsys)
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(seq_len=1100), "lower --seq-len or --horizons"),  # the second file is short
        (dict(members=["naive", "snaive@period=abc"]), "wrong type or value"),
    ],
)
def test_bad_data_or_member_fails_before_any_cell(change, needle, synth_csv, tmp_path):
    # Not after the first dataset's cells have run (hours, with real members).
    long_csv = synth_csv(n=4000, name="long.csv")
    short_csv = synth_csv(n=1200, name="short.csv")
    spec = _spec(long_csv, tmp_path / "bench", datasets=[str(long_csv), str(short_csv)], **change)
    calls: list[str] = []
    with pytest.raises(UserError, match=needle):
        run_bench(spec, progress=False, run_fn=lambda cfg: calls.append(cfg.out))
    assert calls == [] and not (tmp_path / "bench").exists()


def test_a_stop_on_bad_input_is_in_bench_log(synth_csv, tmp_path):
    first, second = synth_csv(n=1200, name="a.csv"), synth_csv(n=1200, name="b.csv")
    spec = _finished_bench(first, tmp_path / "bench")
    spec.datasets = [str(first), str(second)]
    spec.seeds = [0, 1, 2]  # a's s2, then b's cells: refused alike across datasets

    def refused(cfg):
        raise UserError("the cell refuses its input")

    stop = "cells a_96_24_s2 and b_96_24_s0 failed alike, as every cell would: "
    with pytest.raises(UserError, match=stop):
        run_bench(spec, progress=False, run_fn=refused)
    log = (Path(spec.out) / "bench.log").read_text(encoding="utf-8")
    assert f"stopped: {stop}the cell refuses its input" in log

    spec.members = ["naive", "snaive@period=abc"]  # refused before any cell: logged too
    with pytest.raises(UserError):
        run_bench(spec, progress=False, run_fn=refused)
    assert "stopped before any cell: snaive@period=abc" in (Path(spec.out) / "bench.log").read_text(
        encoding="utf-8"
    )


def test_the_mean_fit_time_leaves_out_resumed_members():
    # a Time-LLM fit resumed at its last epoch took 4 s of 280 s: the mean over seeds
    # (bench_summary.csv, bench_fit_time.png) would read 142 s
    base = dict(dataset="ETTh1", seq_len=512, pred_len=96, forecast="timellm", mse=0.4, mae=0.4)
    long = pd.DataFrame(
        [
            {**base, "seed": 0, "fit_s": 280.0, "resumed": False},
            {**base, "seed": 1, "fit_s": 4.0, "resumed": True},
            {**base, "seed": 2, "fit_s": 300.0, "resumed": False},
        ]
    )
    assert summarise(long)["fit_s"].iloc[0] == pytest.approx(290.0)
    assert np.isnan(summarise(long.assign(resumed=True))["fit_s"].iloc[0])
    assert summarise(long.drop(columns="resumed"))["fit_s"].iloc[0] == pytest.approx(584 / 3)


def test_a_real_bench_tabulates_the_mean_and_spread_of_its_cells(synth_csv, tmp_path, capsys):
    # every other bench test fakes the runs: here the command runs two real cells, and the
    # table must report their mean ± sample std, not one cell's numbers
    from experiments.cli import main

    out = tmp_path / "bench"
    argv = ["bench", "--datasets", str(synth_csv(n=1200)), "--horizons", "24", "--seeds", "0,1"]
    argv += ["--seq-len", "48", "--members", "naive,dlinear", "--set", "dlinear.epochs=1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "bench: 2 cells ran, 0 already done, 0 failed" in printed
    cells = [
        json.loads(
            (out / "cells" / f"synth_48_24_s{s}" / "results.json").read_text(encoding="utf-8")
        )
        for s in (0, 1)
    ]
    mse = {f: [c["test"][f]["mse"] for c in cells] for f in ("dlinear", "ensemble")}
    assert mse["dlinear"][0] != mse["dlinear"][1]  # the seeds differ: a spread to report
    summary = pd.read_csv(out / "bench_summary.csv").set_index("forecast")
    md = (out / "bench.md").read_text(encoding="utf-8")
    header, row = [line for line in md.splitlines() if line.startswith(("| H |", "| 24 |"))][:2]
    shown = dict(zip(header.split("|"), row.split("|"), strict=True))
    for f, values in mse.items():
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert summary.loc[f, "mse"] == pytest.approx(mean, rel=1e-5)
        assert summary.loc[f, "mse_std"] == pytest.approx(std, rel=1e-4)
        assert shown[f" {f} "].strip("* ") == f"{mean:.3f} ± {std:.3f}"
    assert f"ensemble test MSE {np.mean(mse['ensemble']):.4f} (2 seeds)" in printed


def test_each_warning_reaches_the_console_once_and_the_log_every_time(synth_csv, tmp_path):
    # four cells of a file that is not the published one said its warning five times
    import io
    import logging

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    logging.getLogger().addHandler(console)

    def warns(cfg):
        logging.getLogger("ensemble.data").warning("the file is not the published one")
        return fake_run(cfg)

    spec = _spec(synth_csv(n=1200), tmp_path / "bench", horizons=[24, 48])
    try:
        run_bench(spec, progress=False, run_fn=warns)
        assert console.filters == []  # the console says repeats again after the bench
    finally:
        logging.getLogger().removeHandler(console)
    assert stream.getvalue().count("not the published one") == 1
    log = (tmp_path / "bench" / "bench.log").read_text(encoding="utf-8")
    assert log.count("not the published one") == 4


def test_an_unknown_dataset_is_told_how_bench_takes_a_file(synth_csv, tmp_path):
    spec = _spec(synth_csv(n=1200), tmp_path / "bench", datasets=["ETTx"])
    with pytest.raises(UserError, match="path in --datasets") as exc:
        validate(spec)
    assert "--data-path" not in str(exc.value)  # run's flag; bench has none


def test_bench_csvs_keep_the_scores_at_full_precision(synth_csv, tmp_path):
    # float_format="%.6g": 0.41234567... read back as 0.412346, and ties or reruns
    # compared from the CSV looked equal when they were not
    spec = _finished_bench(synth_csv(n=1400), tmp_path / "b")
    long = pd.read_csv(tmp_path / "b" / "bench.csv")
    for folder in sorted((tmp_path / "b" / "cells").iterdir()):
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        mine = long[long["seed"] == res["seed"]].set_index("forecast")
        for name, score in res["test"].items():
            assert mine.loc[name, "mse"] == score["mse"]  # exactly, not approximately
    summary = pd.read_csv(tmp_path / "b" / "bench_summary.csv").set_index("forecast")
    for name, rows in long.groupby("forecast"):
        assert summary.loc[name, "mse"] == pytest.approx(rows["mse"].mean(), rel=1e-12)
    assert len(spec.seeds) == 2


def test_a_spread_below_the_printed_digits_is_not_shown_as_zero():
    from experiments.bench import _fmt

    assert _fmt(0.4, 0.0002, 3, 3) == "0.400 ± <0.001"  # was "0.400 ± 0.000"
    assert _fmt(0.4, 0.0, 3, 3) == "0.400 (every seed)"
    assert _fmt(0.4, 0.0012, 3, 3) == "0.400 ± 0.001"
    # read "1.267 (every seed) (2 of 3 seeds)": every seed, then not every seed
    assert _fmt(1.267, 0.0, 2, 3) == "1.267 (2 of 3 seeds, identical)"


def _tiny_grid(monkeypatch, csv: Path, flag: str, *values: str) -> list[str]:
    """bench's argv for a one-cell grid of ``csv`` with ``flag`` given ``values`` (once
    each) and runs faked: a refusal that regressed runs one instant cell, not the default
    grid."""
    import experiments.run

    monkeypatch.setattr(experiments.run, "run", fake_run)
    grid = {"--datasets": str(csv), "--horizons": "24", "--seeds": "0", "--seq-len": "96"}
    grid |= {"--members": "naive", "--router": "mean", "--out": "b"}
    grid.pop(flag, None)
    return ["bench", "--quiet", *(x for kv in grid.items() for x in kv)] + [
        x for v in values for x in (flag, v)
    ]


@pytest.mark.parametrize("flag", ["--out", "--data-dir", "--router", "--members", "--seeds"])
def test_an_empty_bench_flag_is_refused_not_taken_for_the_default(
    flag, synth_csv, tmp_path, monkeypatch, capsys
):
    # --out "" wrote the bench into the working folder; run refused it already
    from experiments.cli import main

    argv = _tiny_grid(monkeypatch, synth_csv(n=1200), flag, "")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(argv) == 2
    assert f"{flag} is empty: give a value, or drop {flag} for its default" in _one_error_line(
        capsys
    )
    assert list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.parametrize(
    "flag,values",
    [
        ("--seeds", ("0", "1")),
        ("--datasets", ("ETTh1", "ETTh2")),
        ("--horizons", ("24", "48")),
        ("--members", ("naive", "snaive")),
        ("--router", ("mean", "median")),
        ("--seq-len", ("96", "48")),
    ],
)
def test_a_repeated_grid_flag_is_refused(flag, values, synth_csv, tmp_path, monkeypatch, capsys):
    # argparse kept the last: `--seeds 0 --seeds 1` ran seed 1 alone
    from experiments.cli import main

    argv = _tiny_grid(monkeypatch, synth_csv(n=1200), flag, *values)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"{flag} is given twice ({values[0]} and {values[1]})" in line
    assert not (tmp_path / "b").exists()


def test_a_spec_setting_that_hides_a_set_is_said_by_bench(caplog):
    # run said so; bench used dlinear@epochs=2 without a word about --set dlinear.epochs=1
    import logging

    from experiments.cli import build_parser
    from experiments.cmd_bench import grid_spec

    argv = ["bench", "--members", "naive,dlinear@epochs=2", "--set", "dlinear.epochs=1"]
    with caplog.at_level(logging.WARNING):
        spec = grid_spec(build_parser().parse_args(argv))
    assert "dlinear@epochs=2 keeps epochs=2 (not 1)" in caplog.text
    assert spec.member_params == {"dlinear": {"epochs": 1}}


def test_bench_help_names_the_data_folder_it_falls_back_to():
    from experiments.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["bench"]
    assert "$HYBRID_FORECAST_DATA, else ./dataset" in " ".join(sub.format_help().split())


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots hand to ``save``, by file name (not written)."""
    import ensemble.figures

    saved: dict[str, object] = {}
    monkeypatch.setattr(
        ensemble.figures, "save", lambda fig, path, **kw: saved.update({Path(path).name: fig})
    )
    yield saved
    from ensemble.figures import pyplot

    pyplot().close("all")


def _summary(rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    """A bench summary of (forecast, H, mse, fit_s) rows, three seeds each."""
    return pd.DataFrame(
        [
            dict(dataset="ETTh1", pred_len=h, forecast=f, mse=v, mse_std=0.01, mae=v,
                 mae_std=0.01, fit_s=fit, n=3)
            for f, h, v, fit in rows
        ]
    )  # fmt: skip


def test_bench_error_plots_show_the_ensemble_the_bound_and_a_lone_published_point(
    figures, tmp_path
):
    spec = BenchSpec(
        datasets=["ETTh1"], horizons=[96], seeds=[0, 1, 2], members=["dlinear"], router="mean"
    )
    rows = [("dlinear", 96, 0.38, 1.0), ("ensemble", 96, 0.37, np.nan)]
    rows += [("mean", 96, 0.37, np.nan), ("oracle", 96, 0.30, np.nan)]
    plot_bench(spec, _summary(rows), tmp_path)
    (ax,) = figures["bench_mse.png"].axes
    labels = ax.get_legend_handles_labels()[1]
    # the mean router's ensemble is the mean: one line named so, not one hidden under another
    assert "ensemble (= mean)" in labels and "mean" not in labels
    assert "oracle (bound)" in labels and "oracle" not in labels
    # a published number at a single horizon of the grid: drawn as a marker
    pub = [line for line in ax.get_lines() if "(pub." in str(line.get_label())]
    assert pub and all(line.get_marker() == "x" for line in pub)
    assert {tuple(line.get_xdata()) for line in pub} == {(96,)}


def test_bench_fit_time_marks_fits_under_a_millisecond_instead_of_a_bar(figures, tmp_path):
    spec = BenchSpec(datasets=["ETTh1"], horizons=[24, 48], seeds=[0, 1, 2], members=["a", "b"])
    rows = [("a", 24, 0.4, 0.0), ("b", 24, 0.4, 2.5), ("a", 48, 0.4, 0.0), ("b", 48, 0.4, 3.0)]
    plot_bench(spec, _summary(rows), tmp_path)
    (ax,) = figures["bench_fit_time.png"].axes
    heights = [p.get_height() for p in ax.patches]
    assert 0.001 not in heights  # no 1 ms bar for a fit recorded as 0 s
    assert [t.get_text() for t in ax.texts] == ["<1 ms", "<1 ms"]
    # the long label ran past the figure's top and bottom edges
    fig = figures["bench_fit_time.png"]
    fig.tight_layout()  # as save does
    label = ax.yaxis.label.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= label.y0 and label.y1 <= fig.bbox.height


def test_a_missing_csv_is_not_sent_to_data_download(tmp_path):
    # "run `hybrid-forecast data download x`" named a dataset that is not registered
    spec = _spec(tmp_path / "nowhere" / "x.csv", tmp_path / "bench")
    with pytest.raises(UserError) as exc:
        validate(spec)
    assert str(exc.value) == (
        f"data file not found: {tmp_path / 'nowhere' / 'x.csv'}; check the path in --datasets"
    )
    with pytest.raises(UserError, match="data download ETTh1"):  # a registered one still is
        validate(_spec("ETTh1", tmp_path / "bench", data_dir=str(tmp_path / "nowhere")))


def test_data_dir_naming_the_default_folder_is_the_same_grid(synth_csv, tmp_path, monkeypatch):
    # --data-dir given as the folder $HYBRID_FORECAST_DATA names: the same data, not a
    # grid whose every cell must be run again
    data = tmp_path / "data"
    (data / "ETT-small").mkdir(parents=True)
    synth_csv(n=1200).replace(data / "ETT-small" / "ETTh1.csv")
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(data))
    spec = _spec("ETTh1", tmp_path / "bench", seeds=[0])
    cell = plan(spec)[0]
    fake_run(cell_config(spec, cell))
    assert cell_done(spec, cell)
    same = _spec("ETTh1", tmp_path / "bench", seeds=[0], data_dir=str(data))
    assert cell_done(same, cell)
    monkeypatch.chdir(tmp_path)  # a relative spelling of it too
    assert cell_done(_spec("ETTh1", tmp_path / "bench", seeds=[0], data_dir="data"), cell)
    # another folder is other data: run again
    other = tmp_path / "other"
    (other / "ETT-small").mkdir(parents=True)
    (data / "ETT-small" / "ETTh1.csv").replace(other / "ETT-small" / "ETTh1.csv")
    assert not cell_done(_spec("ETTh1", tmp_path / "bench", seeds=[0], data_dir=str(other)), cell)
    # and a grid run with --data-dir is done for the same folder named by the variable
    monkeypatch.setenv("HYBRID_FORECAST_DATA", str(other))
    fake_run(cell_config(_spec("ETTh1", tmp_path / "bench", seeds=[0], data_dir=str(other)), cell))
    assert cell_done(spec, cell)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_ctrl_c_a_finalizer_swallowed_stops_the_bench_before_the_next_cell(
    signum, synth_csv, tmp_path, monkeypatch, terminal_ctrl_c
):
    # Python lost a Ctrl-C that landed while the garbage collector ran a callback
    # ("Exception ignored in: WeakKeyDictionary ... KeyboardInterrupt") and the bench ran
    # the rest of the grid
    import signal
    import sys

    from experiments.cli import _on_sigterm

    class Finalised:  # freed at once: the signal lands in its __del__
        def __del__(self):
            signal.raise_signal(getattr(signal, signum))

    printed: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_type))
    before = signal.signal(signal.SIGTERM, _on_sigterm)  # as the CLI installs it
    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    ran: list[int] = []

    def lands_in_a_finalizer(cfg):
        ran.append(cfg.seed)
        res = fake_run(cfg)
        if len(ran) == 1:  # once: a second SIGTERM meets the default handler, as in the CLI
            Finalised()
        return res

    try:
        with pytest.raises(KeyboardInterrupt):
            run_bench(spec, progress=False, run_fn=lands_in_a_finalizer)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert ran == [0] and printed == []  # nor printed as "Exception ignored in ..."
    assert not (Path(spec.out) / "bench.md").exists()
    info = run_bench(spec, progress=False, run_fn=fake_run)  # a rerun resumes
    assert (info["skipped"], info["ran"]) == ([plan(spec)[0].name], [plan(spec)[1].name])


def _edit_results(spec: BenchSpec, cell, edit) -> None:
    path = cell_folder(spec, cell) / "results.json"
    res = json.loads(path.read_text(encoding="utf-8"))
    edit(res)
    path.write_text(json.dumps(res), encoding="utf-8")


def test_a_cell_run_by_other_code_is_said_per_horizon_and_in_bench_csv(synth_csv, tmp_path):
    # a resumed bench keeps cells whatever code made them: its mean over seeds of two
    # commits must say so, as `summary` does
    spec = _spec(synth_csv(n=1200), tmp_path / "bench", horizons=[24, 48])
    run_bench(spec, progress=False, run_fn=fake_run)
    commits = {0: "a" * 40, 1: "b" * 40}
    for cell in plan(spec):
        commit = commits[cell.seed] if cell.pred_len == 24 else commits[0]

        def edit(res, commit=commit, cell=cell):
            res["environment"] = {"code": {"commit": commit, "modified": False}}
            if cell.pred_len == 48 and cell.seed == 1:  # a member kept its last epoch
                res["training"] = {"window_mean": {"epochs": 3, "best_epoch": 3}}

        _edit_results(spec, cell, edit)
    run_bench(spec, progress=False, run_fn=lambda cfg: pytest.fail("reran a cell"))
    md = (Path(spec.out) / "bench.md").read_text(encoding="utf-8")
    assert (
        "H=24: The seeds ran different hybrid-forecast code (seed 0: commit aaaaaaa; "
        "seed 1: commit bbbbbbb)" in md
    )
    assert "H=48: The seeds ran different" not in md
    assert "H=48: Still improving at their last epoch" in md and "window_mean in seed 1." in md
    long = pd.read_csv(Path(spec.out) / "bench.csv")
    assert set(long.loc[long["pred_len"] == 24, "code"]) == {"commit aaaaaaa", "commit bbbbbbb"}
    assert set(long.loc[long["pred_len"] == 48, "code"]) == {"commit aaaaaaa"}


def test_a_runtime_only_set_does_not_rerun_finished_cells(synth_csv, tmp_path):
    # `--set dlinear.progress=false` (or timellm.resume / checkpoint_minutes) changes no
    # number: a resumed bench given it ran every finished cell again
    csv = synth_csv(n=1200)
    spec = _spec(csv, tmp_path / "bench", member_params={"snaive": {"progress": True}})
    run_bench(spec, progress=False, run_fn=fake_run)
    for params in (
        {},
        {"naive": {"progress": False}},
        {"naive": {"checkpoint_minutes": 5}, "snaive": {"resume": False}},
    ):
        again = _spec(csv, tmp_path / "bench", member_params=params)
        assert all(cell_done(again, c) for c in plan(again)), params
    other = _spec(csv, tmp_path / "bench", member_params={"snaive": {"period": 12}})
    assert not any(cell_done(other, c) for c in plan(other))  # a setting that changes numbers


@pytest.mark.parametrize(
    "what",
    ["no ensemble", "val not a number", "seed", "dataset", "seq_len", "pred_len", "NaN"],
)
def test_a_cell_summary_would_refuse_is_run_again_not_counted(what, synth_csv, tmp_path, caplog):
    # such a cell was done and tabulated: with its seed edited two rows said seed 1 (n=1),
    # a NaN was left out of the mean while n still said 2
    spec = _spec(synth_csv(n=1200), tmp_path / "bench")
    run_bench(spec, progress=False, run_fn=fake_run)
    first = plan(spec)[0]
    edits = {
        "no ensemble": lambda r: r["test"].pop("ensemble"),
        "val not a number": lambda r: r["val"]["naive"].update(mse="0.5x"),
        "seed": lambda r: r.update(seed=1),
        "dataset": lambda r: r.update(dataset="ETTh1"),
        "seq_len": lambda r: r.update(seq_len=48),
        "pred_len": lambda r: r.update(pred_len=12),
        "NaN": lambda r: r["test"]["naive"].update(mse=float("nan")),
    }
    _edit_results(spec, first, edits[what])
    assert not cell_done(spec, first) and set(collect(spec)["seed"]) == {1}
    ran: list[str] = []
    info = run_bench(spec, progress=False, run_fn=lambda c: (ran.append(c.out), fake_run(c))[1])
    assert info["ran"] == [first.name] and len(ran) == 1
    assert f"{first.name}: results.json is damaged; the cell is run again" in caplog.text
    long = pd.read_csv(Path(spec.out) / "bench.csv")
    assert sorted(long.loc[long["forecast"] == "naive", "seed"]) == [0, 1]


def test_summarise_counts_only_the_seeds_with_a_score():
    long = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "pred_len": [24, 24],
            "forecast": ["naive", "naive"],
            "seed": [0, 1],
            "mse": [0.5, np.nan],
            "mae": [0.5, 0.5],
            "fit_s": [1.0, 1.0],
        }
    )
    assert summarise(long)["n"].tolist() == [1]


def test_report_only_says_which_damaged_cell_it_leaves_out(synth_csv, tmp_path, caplog):
    from experiments.cli import main

    spec = _finished_bench(synth_csv(n=1200), tmp_path / "bench")
    first = plan(spec)[0]
    _edit_results(spec, first, lambda r: r["test"].pop("ensemble"))
    assert main(["bench", "--report-only", "--out", spec.out]) == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [m for m in said if m.startswith(f"{first.name}: results.json is damaged; left out")]
    assert set(pd.read_csv(Path(spec.out) / "bench.csv")["seed"]) == {1}


@pytest.mark.parametrize(
    "flag,value",
    [("--seeds", "0,,1"), ("--horizons", "24,"), ("--datasets", ",X"), ("--members", "naive,,")],
)
def test_an_empty_item_of_a_grid_list_is_refused(
    flag, value, synth_csv, tmp_path, monkeypatch, capsys
):
    # `--seeds 0,,1` ran seeds 0 and 1, while `--seeds 0,0` and `--seeds ''` are refused
    from experiments.cli import main

    csv = synth_csv(n=1200)
    argv = _tiny_grid(monkeypatch, csv, flag, value.replace("X", str(csv)))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert f"{flag} {value.replace('X', str(csv))!r} has an empty item" in _one_error_line(capsys)
    assert not (tmp_path / "b").exists()


def test_a_bench_into_a_run_folder_is_refused(synth_csv, tmp_path, monkeypatch, capsys):
    # bench.md, bench_spec.json and cells/ were written among a finished run's files
    from experiments.cli import main

    run = tmp_path / "b"
    run.mkdir()
    for name in ("config.yaml", "results.json", "run.log"):
        (run / name).write_text("x\n", encoding="utf-8")
    argv = _tiny_grid(monkeypatch, synth_csv(n=1200), "--quiet")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "--out b is a run folder" in _one_error_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "results.json", "run.log"]


def test_a_new_grid_in_the_same_out_names_the_cells_its_tables_leave_out(
    synth_csv, tmp_path, monkeypatch, caplog
):
    # another --seq-len replaced bench_spec.json and the tables without a word: the
    # finished L=96 cell stayed in cells/, left out of bench.md
    from experiments.cli import main

    def warnings() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()
        return said

    argv = _tiny_grid(monkeypatch, synth_csv(n=1200), "--quiet")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0 and warnings() == []
    assert main(argv) == 0 and warnings() == []  # the same grid again: nothing left out
    i = argv.index("--seq-len")
    assert main([*argv[: i + 1], "48", *argv[i + 2 :]]) == 0
    (line,) = warnings()
    assert line.startswith("1 finished cell(s) of another grid (bench_spec.json: ")
    assert "seq-len 96, not 48" in line and ": synth_96_24_s0;" in line
    assert "`hybrid-forecast bench --report-only --out b` with that grid's flags" in line
    assert sorted(p.name for p in (tmp_path / "b" / "cells").iterdir()) == [
        "synth_48_24_s0",
        "synth_96_24_s0",
    ]
    # --report-only of the first grid: its tables again, the L=48 cell named as left out
    assert main(["bench", "--report-only", "--out", "b", "--seq-len", "96"]) == 0
    (line,) = warnings()
    assert "seq-len 48, not 96" in line and ": synth_48_24_s0;" in line
    assert set(pd.read_csv(tmp_path / "b" / "bench.csv")["seq_len"]) == {96}
