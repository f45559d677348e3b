"""experiments.summary: seeds summary of run folders (`hybrid-forecast summary`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fake_run

from experiments.cli import main
from experiments.summary import load_groups, summary_json


def test_seed_means_counts_and_groups(tmp_path, capsys):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39, oracle=0.3)
    r1 = fake_run(tmp_path / "s1", 1, a=0.6, b=0.5, ensemble=0.52, mean=0.51, oracle=0.3)
    other = fake_run(tmp_path / "o", 0, router="mean", a=0.4, b=0.5, ensemble=0.45, mean=0.45)
    assert main(["summary", str(r0), str(r1), str(other), "--out", str(tmp_path / "s.md")]) == 0
    text = capsys.readouterr().out
    assert text == (tmp_path / "s.md").read_text(encoding="utf-8")
    assert text.count("\n## ") == 2  # another router is another group
    ens = np.array([0.38, 0.52])
    assert f"| {ens.mean():.4f} ± {ens.std(ddof=1):.4f} |" in text
    assert "| b | member | 0.5000 (every seed) |" in text  # not "± 0.0000": no precision
    assert "training randomness only, not the test sample's uncertainty" in text
    # best member on val (twice test here): a in seed 0, b in seed 1; the ensemble beats
    # only the first
    assert (
        "below its best member on val in 1 of 2 seeds (best member on val per seed: a, b)" in text
    )
    assert "below the mean in 1 of 2." in text
    assert "| stacked (chosen in seeds 0, 1) | combiner |" in text
    # in one seed only: not read as a mean of both
    assert (
        "| greedy | combiner | 0.9000 (1 of 2 seeds) | 0.4500 (1 of 2 seeds) | – | 0.9000 / – |"
        in text
    )

    (g, _) = load_groups([r0, r1, other])
    out = summary_json([g])[0]
    fc = out["forecasts"]
    assert out["seeds"] == [0, 1] and fc["greedy"]["test_mse"] == [0.9, None]
    assert fc["a"]["kind"] == "member" and fc["oracle"]["kind"] == "bound"
    assert fc["a"]["val_mse"] == [0.8, 1.2] and fc["stacked"]["chosen_in_seeds"] == [0, 1]


def test_an_ensemble_equal_to_its_member_up_to_rounding_is_no_win(tmp_path, capsys):
    # one member under the mean router: the same forecast, its MSE summed another way
    tie = dict(a=0.484532949412071, b=0.6, ensemble=0.4845329494120709, mean=0.484532949412071)
    runs = [fake_run(tmp_path / f"s{s}", s, router="mean", **tie) for s in (0, 1)]
    assert main(["summary", *map(str, runs)]) == 0
    text = capsys.readouterr().out
    assert "below its best member on val in 0 of 2 seeds" in text
    assert "the mean in" not in text  # the mean router's ensemble is the mean itself


@pytest.mark.parametrize(
    "case",
    ["missing", "duplicate", "not_results", "bad_yaml", "list_yaml", "bad_params", "no_val", "nan"],
)
def test_bad_folders_exit_2_with_one_line(case, tmp_path, capsys):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    if case == "missing":
        argv, needle = [str(r0), str(tmp_path / "nope")], "no results.json in"
    elif case == "duplicate":
        again = fake_run(tmp_path / "again", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
        argv, needle = [str(r0), str(again)], "are the same run (seed 0"
    elif case == "bad_yaml":
        (r0 / "config.yaml").write_text("members: [dlinear\n", encoding="utf-8")
        argv, needle = [str(r0)], "config.yaml is not valid YAML"
    elif case in ("list_yaml", "bad_params"):
        text = "- a\n" if case == "list_yaml" else "member_params: {naive: 3}\n"
        (r0 / "config.yaml").write_text(text, encoding="utf-8")
        argv, needle = [str(r0)], "config.yaml"
    elif case in ("no_val", "nan"):
        res = json.loads((r0 / "results.json").read_text(encoding="utf-8"))
        if case == "no_val":
            del res["val"]
        else:
            res["test"]["a"]["mse"] = "abc"
        (r0 / "results.json").write_text(json.dumps(res), encoding="utf-8")
        argv, needle = [str(r0)], "is not a results.json"
    else:
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "results.json").write_text('{"dataset": "x"}', encoding="utf-8")
        argv, needle = [str(r0), str(tmp_path / "bad")], "is not a results.json"
    out_md = tmp_path / "s.md"
    assert main(["summary", *argv, "--out", str(out_md)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out_md.exists()  # nothing written on bad input


def test_a_one_seed_table_says_one_seed_not_a_mean_over_seeds(tmp_path, capsys):
    one = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    two = [
        fake_run(tmp_path / f"m{s}", s, router="mean", a=0.4, b=0.5, ensemble=0.4) for s in (0, 1)
    ]
    assert main(["summary", str(one), *map(str, two)]) == 0
    first, second = capsys.readouterr().out.split("\n## ")[1:]
    assert "of one seed (0): no spread over seeds" in first and "ddof" not in first
    assert "mean ± sample std (ddof=1) over seeds" in second and "one seed" not in second


def test_a_diverged_forecast_shows_a_dash_and_sorts_last_without_a_warning(tmp_path, capsys):
    import warnings

    run = fake_run(tmp_path / "s0", 0, a=float("nan"), b=0.5, ensemble=0.38, mean=0.39)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" on the console
        assert main(["summary", str(run)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| a ")]
    assert len(rows) == 1 and "| – |" in rows[0]


def test_unfinished_folders_are_all_named_or_left_out_when_asked(tmp_path, capsys, caplog):
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38, mean=0.39) for s in (0, 1)]
    going = [tmp_path / "s2", tmp_path / "s3"]  # a bench still running these cells
    for g in going:
        g.mkdir()
    argv = ["summary", *map(str, runs + going)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(str(g) in err for g in going) and "--finished-only" in err
    assert main([*argv, "--finished-only"]) == 0
    assert "seeds 0, 1" in capsys.readouterr().out
    assert "left out 2 unfinished folder(s)" in caplog.text
    assert main(["summary", *map(str, going), "--finished-only"]) == 2


def test_summary_of_real_runs_matches_their_results(seed_runs, capsys):
    folders = seed_runs
    capsys.readouterr()
    assert main(["summary", "--json", *map(str, folders)]) == 0
    (group,) = json.loads(capsys.readouterr().out)
    runs = [json.loads((f / "results.json").read_text(encoding="utf-8")) for f in folders]
    for name in ("naive", "snaive", "ensemble", "mean", "median", "oracle"):
        assert group["forecasts"][name]["test_mse"] == [r["test"][name]["mse"] for r in runs]
        assert group["forecasts"][name]["val_mse"] == [r["val"][name]["mse"] for r in runs]


def test_runs_with_other_member_options_are_not_averaged(tmp_path, capsys):
    a = fake_run(tmp_path / "a", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    b = fake_run(tmp_path / "b", 1, a=0.6, b=0.5, ensemble=0.52, mean=0.51)
    (a / "config.yaml").write_text("seed: 0\nout: a\npercent: 100\n", encoding="utf-8")
    (b / "config.yaml").write_text(
        "seed: 1\nout: b\nmember_params:\n  b:\n    lr: 0.01\n", encoding="utf-8"
    )
    assert main(["summary", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert text.count("\n## ") == 2 and "settings b.lr=0.01; seed 1" in text


def test_settings_that_change_no_number_make_no_group_of_their_own(tmp_path, capsys):
    # `--set dlinear.progress=false` was put in a group "settings dlinear.progress=False"
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1, 2)]
    params = ("{}", "{a: {progress: false, resume: true}}", "{a: {checkpoint_minutes: 5}}")
    for run, p in zip(runs, params, strict=True):
        (run / "config.yaml").write_text(f"member_params: {p}\n", encoding="utf-8")
    (group,) = load_groups(runs)
    assert sorted(group.runs) == [0, 1, 2] and group.settings == ""
    # a setting that changes numbers still does, beside a runtime one
    (runs[2] / "config.yaml").write_text(
        "member_params: {a: {progress: false, lr: 0.01}}\n", encoding="utf-8"
    )
    assert [g.settings for g in load_groups(runs)] == ["", "a.lr=0.01"]


@pytest.mark.parametrize(
    "edit,needle",
    [
        pytest.param(
            lambda d, res: (d / "config.yaml").write_bytes(b"\xff\xfe members"),
            "config.yaml is not valid YAML",
            id="binary-config",
        ),
        pytest.param(lambda d, res: res["test"]["a"].update(mae="x"), "results.json", id="mae"),
        pytest.param(lambda d, res: res.update(members=[["a"], "b"]), "results.json", id="list"),
        pytest.param(
            lambda d, res: res["combiners"]["stacked"]["test"].update(mse="x"),
            "results.json",
            id="combiner-score",
        ),
        pytest.param(lambda d, res: res.update(combiners={"s": 3}), "results.json", id="combiner"),
        # int() made seed 1.7 and seed true seed 1, averaged with or replacing a real seed 1
        pytest.param(lambda d, res: res.update(seed=1.7), "results.json", id="seed-fraction"),
        pytest.param(lambda d, res: res.update(seed=True), "results.json", id="seed-bool"),
        pytest.param(lambda d, res: res.update(pred_len=24.5), "results.json", id="horizon"),
    ],
)
def test_malformed_files_name_the_file_and_exit_2(edit, needle, tmp_path, capsys):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    res = json.loads((r0 / "results.json").read_text(encoding="utf-8"))
    edit(r0, res)
    (r0 / "results.json").write_text(json.dumps(res), encoding="utf-8")
    assert main(["summary", str(r0)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{r0}/{needle}" in err[0] and "rerun that folder" in err[0]


def test_numeric_yaml_keys_are_settings_like_any_other(tmp_path, capsys):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (r0 / "config.yaml").write_text(
        "1: x\nfill: ffill\nmember_params: {a: {k: 3}, 2: {k: 4}}\n", encoding="utf-8"
    )
    assert main(["summary", str(r0)]) == 0
    assert "settings 1=x, fill=ffill, 2.k=4, a.k=3;" in capsys.readouterr().out


@pytest.mark.parametrize("key,other", [("pred_len", 48), ("seq_len", 192), ("features", "MS")])
def test_runs_of_another_horizon_lookback_or_features_are_another_group(key, other, tmp_path):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    r1 = fake_run(tmp_path / "s1", 1, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    res = json.loads((r1 / "results.json").read_text(encoding="utf-8"))
    (r1 / "results.json").write_text(json.dumps({**res, key: other}), encoding="utf-8")
    assert len(load_groups([r0, r1])) == 2


def test_runs_on_another_file_under_the_same_name_are_another_group(tmp_path):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(3)]
    published, other = {"published": True}, {"published": False, "sha256": "ab12cd34ef"}
    for run, data in zip(runs[1:], (published, other), strict=True):
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        (run / "results.json").write_text(json.dumps({**res, "data": data}), encoding="utf-8")
    groups = load_groups(runs)  # a run from before `data` was recorded pools with published
    assert [(g.dataset, sorted(g.runs)) for g in groups] == [
        ("ETTh1", [0, 1]),
        ("ETTh1 (file ab12cd34)", [2]),
    ]


def test_two_versions_of_one_csv_are_two_groups_named_by_file(tmp_path):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(3)]
    for run, sha in zip(runs, ("aaaa1111x", "aaaa1111x", "bbbb2222y"), strict=True):
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        data = {"published": None, "sha256": sha}  # a CSV of no registered dataset
        (run / "results.json").write_text(
            json.dumps({**res, "dataset": "mine", "data": data}), encoding="utf-8"
        )
    assert [(g.dataset, sorted(g.runs)) for g in load_groups(runs)] == [
        ("mine (file aaaa1111)", [0, 1]),
        ("mine (file bbbb2222)", [2]),
    ]
    assert [g.dataset for g in load_groups(runs[:2])] == ["mine"]  # one file: no id


def test_out_naming_a_folder_exits_2_naming_it(tmp_path, capsys):
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (tmp_path / "reports").mkdir()
    assert main(["summary", str(r0), "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'reports'}:" in err[0] and "not a folder" in err[0]
    assert list((tmp_path / "reports").iterdir()) == []  # no temp file left behind


@pytest.mark.parametrize("name", ["results.json", "config.yaml", "forecasts.npz", "Results.json"])
def test_out_must_not_replace_a_file_of_a_run_folder(name, tmp_path, capsys):
    # `summary RUN --out RUN/results.json` turned the run's results into Markdown.
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (r0 / "config.yaml").write_text("seq_len: 96\n", encoding="utf-8")
    (r0 / "forecasts.npz").write_bytes(b"npz")
    before = {p.name: p.read_bytes() for p in r0.iterdir()}
    assert main(["summary", str(r0), "--out", str(r0 / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the run's own {name}" in err[0], err
    assert {p.name: p.read_bytes() for p in r0.iterdir()} == before
    # any other run folder's files are just as much off limits; a user's folder is not
    other = fake_run(tmp_path / "s1", 1, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (other / "config.yaml").write_text("seq_len: 96\n", encoding="utf-8")
    assert main(["summary", str(r0), "--out", str(other / "results.json")]) == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("seq_len: 96\n", encoding="utf-8")  # no run's
    assert main(["summary", str(r0), "--out", str(mine / "summary.md")]) == 0
    assert main(["summary", str(r0), "--out", str(tmp_path / "summary.md")]) == 0


@pytest.mark.parametrize("inside", ["members/dlinear/forecasts.npz", "summary.md", "new/x.md"])
@pytest.mark.parametrize("record", ["results.json", "run.log"])
def test_out_anywhere_inside_another_run_folder_is_refused(inside, record, tmp_path, capsys):
    # `summary r0 --out r1/members/dlinear/forecasts.npz` wrote Markdown over r1's cache
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    r1 = tmp_path / "r1"  # finished, or still running (run.log, no results.json yet)
    (r1 / "members" / "dlinear").mkdir(parents=True)
    (r1 / "members" / "dlinear" / "forecasts.npz").write_bytes(b"npz")
    (r1 / "config.yaml").write_text("seq_len: 96\n", encoding="utf-8")
    (r1 / record).write_text("{}", encoding="utf-8")
    before = {p: p.read_bytes() for p in r1.rglob("*") if p.is_file()}
    assert main(["summary", str(r0), "--out", str(r1 / inside)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"inside the run folder {r1.resolve()}," in err[0], err
    assert "write the summary elsewhere" in err[0]
    assert {p: p.read_bytes() for p in r1.rglob("*") if p.is_file()} == before


def test_out_under_a_file_says_it_is_a_file(tmp_path, capsys):
    # "cannot use afile: File exists", after the folders were read
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (tmp_path / "afile").write_text("", encoding="utf-8")
    assert main(["summary", str(r0), "--out", str(tmp_path / "afile" / "x.md")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'afile'} is a file, not a folder" in err[0], err
    assert captured.out == ""  # refused before the table


@pytest.mark.parametrize("inside", ["members/dlinear/forecasts.npz", ".lock", "summary.md"])
def test_out_anywhere_inside_a_summarised_folder_is_refused(inside, tmp_path, capsys):
    # `--out RUN/members/dlinear/forecasts.npz` overwrote a member cache
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    (r0 / "members" / "dlinear").mkdir(parents=True)
    (r0 / "members" / "dlinear" / "forecasts.npz").write_bytes(b"npz")
    (r0 / ".lock").write_bytes(b"")
    before = {p: p.read_bytes() for p in r0.rglob("*") if p.is_file()}
    assert main(["summary", str(r0), "--out", str(r0 / inside)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run folder {r0.resolve()}" in err[0], err
    assert "write the summary elsewhere" in err[0]
    assert {p: p.read_bytes() for p in r0.rglob("*") if p.is_file()} == before


def test_seeds_run_on_different_setups_are_said(tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(3)]
    gpu = {"packages": {"torch": "2.5.1+cu124"}, "gpus": ["NVIDIA GeForce RTX 3060"]}
    cpu = {"packages": {"torch": "2.5.1+cpu"}, "gpus": []}
    for folder in runs:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        (folder / "results.json").write_text(
            json.dumps({**res, "environment": gpu}), encoding="utf-8"
        )
    assert main(["summary", *map(str, runs)]) == 0
    assert "did not all run on one setup" not in capsys.readouterr().out
    res = json.loads((runs[2] / "results.json").read_text(encoding="utf-8"))
    (runs[2] / "results.json").write_text(json.dumps({**res, "environment": cpu}), encoding="utf-8")
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "The seeds did not all run on one setup (seed 0: torch 2.5.1+cu124 on NVIDIA GeForce "
        "RTX 3060; seed 1: torch 2.5.1+cu124 on NVIDIA GeForce RTX 3060; seed 2: torch "
        "2.5.1+cpu on the CPU)" in out
    )


def test_seeds_run_on_different_code_are_said(tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(3)]

    def code(folder, commit, modified=False):
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        env = {"code": {"version": "0.1.0", "commit": commit, "modified": modified}}
        (folder / "results.json").write_text(
            json.dumps({**res, "environment": env}), encoding="utf-8"
        )

    for folder in runs:
        code(folder, "42662df" + "0" * 33)
    assert main(["summary", *map(str, runs)]) == 0
    assert "different hybrid-forecast code" not in capsys.readouterr().out
    code(runs[1], "42662df" + "0" * 33, modified=True)
    code(runs[2], "56ee262" + "0" * 33)
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "The seeds ran different hybrid-forecast code (seed 0: commit 42662df; seed 1: commit "
        "42662df, modified; seed 2: commit 56ee262)" in out
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"gpus": [1, "x"]}, "seed 1: torch None on 1, x"),
        ({"gpus": [{"name": "H100"}]}, "seed 1: torch None on {'name': 'H100'}"),
        ({"packages": "torch"}, None),  # not recorded, as seed 0: one setup, no line
        ({"gpus": "H100"}, None),  # once read letter by letter
    ],
)
def test_an_edited_environment_block_is_read_or_not_recorded(env, said, tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(2)]
    res = json.loads((runs[1] / "results.json").read_text(encoding="utf-8"))
    (runs[1] / "results.json").write_text(json.dumps({**res, "environment": env}), encoding="utf-8")
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    if said:
        assert f"(seed 0: not recorded; {said})" in out
    else:
        assert "did not all run on one setup" not in out


def test_members_still_improving_at_their_last_epoch_are_named(tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(3)]
    curves = [  # a: kept its last epoch in seeds 0 and 2 (seed 2 written before the flag)
        {"a": {"epochs": 5, "best_epoch": 5, "still_improving": True}},
        {"a": {"epochs": 5, "best_epoch": 3, "still_improving": False}},
        {"a": {"epochs": 4, "best_epoch": 4}, "b": {"epochs": 1, "best_epoch": 1}},
    ]
    for folder, training in zip(runs, curves, strict=True):
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        (folder / "results.json").write_text(
            json.dumps({**res, "training": training}), encoding="utf-8"
        )
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Still improving at their last epoch" in out and ": a in seeds 0, 2." in out
    assert main(["summary", str(runs[1])]) == 0
    assert "Still improving" not in capsys.readouterr().out
    # hand-edited blocks: read by the rule, or nothing said; never a traceback
    for training, said in (
        (["x"], False),
        ({"a": {"epochs": 5, "best_epoch": 3, "still_improving": "false"}}, False),
        ({"a": "x"}, False),
    ):
        res = json.loads((runs[1] / "results.json").read_text(encoding="utf-8"))
        (runs[1] / "results.json").write_text(
            json.dumps({**res, "training": training}), encoding="utf-8"
        )
        assert main(["summary", str(runs[1])]) == 0
        assert ("Still improving" in capsys.readouterr().out) is said


def test_each_seed_s_test_against_its_best_member_is_listed_side_by_side(tmp_path, capsys):
    # one seed's p = 0.018 reads as "significant" where the next seed's is 0.19
    runs = []
    for seed, (diff, p) in enumerate([(-0.0135, 0.0886), (-0.017, 0.0177), (0.002, 0.187)]):
        folder = fake_run(tmp_path / f"s{seed}", seed, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        test = {"ensemble_vs": {"a": {"diff": diff, "dm": -1.0, "p": p, "dof": 29}}}
        res["significance"] = {"test": test}
        (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")
        runs.append(folder)
    assert main(["summary", *map(str, runs)]) == 0
    text = capsys.readouterr().out
    assert "seed 0 lower, p 0.0886; seed 1 lower, p 0.0177; seed 2 higher, p 0.187." in text


def test_a_forecast_missing_from_a_seed_says_how_many_seeds_it_has():
    # a combiner absent from one seed's results read as a mean over every seed
    from experiments.summary import _cell

    nan = float("nan")
    assert _cell(np.array([0.3112, nan])) == "0.3112 (1 of 2 seeds)"
    assert _cell(np.array([0.30, 0.32, nan])) == "0.3100 ± 0.0141 (2 of 3 seeds)"
    assert _cell(np.array([0.30, 0.32])) == "0.3100 ± 0.0141"
    assert _cell(np.array([0.5, 0.5, nan])) == "0.5000 (2 of 3 seeds, identical)"
    assert _cell(np.array([nan, nan])) == "–"
    # a spread below the printed digits is a spread, not none (that is "every seed")
    assert _cell(np.array([0.30001, 0.30002])) == "0.3000 ± <0.0001"


def test_an_overflowed_error_is_inf_not_a_refusal_nor_dropped(tmp_path, capsys):
    # results.json stores an infinite MSE as null: summary refused the folder, and
    # dropped from the mean it would make the member look better than it is
    import json

    from conftest import fake_run

    from experiments.cli import main

    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    r1 = fake_run(tmp_path / "s1", 1, a=0.6, b=0.5, ensemble=0.52, mean=0.51)
    res = json.loads((r1 / "results.json").read_text(encoding="utf-8"))
    res["test"]["a"]["mse"] = None
    (r1 / "results.json").write_text(json.dumps(res), encoding="utf-8")
    assert main(["summary", str(r0), str(r1)]) == 0
    assert "| a | member | inf (diverged in 1 of 2 seeds) |" in capsys.readouterr().out
    assert main(["summary", str(r0), str(r1), "--latex", "--forecasts", "a,b"]) == 0
    tex = capsys.readouterr().out
    assert "inf" in tex and "nan" not in tex


def _edit(folder, change) -> None:
    """Apply ``change`` to the folder's results.json in place."""
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    change(res)
    (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")


def test_set_options_given_in_another_order_are_one_group(tmp_path, capsys):
    # `--set a.lr=0.01 --set a.epochs=3` and the same options the other way round
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    for run, params in zip(runs, ("{lr: 0.01, epochs: 3}", "{epochs: 3, lr: 0.01}"), strict=True):
        (run / "config.yaml").write_text(f"member_params:\n  a: {params}\n", encoding="utf-8")
    (group,) = load_groups(runs)
    assert sorted(group.runs) == [0, 1] and group.settings == "a.epochs=3, a.lr=0.01"
    assert main(["summary", *map(str, runs)]) == 0
    assert "settings a.epochs=3, a.lr=0.01; seeds 0, 1" in capsys.readouterr().out


def test_json_of_a_diverged_seed_is_strict_and_says_inf(tmp_path, capsys):
    # json.dumps wrote `Infinity`, which strict JSON readers (jq, JavaScript) refuse
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    r1 = fake_run(tmp_path / "s1", 1, a=0.6, b=0.5, ensemble=0.52, mean=0.51)
    _edit(r1, lambda res: res["test"]["a"].update(mse=None))  # overflowed: stored as null
    assert main(["summary", "--json", str(r0), str(r1)]) == 0

    def refuse(const: str) -> None:
        raise AssertionError(f"not strict JSON: {const}")

    (group,) = json.loads(capsys.readouterr().out, parse_constant=refuse)
    fc = group["forecasts"]
    assert fc["a"]["test_mse"] == [0.4, "inf"] and fc["a"]["test_mae"] == [0.2, 0.3]
    assert fc["greedy"]["test_mse"] == [0.9, None]  # null: the seed lacks it, not diverged


@pytest.mark.parametrize(
    "block",
    [
        {"test": {"ensemble_vs": []}},
        {"test": []},
        [],
        {"test": {"ensemble_vs": {"a": []}}},
        {"test": {"ensemble_vs": {"a": {"p": "x", "diff": -1}}}},
        {"test": {"ensemble_vs": {"a": {"p": 0.1, "diff": "x"}}}},
    ],
)
def test_an_edited_significance_block_gives_no_line_not_a_traceback(block, tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    good = {"test": {"ensemble_vs": {"a": {"diff": -0.01, "dm": -1.0, "p": 0.05}}}}
    _edit(runs[0], lambda res: res.update(significance=good))
    _edit(runs[1], lambda res: res.update(significance=block))
    assert main(["summary", *map(str, runs)]) == 0
    assert "Diebold-Mariano): " not in capsys.readouterr().out


def test_below_the_mean_counts_only_seeds_that_have_the_mean(tmp_path, capsys):
    # "below the mean in 1 of 2" where seed 1's folder did not report the mean
    r0 = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    r1 = fake_run(tmp_path / "s1", 1, a=0.6, b=0.5, ensemble=0.52)
    assert main(["summary", str(r0), str(r1)]) == 0
    text = capsys.readouterr().out
    assert "below its best member on val in 1 of 2 seeds" in text
    assert "below the mean in 1 of 1." in text


def test_groups_are_in_dataset_then_horizon_order_not_first_sight(tmp_path, capsys):
    # a shell glob gives H192 before H24
    runs = [
        fake_run(tmp_path / "ETTh1_H192", 0, pred_len=192, a=0.4, b=0.5, ensemble=0.38),
        fake_run(tmp_path / "ETTh1_H24", 0, a=0.4, b=0.5, ensemble=0.38),
        fake_run(tmp_path / "x_H48", 0, dataset="exchange_rate", pred_len=48, a=0.1, b=0.2,
                 ensemble=0.15),
        fake_run(tmp_path / "ETTh1_H96", 0, pred_len=96, a=0.4, b=0.5, ensemble=0.38),
    ]  # fmt: skip
    assert main(["summary", *map(str, runs)]) == 0
    titles = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("## ")]
    assert [t.split(";")[0] for t in titles] == [
        "## ETTh1 L=96 H=24 (M)",
        "## ETTh1 L=96 H=96 (M)",
        "## ETTh1 L=96 H=192 (M)",
        "## exchange_rate L=96 H=48 (M)",
    ]


def test_members_above_the_naive_baseline_are_named_in_markdown_and_latex(tmp_path, capsys):
    # a: val 0.8 in every seed; b: val 1.0, above seed 1's baseline only
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(2)]
    for folder, floor in zip(runs, (1.5, 0.9), strict=True):
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        res["baseline"] = {"forecast": "snaive@period=24", "val_mse": floor}
        (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Above the naive baseline on validation" in out and ": b in seed 1." in out
    assert main(["summary", *map(str, runs), "--latex"]) == 0
    caption = next(ln for ln in capsys.readouterr().out.splitlines() if "caption" in ln)
    assert "b: val MSE above a forecast that only repeats the input" in caption
    assert main(["summary", str(runs[0])]) == 0  # below it everywhere: nothing said
    assert "naive baseline" not in capsys.readouterr().out


def _same_file_from(folder, data_path: str, sha: str = "c0ffee11" * 8) -> None:
    """A --data-path run of ``mine.csv`` with the file's checksum, made from ``data_path``."""
    (folder / "config.yaml").write_text(
        f"dataset: null\ndata_path: {data_path}\nseed: 0\n", encoding="utf-8"
    )
    _edit(folder, lambda r: r.update(dataset="mine", data={"published": None, "sha256": sha}))


def test_the_same_file_run_from_two_folders_is_one_group(tmp_path, capsys):
    # config.yaml stores the file's absolute path: two groups, and the path in the caption
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    _same_file_from(runs[0], "/home/ann/data/mine.csv")
    _same_file_from(runs[1], "/scratch/ann/mine.csv")
    (group,) = load_groups(runs)
    assert sorted(group.runs) == [0, 1] and group.settings == ""
    assert main(["summary", *map(str, runs), "--latex"]) == 0
    assert "/scratch" not in capsys.readouterr().out
    # another file of that name is still another group
    _same_file_from(runs[1], "/scratch/ann/mine.csv", sha="beef" * 16)
    assert len(load_groups(runs)) == 2
    # a run from before the checksum was recorded: only its path tells the files apart
    for run in runs:
        _edit(run, lambda r: r.pop("data"))
    assert len(load_groups(runs)) == 2


@pytest.mark.parametrize(
    ("features", "written", "channels"),
    [
        ("S", ["null", "OT"], [["OT"], ["OT"]]),  # `--features S` and `--target OT`
        ("M", ["null", "OT"], [["HUFL", "OT"], ["HUFL", "OT"]]),
        ("S", ["null", "y"], [["y"], ["y"]]),  # a CSV without OT: its last column
        ("S", ["null", "OT"], [None, None]),  # no channels recorded: OT is the default
    ],
)
def test_the_default_target_and_naming_it_are_one_group(features, written, channels, tmp_path):
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    for run, target, chans in zip(runs, written, channels, strict=True):
        (run / "config.yaml").write_text(f"seed: 0\ntarget: {target}\n", encoding="utf-8")
        _edit(run, lambda r, c=chans: r.update(features=features, channels=c))
    (group,) = load_groups(runs)
    assert sorted(group.runs) == [0, 1]
    assert group.settings == ("" if written[1] == "OT" else f"target={written[1]}")


def test_another_target_is_another_group_named_in_the_settings(tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    for run, target in zip(runs, ("null", "HUFL"), strict=True):
        (run / "config.yaml").write_text(f"target: {target}\nfill: ffill\n", encoding="utf-8")
        _edit(
            run, lambda r, t=target: r.update(features="S", channels=["OT" if t == "null" else t])
        )
    groups = load_groups(runs)
    assert [g.settings for g in groups] == ["fill=ffill", "fill=ffill, target=HUFL"]


def test_the_rolling_origin_score_is_shown_and_labelled(tmp_path, capsys):
    # the score `learned` chose its rule by was missing: only the in-sample val MSE
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    for run, cv in zip(runs, (0.31, 0.35), strict=True):
        _edit(run, lambda r, cv=cv: r["combiners"]["stacked"].update(val_cv=cv))
    assert main(["summary", *map(str, runs)]) == 0
    text = capsys.readouterr().out
    assert "| val MSE | val CV MSE (held out) | test MSE per seed" in text
    assert "the out-of-sample score `learned` chose its rule by" in text
    cv = np.array([0.31, 0.35])
    (row,) = [r for r in text.splitlines() if r.startswith("| stacked ")]
    assert f"| {cv.mean():.4f} ± {cv.std(ddof=1):.4f} |" in row
    (a_row,) = [r for r in text.splitlines() if r.startswith("| a ")]
    assert a_row.count("| – |") == 1  # a member has no fold score
    assert main(["summary", "--json", *map(str, runs)]) == 0
    fc = json.loads(capsys.readouterr().out)[0]["forecasts"]
    assert fc["stacked"]["val_cv_mse"] == [0.31, 0.35] and fc["a"]["val_cv_mse"] == [None, None]
    # runs without it: no empty column
    for run in runs:
        _edit(run, lambda r: r["combiners"]["stacked"].pop("val_cv"))
    assert main(["summary", *map(str, runs)]) == 0
    assert "val CV MSE" not in capsys.readouterr().out
    _edit(runs[0], lambda r: r["combiners"]["stacked"].update(val_cv="x"))
    assert main(["summary", *map(str, runs)]) == 2
    assert "is not a results.json" in capsys.readouterr().err


def test_members_written_as_one_string_are_refused_in_one_line(tmp_path, capsys):
    # "members": "naive" was split into the members n, a, i, v, e
    run = fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38)
    _edit(run, lambda r: r.update(members="naive"))
    assert main(["summary", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "members is not a list of member names" in err[0]


def test_seeds_of_one_code_tree_at_other_commits_ran_the_same_code(tmp_path, capsys):
    # a docs-only commit between the seeds: "the seeds ran different code"
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(2)]
    for run, commit in zip(runs, ("42662df", "56ee262"), strict=True):
        code = {"version": "0.1.0", "commit": commit + "0" * 33, "modified": False, "tree": "t1"}
        _edit(run, lambda r, c=code: r.update(environment={"code": c}))
    assert main(["summary", *map(str, runs)]) == 0
    assert "different hybrid-forecast code" not in capsys.readouterr().out
    _edit(runs[1], lambda r: r["environment"]["code"].update(tree="t2"))
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "different hybrid-forecast code (seed 0: commit 42662df; seed 1: commit 56ee262)" in out
    _edit(runs[1], lambda r: r["environment"]["code"].pop("tree"))  # recorded before the tree
    assert main(["summary", *map(str, runs)]) == 0
    assert "different hybrid-forecast code" in capsys.readouterr().out
    # one tree, but edited checkouts at other commits: their edits may differ
    for run in runs:
        _edit(run, lambda r: r["environment"]["code"].update(tree="t1", modified=True))
    assert main(["summary", *map(str, runs)]) == 0
    assert "different hybrid-forecast code" in capsys.readouterr().out


def test_the_count_and_the_dm_line_take_each_seed_s_best_member_on_val_not_on_test(
    tmp_path, capsys
):
    # the best member on test was the one the ensemble was compared with, and its rows
    # were ranked by test MSE: a choice made on test, which the protocol forbids
    runs = []
    for seed in range(2):
        folder = fake_run(tmp_path / f"s{seed}", seed, a=0.50, b=0.40, ensemble=0.45, mean=0.47)

        def change(res, seed=seed):
            res["val"]["a"]["mse"], res["val"]["b"]["mse"] = 0.7, 0.9  # a best on val
            vs = {m: {"diff": d, "dm": 1.0, "p": p, "dof": 29} for m, d, p in
                  (("a", -0.05, 0.02 + seed / 100), ("b", 0.05, 0.01))}  # fmt: skip
            res["significance"] = {"test": {"ensemble_vs": vs}}

        _edit(folder, change)
        runs.append(folder)
    assert main(["summary", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert "best member per seed" not in text
    # a (test 0.50) is the member a choice by val takes: the ensemble (0.45) is below it;
    # b (0.40), best on test, is the hindsight bar it does not clear
    assert (
        "On test, the ensemble is below its best member on val in 2 of 2 seeds (best member "
        "on val per seed: a, a), below the best member on test (hindsight) in 0 of 2 and "
        "below the mean in 2 of 2." in text
    )
    assert "each seed's best member on val on that seed's test windows" in text
    assert "seed 0 lower, p 0.02; seed 1 lower, p 0.03." in text
    # the members in the run's order, not ranked by test MSE (b's is the lower)
    rows = [ln.split(" | ")[0] for ln in out.splitlines() if ln.startswith(("| a |", "| b |"))]
    assert rows == ["| a", "| b"]
    _edit(runs[1], lambda r: r["val"].update(b={"mse": 0.1}))  # b best on val in seed 1
    (group,) = load_groups(runs)
    assert summary_json([group])[0]["best_member_on_val"] == ["a", "b"]
    assert main(["summary", *map(str, runs)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "below its best member on val in 1 of 2 seeds (best member on val per seed: a, b)" in text
    )
    assert "seed 0 lower, p 0.02; seed 1 higher, p 0.01." in text


def test_a_mean_router_is_not_set_against_itself(tmp_path, capsys):
    # `--router mean`: "not below the mean" compared the ensemble with itself
    runs = [
        fake_run(tmp_path / f"s{s}", s, router="mean", a=0.40, b=0.50, ensemble=0.44, mean=0.44)
        for s in (0, 1)
    ]
    assert main(["summary", *map(str, runs)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "On test, the ensemble is below its best member on val" in text
    assert "the mean in" not in text and "below the mean" not in text


def test_one_seed_is_said_below_or_not_not_in_0_of_1_seeds(tmp_path, capsys):
    above = fake_run(tmp_path / "s0", 0, a=0.40, b=0.50, ensemble=0.45, mean=0.44)
    assert main(["summary", str(above)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "of 1 seeds" not in text and "1 of 1" not in text
    assert (
        "On test, the ensemble is not below its best member on val (a), not below the best "
        "member on test (a, hindsight) and not below the mean." in text
    )
    below = fake_run(tmp_path / "s1", 1, a=0.40, b=0.50, ensemble=0.38, mean=0.44)
    assert main(["summary", str(below)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "the ensemble is below its best member on val (a), below the best member on test "
        "(a, hindsight) and below the mean." in text
    )


@pytest.mark.parametrize("router", ["mean", "median"])
def test_a_mean_or_median_ensemble_is_not_said_fitted_on_val(router, tmp_path, capsys):
    # "the ensemble and the combiners were fitted on them" of an ensemble that is the mean
    runs = [
        fake_run(tmp_path / f"s{s}", s, router=router, a=0.4, b=0.5, ensemble=0.45, mean=0.45)
        for s in (0, 1)
    ]
    for run in runs:
        _edit(run, lambda r: r.pop("combiners"))  # `run` with a mean router has none
    assert main(["summary", *map(str, runs)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the ensemble and the combiners were fitted on them" not in text
    assert f"the ensemble (the `{router}` of the members), like the mean and the median" in text
    learned = [fake_run(tmp_path / "l0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.45)]
    assert main(["summary", *map(str, learned)]) == 0
    assert "the ensemble and the combiners were fitted on them" in capsys.readouterr().out


def _code_of(run, commit="42662df", **fields):
    code = {"version": "0.1.0", "commit": commit + "0" * 33, "tree": "t1", **fields}
    _edit(run, lambda r: r.update(environment={"code": code}))


def test_a_seed_whose_code_changed_during_its_run_is_flagged_as_other_code(tmp_path, capsys):
    # environment.code_at_end was written by `run` and read by nobody
    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(2)]
    for run in runs:
        _code_of(run, modified=False)
    later = {"version": "0.1.0", "commit": "56ee262" + "0" * 33, "modified": True}
    _edit(runs[1], lambda r: r["environment"].update(code_at_end=later))
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "The seeds ran different hybrid-forecast code (seed 0: commit 42662df; seed 1: commit "
        "42662df, code changed during this seed's run)" in out
    )
    (group,) = load_groups(runs)
    assert summary_json([group])[0]["code_changed_during_run"] == [False, True]
    assert main(["summary", str(runs[1])]) == 0  # one seed: said of it alone
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "The hybrid-forecast code changed during this seed's run (seed 1: commit 42662df, "
        "code changed during this seed's run)" in out
    )
    assert main(["summary", str(runs[0])]) == 0
    assert "hybrid-forecast code" not in capsys.readouterr().out


def test_edited_checkouts_of_one_commit_differ_by_the_hash_of_their_edits(tmp_path, capsys):
    # two seeds with other uncommitted edits at one commit were "the same code"
    from experiments.summary import different_code

    runs = [fake_run(tmp_path / f"s{i}", i, a=0.4, b=0.5, ensemble=0.38) for i in range(2)]
    _code_of(runs[0], modified=True, diff="aaaa11112222")
    _code_of(runs[1], modified=True, diff="bbbb33334444")
    assert main(["summary", *map(str, runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "different hybrid-forecast code (seed 0: commit 42662df, modified (edits aaaa1111); "
        "seed 1: commit 42662df, modified (edits bbbb3333))" in out
    )
    _code_of(runs[1], modified=True, diff="aaaa11112222")  # the same edits: the same code
    assert different_code(load_groups(runs)[0]) == {}
    # the same edits on a docs-only later commit (one tree): still the same code
    _code_of(runs[1], commit="56ee262", modified=True, diff="aaaa11112222")
    assert different_code(load_groups(runs)[0]) == {}
    # a results.json from before the hash: unknown edits, no alarm at one commit
    _code_of(runs[1], modified=True)
    assert different_code(load_groups(runs)[0]) == {}
    # an untracked module alone (tracked files unmodified) is an edit too
    _code_of(runs[0], modified=False, diff="")
    _code_of(runs[1], modified=False, diff="cccc55556666")
    assert different_code(load_groups(runs)[0])[1] == "commit 42662df (edits cccc5555)"


@pytest.mark.parametrize(
    "name", ["bench_spec.json", "bench.md", "bench.csv", "bench_summary.csv", "bench.log"]
)
@pytest.mark.parametrize("mark", ["bench_spec.json", "cells"])
def test_out_must_not_replace_a_file_of_a_bench_folder(name, mark, tmp_path, capsys):
    # `summary bench/cells/* --json --out bench/bench_spec.json` broke `bench --report-only`
    bench = tmp_path / "bench"
    if mark == "cells":  # a bench still at its first cell: no bench_spec.json yet
        cell = fake_run(bench / "cells" / "ETTh1_96_24_s0", 0, a=0.4, b=0.5, ensemble=0.38)
    else:  # its spec alone (no cell started yet), the runs summarised from elsewhere
        bench.mkdir()
        (bench / "bench_spec.json").write_text("{}", encoding="utf-8")
        cell = fake_run(tmp_path / "r0", 0, a=0.4, b=0.5, ensemble=0.38)
    before = {p: p.read_bytes() for p in bench.rglob("*") if p.is_file()}
    assert main(["summary", str(cell), "--json", "--out", str(bench / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the bench's own {name}" in err[0], err
    assert {p: p.read_bytes() for p in bench.rglob("*") if p.is_file()} == before
    assert main(["summary", str(cell), "--out", str(bench / "summary.md")]) == 0


def test_out_in_a_bench_s_cells_folder_is_refused(tmp_path, capsys):
    # a file among the cells is read as a run folder by the next `summary bench/cells/*`
    bench = tmp_path / "bench"
    cell = fake_run(bench / "cells" / "ETTh1_96_24_s0", 0, a=0.4, b=0.5, ensemble=0.38)
    assert main(["summary", str(cell), "--out", str(bench / "cells" / "s.md")]) == 2
    assert "the bench's cells/ folder" in capsys.readouterr().err
    assert not (bench / "cells" / "s.md").exists()


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--latex"], ["--csv"]])
@pytest.mark.parametrize("there", [False, True])
def test_out_naming_a_folder_is_refused_in_one_line(fmt, there, tmp_path, capsys):
    # --out sums/ wrote a file named sums; an existing folder was refused only after
    # every run was read, as an OSError
    fake_run(tmp_path / "r0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.39)
    folder = tmp_path / "sums"
    if there:
        folder.mkdir()
    out = str(folder) + ("" if there else "/")
    assert main(["summary", str(tmp_path / "r0"), *fmt, "--out", out]) == 2
    err = capsys.readouterr().err.splitlines()
    suffix = {"--json": "json", "--latex": "tex", "--csv": "csv"}.get(fmt[0] if fmt else "", "md")
    assert err == [
        f"error: --out {out}: a folder, where a file is to be written; give a file path "
        f"there, not a folder, e.g. {folder / ('summary.' + suffix)}"
    ]
    assert folder.is_dir() == there
