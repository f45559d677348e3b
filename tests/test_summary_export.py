"""experiments.summary_export: `summary --latex` and `summary --csv`."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from conftest import fake_run

from experiments.cli import main
from experiments.summary import load_groups
from experiments.summary_export import summary_csv, summary_latex, tex


def body_rows(text: str) -> list[list[str]]:
    """The cells of the tabular's data rows (between \\midrule and \\bottomrule)."""
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule")[0]
    rows = [ln for ln in body.splitlines() if ln.endswith("\\\\")]
    return [[c.strip() for c in ln[: -len("\\\\")].split(" & ")] for ln in rows]


def value(cell: str) -> float:
    """The printed mean of a cell (its first number)."""
    return float(re.search(r"\d+\.\d+", cell).group())


@pytest.fixture
def grid(tmp_path):
    """ETTh1 H=24 and H=48 and exchange_rate H=24, seeds 0-2: members a, b."""
    folders = []
    for s in range(3):
        folders += [
            fake_run(tmp_path / f"h24_{s}", s, a=0.40 + 0.01 * s, b=0.42, ensemble=0.39, mean=0.41),
            fake_run(
                tmp_path / f"h48_{s}", s, pred_len=48, a=0.5, b=0.47 + 0.01 * s, ensemble=0.46
            ),
            fake_run(tmp_path / f"x_{s}", s, dataset="exchange_rate", a=0.1, b=0.2, ensemble=0.12),
        ]
    return folders


def test_latex_rows_cells_marks_and_averages(grid):
    text = summary_latex(load_groups(grid))
    rows = body_rows(text)
    header = text.split("\\midrule\n", 1)[0].splitlines()[-1]
    n_cols = len(header.split(" & "))
    assert re.search(r"\\begin\{tabular\}\{(l+)((?: cc)+)\}", text).group(2).count("cc") == 4
    assert all(len(r) == n_cols for r in rows), "every row has as many cells as the header"
    assert [r[:2] for r in rows] == [
        ["ETTh1", "24"], ["ETTh1", "48"], ["ETTh1", "Avg"], ["exchange\\_rate", "24"]
    ]  # fmt: skip
    # columns: Dataset, H, then (MSE, MAE) for a, b, ensemble, mean
    a24 = np.array([0.40, 0.41, 0.42])
    caption = text.split("\\caption{")[1]
    assert "spread over training seeds only" in caption and "not a test of significance" in caption
    assert rows[0][2] == f"\\underline{{0.410}}{{\\scriptsize$\\pm${a24.std(ddof=1):.3f}}}"
    # the ensemble, lowest, the same in every seed: no "± 0.000" to read as precision
    assert rows[0][6] == "\\textbf{0.390}"
    # second lowest at H=24: a and the mean tie at 0.410, both underlined; b (0.420) plain
    assert rows[0][2].startswith("\\underline{0.410}") and rows[0][8].startswith(
        "\\underline{0.410}"
    )
    assert rows[0][4].startswith("0.420")
    # the mean is absent at H=48: no cell, no Avg
    assert rows[1][8] == "--" and rows[2][8] == "--"
    avg_a = np.mean([a24.mean(), 0.5])
    assert value(rows[2][2]) == pytest.approx(round(avg_a, 3)) and "pm" not in rows[2][2]
    assert "seeds 0, 1, 2" in text and "Seeds" not in text  # one seed set: said once


def test_latex_bold_and_underline_compare_the_printed_values(tmp_path):
    runs = [fake_run(tmp_path / "r", 0, a=0.40004, b=0.39996, c=0.41, ensemble=0.5)]
    rows = body_rows(summary_latex(load_groups(runs), ["a", "b", "c", "ensemble"]))
    mse = rows[0][2::2]  # two tied for best leave no second place
    assert mse == ["\\textbf{0.400}", "\\textbf{0.400}", "0.410", "0.500"]
    bound = fake_run(tmp_path / "o", 0, a=0.4, b=0.5, ensemble=0.45, oracle=0.3)
    row = body_rows(summary_latex(load_groups([bound]), ["a", "b", "oracle"]))[0]
    assert row[2::2] == ["\\textbf{0.400}", "0.500", "0.300"]  # the bound takes no mark
    five = body_rows(summary_latex(load_groups(runs), ["a", "b", "c"], digits=5))[0][2::2]
    assert five == ["\\underline{0.40004}", "\\textbf{0.39996}", "0.41000"]


def test_the_caption_excepts_the_oracle_from_the_bold_only_where_it_is_a_column(tmp_path):
    # "the lowest mean in bold" under a column whose lower oracle was not bold
    groups = load_groups([fake_run(tmp_path / "o", 0, a=0.4, b=0.5, ensemble=0.45, oracle=0.3)])
    caption = lambda names: summary_latex(groups, names).split("\\caption{")[1]  # noqa: E731
    assert "underlined, the oracle bound excepted (not a test" in caption(["a", "oracle"])
    assert "underlined (not a test" in caption(["a", "b"])


def test_latex_setup_column_and_seed_counts_when_groups_differ(tmp_path):
    runs = [
        fake_run(tmp_path / "l0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.45),
        fake_run(tmp_path / "l1", 1, a=0.4, b=0.5, ensemble=0.38, mean=0.45),
        fake_run(tmp_path / "s0", 0, router="stacked", a=0.4, b=0.5, ensemble=0.36, mean=0.45),
    ]
    text = summary_latex(load_groups(runs))
    rows = body_rows(text)
    assert [r[:4] for r in rows] == [
        ["ETTh1", "24", "router learned", "0,1"], ["ETTh1", "24", "router stacked", "0"]
    ]  # fmt: skip
    assert "multicolumn{2}{c}{ensemble}" in text  # two routers: the column is not named by one
    # the mean is a column of its own unless it is every row's ensemble
    assert "{mean}" in text
    only_mean = [
        fake_run(tmp_path / "m0", 0, router="mean", a=0.4, b=0.5, ensemble=0.45, mean=0.45)
    ]
    assert "{mean}" not in summary_latex(load_groups(only_mean))
    assert "{mean}" in summary_latex(load_groups(only_mean), ["a", "mean"])
    assert "router" not in text.split("\\caption{")[1].split("}")[0]  # not in the caption


def test_latex_never_averages_over_other_seeds_than_the_row_states(tmp_path):
    runs = [
        fake_run(tmp_path / "h24_s0", 0, a=0.4, b=0.5, ensemble=0.38),
        fake_run(tmp_path / "h24_s1", 1, a=0.6, b=0.5, ensemble=0.52),
        fake_run(tmp_path / "h48_s2", 2, pred_len=48, a=0.5, b=0.7, ensemble=0.45),
    ]
    text = summary_latex(load_groups(runs), ["a", "b", "ensemble", "stacked", "greedy"])
    rows = body_rows(text)
    # horizons of other seeds: no Avg row mixing them; the seeds named per row
    assert [r[:3] for r in rows] == [["ETTh1", "24", "0,1"], ["ETTh1", "48", "2"]]
    assert "mean over the seeds of each row" in text
    # greedy is reported by seed 0's folder only: no mean over fewer seeds than stated
    assert rows[0][11] == "--" and rows[1][11] == "--"


def test_latex_long_setups_are_lettered_and_spelled_out_in_the_caption(tmp_path):
    plain = fake_run(tmp_path / "plain", 0, a=0.4, b=0.5, ensemble=0.38)
    tuned = fake_run(tmp_path / "tuned", 0, a=0.3, b=0.5, ensemble=0.35)
    params = "member_params:\n  a: {lr: 0.001, epochs: 30, patience: 5, d_model: 16}\n"
    (tuned / "config.yaml").write_text(params, encoding="utf-8")
    text = summary_latex(load_groups([plain, tuned]))
    assert [r[2] for r in body_rows(text)] == ["(1)", "(2)"]
    caption = text.split("\\caption{")[1]
    assert (
        "(1) default settings; (2) a.d\\_model=16, a.epochs=30, a.lr=0.001, a.patience=5."
        in caption
    )


def test_tex_escapes_what_latex_would_read_as_markup():
    assert tex("exchange_rate 5% a&b #1 {x} ~^\\") == (
        "exchange\\_rate 5\\% a\\&b \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{}"
        "\\textbackslash{}"
    )


def test_csv_has_a_row_per_forecast_and_seed_with_the_runs_numbers(grid, tmp_path):
    text = summary_csv(load_groups(grid))
    rows = list(csv.DictReader(io.StringIO(text)))
    res = json.loads((tmp_path / "h24_1" / "results.json").read_text(encoding="utf-8"))
    (row,) = [r for r in rows if r["folder"].endswith("h24_1") and r["forecast"] == "a"]
    assert float(row["test_mse"]) == res["test"]["a"]["mse"]
    assert float(row["val_mse"]) == res["val"]["a"]["mse"] and row["kind"] == "member"
    # greedy only in seed 0's folders; stacked chosen in every run
    assert {r["seed"] for r in rows if r["forecast"] == "greedy"} == {"0"}
    assert all(r["chosen"] == "True" for r in rows if r["forecast"] == "stacked")
    per_group = {"ETTh1|24": 6, "ETTh1|48": 5, "exchange_rate|24": 5}  # forecasts per group
    assert len(rows) == 42  # 3 seeds x (6, 5, 5) forecasts, less greedy in seeds 1-2 (2 x 3)
    for key, n in per_group.items():
        ds, h = key.split("|")
        got = {r["forecast"] for r in rows if r["dataset"] == ds and r["pred_len"] == h}
        assert len(got) == n
    kept = list(csv.DictReader(io.StringIO(summary_csv(load_groups(grid), ["ensemble"]))))
    assert len(kept) == 9 and {r["forecast"] for r in kept} == {"ensemble"}


def test_cli_latex_and_csv_out_files(grid, tmp_path, capsys):
    out = tmp_path / "table.tex"
    argv = ["summary", *map(str, grid), "--latex", "--forecasts", "ensemble,a", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == text
    assert "\\label{tab:hybrid-forecast}" in text
    assert (
        text.startswith("% written by: hybrid-forecast summary ")
        and "--forecasts ensemble,a" in text
    )
    assert "{ensemble (learned)} & \\multicolumn{2}{c}{a}" in text  # the order asked for
    assert main(["summary", *map(str, grid), "--latex", "--label", "tab:etth1-96"]) == 0
    text = capsys.readouterr().out
    assert "\\label{tab:etth1-96}" in text and "--label tab:etth1-96" in text.splitlines()[0]
    assert main(["summary", *map(str, grid), "--csv"]) == 0
    assert capsys.readouterr().out.startswith("dataset,seq_len,pred_len,")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--latex", "--forecasts", "a,zz"], "zz not in these runs"),
        (["--latex", "--forecasts", "a,,b"], "empty name"),
        (["--latex", "--forecasts", "a,a"], "twice"),
        (["--forecasts", "a"], "--forecasts chooses the columns of --latex"),
        (["--digits", "3"], "--digits sets the decimals of --latex"),
        (["--latex", "--digits", "0"], "--digits must be 1 to 8"),
        (["--label", "tab:a"], "--label names the --latex table"),
        (["--latex", "--label", "tab a"], "would break the LaTeX"),
        (["--latex", "--label", "tab}"], "would break the LaTeX"),
        (["--latex", "--csv"], "not allowed with"),
    ],
)
def test_bad_format_options_exit_2_with_one_line(flags, needle, grid, tmp_path, capsys):
    out = tmp_path / "t.tex"
    try:
        rc = main(["summary", str(grid[0]), *flags, "--out", str(out)])
    except SystemExit as exc:  # argparse's own refusals (exclusive flags)
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_latex_of_real_runs_shows_their_results(seed_runs, capsys):
    folders = seed_runs
    capsys.readouterr()
    assert main(["summary", "--latex", "--digits", "4", *map(str, folders)]) == 0
    (row,) = body_rows(capsys.readouterr().out)
    runs = [json.loads((f / "results.json").read_text(encoding="utf-8")) for f in folders]
    for i, name in enumerate(("naive", "snaive", "ensemble", "mean")):
        for j, metric in enumerate(("mse", "mae")):
            want = np.mean([r["test"][name][metric] for r in runs])
            assert value(row[2 + 2 * i + j]) == pytest.approx(want, abs=5e-5)


def _diverge(folder, forecast: str) -> None:
    """Store ``forecast``'s test MSE as an overflowed (null) score."""
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    res["test"][forecast]["mse"] = None
    (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")


def test_latex_marks_a_diverged_cell_and_its_avg_and_says_why(tmp_path):
    # a bare `inf`, and an Avg row averaging it, with nothing in the caption to read it by
    runs = [
        fake_run(tmp_path / f"h{h}_{s}", s, pred_len=h, a=0.4, b=0.5, ensemble=0.38)
        for h in (24, 48)
        for s in (0, 1)
    ]
    _diverge(runs[1], "a")  # H=24, seed 1
    text = summary_latex(load_groups(runs), ["a", "b"])
    rows = body_rows(text)
    assert [r[1] for r in rows] == ["24", "48", "Avg"]
    assert rows[0][2] == "inf$^\\dagger$" and rows[2][2] == "inf$^\\dagger$"
    assert rows[1][2] == "\\textbf{0.400}"
    assert rows[2][4] == "\\textbf{0.500}"  # the diverged forecast ranks last
    caption = text.split("\\caption{")[1].split("\\label")[0]
    assert "$^\\dagger$: diverged" in caption
    clean = summary_latex(load_groups(runs[2:]), ["a", "b"])
    assert "dagger" not in clean


def test_latex_a_spread_below_the_digits_is_not_printed_as_zero(tmp_path):
    runs = [
        fake_run(tmp_path / "s0", 0, a=0.40000, b=0.5, ensemble=0.38),
        fake_run(tmp_path / "s1", 1, a=0.40001, b=0.5, ensemble=0.39),
    ]
    (row,) = body_rows(summary_latex(load_groups(runs), ["a", "ensemble"]))
    assert row[2] == "0.400{\\scriptsize$\\pm{<}$0.001}"  # not ±0.000, read as no spread
    assert row[4] == "\\textbf{0.385}{\\scriptsize$\\pm$0.007}"
    (row,) = body_rows(summary_latex(load_groups(runs), ["a", "ensemble"], digits=5))
    assert row[2] == "0.40000{\\scriptsize$\\pm$0.00001}"


def test_latex_caption_of_mixed_seeds_has_one_parenthetical(tmp_path):
    runs = [
        fake_run(tmp_path / "h24_s0", 0, a=0.4, b=0.5, ensemble=0.38),
        fake_run(tmp_path / "h24_s1", 1, a=0.6, b=0.5, ensemble=0.52),
        fake_run(tmp_path / "h48_s2", 2, pred_len=48, a=0.5, b=0.7, ensemble=0.45),
    ]
    caption = summary_latex(load_groups(runs)).split("\\caption{")[1].split("\\label")[0]
    assert ") (" not in caption, caption
    assert "mean over the seeds of each row ($\\pm$: the sample standard deviation" in caption
    assert "training seeds only" in caption and "every seed gives the same score" in caption


def test_latex_header_records_finished_only(grid, tmp_path, capsys):
    # the recorded command, rerun, refused the unfinished folder it had left out
    going = tmp_path / "going"
    going.mkdir()
    assert main(["summary", *map(str, grid), str(going), "--finished-only", "--latex"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("% written by: hybrid-forecast summary ") and "--finished-only" in first
    assert main(["summary", *map(str, grid), "--latex"]) == 0
    assert "--finished-only" not in capsys.readouterr().out.splitlines()[0]


def test_csv_has_the_rolling_origin_score_of_the_combiners(tmp_path):
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    res = json.loads((runs[0] / "results.json").read_text(encoding="utf-8"))
    res["combiners"]["stacked"]["val_cv"] = 0.31
    (runs[0] / "results.json").write_text(json.dumps(res), encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(summary_csv(load_groups(runs)))))
    cv = {(r["forecast"], r["seed"]): r["val_cv_mse"] for r in rows}
    assert cv[("stacked", "0")] == "0.31" and cv[("stacked", "1")] == "" and cv[("a", "0")] == ""


def test_latex_caption_has_no_path_of_the_data_file(tmp_path):
    # the same file run from two folders: its absolute path was a setting in the caption
    runs = [fake_run(tmp_path / f"s{s}", s, a=0.4, b=0.5, ensemble=0.38) for s in (0, 1)]
    for run, where in zip(runs, ("/home/ann", "/scratch/ann"), strict=True):
        (run / "config.yaml").write_text(f"data_path: {where}/mine.csv\n", encoding="utf-8")
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        res.update(dataset="mine", data={"published": None, "sha256": "ab" * 32})
        (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    text = summary_latex(load_groups(runs))
    assert "/home/ann" not in text and "/scratch/ann" not in text
    assert body_rows(text)[0][:2] == ["mine", "24"]  # one row: the seeds pooled


def _timellm_run(folder, seed, spec="timellm", member_params=None, training=None, commit="a"):
    """A finished run folder of naive and a Time-LLM member: results.json as `summary`
    reads it and, with ``member_params``, the config.yaml of its --set values."""
    members = ["naive", spec]
    scores = {"naive": 0.5, spec: 0.4 + 0.01 * seed, "ensemble": 0.42}
    res = {
        "dataset": "ETTh1",
        "seq_len": 96,
        "pred_len": 24,
        "features": "M",
        "seed": seed,
        "members": members,
        "router": "mean",
        "test": {n: {"mse": v, "mae": v / 2} for n, v in scores.items()},
        "val": {n: {"mse": v} for n, v in scores.items()},
        "environment": {
            "code": {"version": "0.1.0", "commit": commit * 40, "modified": False, "tree": commit}
        },
    }
    if training:
        res["training"] = training
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")
    if member_params:
        cfg = {"members": members, "member_params": member_params}
        (folder / "config.yaml").write_text(json.dumps(cfg), encoding="utf-8")  # YAML too
    return folder


def _caption(folders) -> str:
    return summary_latex(load_groups(folders)).split("\\caption{")[1].split("}\n")[0]


def test_latex_caption_names_each_timellm_backbone_and_its_layers(tmp_path):
    # "timellm" over the default MiniLM read as the paper's LLaMA-7B model
    default = [_timellm_run(tmp_path / f"d{s}", s) for s in (0, 1)]
    assert "timellm: Time-LLM over all-MiniLM-L6-v2, 6 layers." in _caption(default)
    spec = "timellm@backbone=/models/Llama_2-7b"
    given = [
        _timellm_run(tmp_path / f"g{s}", s, spec, member_params={"timellm": {"llm_layers": 2}})
        for s in (0, 1)
    ]
    caption = _caption(given)
    assert f"{tex(spec)}: Time-LLM over Llama\\_2-7b, 2 layers." in caption
    assert "Still improving" not in caption and "different hybrid-forecast code" not in caption


def test_latex_caption_says_all_layers_where_the_run_set_llm_layers_null(tmp_path):
    # null is every layer (TimeLLMForecaster), and the caption said the default's 6
    runs = [
        _timellm_run(tmp_path / f"a{s}", s, member_params={"timellm": {"llm_layers": None}})
        for s in (0, 1)
    ]
    assert "timellm: Time-LLM over all-MiniLM-L6-v2, all layers." in _caption(runs)


def test_latex_caption_says_still_improving_and_different_code_as_summary_does(tmp_path):
    curve = {"epochs": 3, "best_epoch": 3, "still_improving": True}
    runs = [
        _timellm_run(tmp_path / "s0", 0, training={"timellm": curve}, commit="a"),
        _timellm_run(tmp_path / "s1", 1, commit="b"),
    ]
    caption = _caption(runs)
    assert (
        "Still improving at the last epoch (more epochs may do better): timellm (ETTh1 H=24 "
        "seed 0)." in caption
    )
    assert (
        "The seeds of ETTh1 H=24 ran different hybrid-forecast code: a change between them "
        "may move the numbers." in caption
    )


def test_the_captions_timellm_defaults_are_the_members():
    import inspect

    from experiments.summary_export import TIMELLM_DEFAULTS
    from timellm.member import TimeLLMForecaster

    params = inspect.signature(TimeLLMForecaster).parameters
    assert TIMELLM_DEFAULTS == {k: params[k].default for k in TIMELLM_DEFAULTS}


def _edit(folder, change) -> None:
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    change(res)
    (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")


def test_latex_caption_of_one_seed_says_the_lowest_not_the_lowest_mean(tmp_path):
    one = [fake_run(tmp_path / "s0", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.45)]
    caption = _caption(one)
    assert "Lower is better: the lowest in bold, the second lowest underlined" in caption
    two = one + [fake_run(tmp_path / "s1", 1, a=0.4, b=0.5, ensemble=0.38, mean=0.45)]
    assert "Lower is better: the lowest mean in bold" in _caption(two)


def test_latex_caption_notes_name_the_setup_of_rows_that_share_a_cell(tmp_path):
    # "dlinear (ETTh1 H=24, ETTh1 H=24)": two routers in one cell, told apart by nothing
    curve = {"a": {"epochs": 3, "best_epoch": 3, "still_improving": True}}
    runs = [
        fake_run(tmp_path / "l", 0, a=0.4, b=0.5, ensemble=0.38, mean=0.45),
        fake_run(tmp_path / "s", 0, router="stacked", a=0.4, b=0.5, ensemble=0.36, mean=0.45),
        fake_run(tmp_path / "h48", 0, router="stacked", pred_len=48, a=0.4, b=0.5, ensemble=0.4),
    ]
    for run in runs:
        _edit(run, lambda r: r.update(training=curve))
    caption = _caption(runs)
    assert (
        "Still improving at the last epoch (more epochs may do better): a (ETTh1 H=24 "
        "[router learned], ETTh1 H=24 [router stacked], ETTh1 H=48)." in caption
    )


def test_latex_caption_flags_a_seed_whose_code_changed_during_its_run(tmp_path):
    # results.json's code_at_end, which `run` writes and warns of, was lost in the table
    runs = [_timellm_run(tmp_path / f"s{s}", s) for s in (0, 1, 2)]
    later = {"version": "0.1.0", "commit": "b" * 40, "modified": False}
    for run in runs[1:]:
        _edit(run, lambda r: r["environment"].update(code_at_end=later))
    caption = _caption(runs)
    assert (
        "Code changed during this seed's run (ETTh1 H=24 seeds 1, 2): a module imported "
        "after the change may be the new code." in caption
    )
    assert "ran different hybrid-forecast code" not in caption  # one commit for all three
    assert "Code changed" not in _caption([runs[0]])
