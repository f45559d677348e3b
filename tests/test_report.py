"""experiments.report: the run's training figure (results.md is checked through `run`)."""

from __future__ import annotations

from experiments.report import _wrap_spec, plot_training


def test_long_member_specs_break_before_a_setting():
    spec = "itransformer@d_model=16@n_heads=2@d_ff=32@epochs=2"
    lines = _wrap_spec(spec).split("\n")
    assert lines == ["itransformer@d_model=16@n_heads=2", "@d_ff=32@epochs=2"]
    assert "".join(lines) == spec and max(map(len, lines)) <= 40
    assert _wrap_spec("timellm@patch_len=24@stride=24") == "timellm@patch_len=24@stride=24"


def test_training_figure_has_a_panel_per_member(tmp_path):
    curve = dict(epochs=3, train_mse=[0.5, 0.4, 0.35], val_mse=[0.7, 0.65, 0.66], best_epoch=2)
    path = tmp_path / "training.png"
    plot_training(path, {"dlinear": curve, "itransformer@d_model=16@n_heads=2@d_ff=32": curve})
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_p_value_in_the_combiners_table_says_which_way():
    # "held-out p 0.008" of a combiner worse than stacked read as a win
    from experiments.report import signed_p

    assert signed_p({"diff": 0.004, "p": 0.00796}) == "higher, p 0.00796"
    assert signed_p({"diff": -0.004, "p": 0.0194}) == "lower, p 0.0194"
    assert signed_p({"diff": 0.0, "p": float("nan")}) == "" == signed_p(None)


def test_the_combiners_p_against_the_mean_carry_holms_adjustment_over_real_tests():
    # 10 tests in that column, one of them the mean against itself (p 1, no test)
    from experiments.report import results_markdown

    def row(p, dm):
        return {
            "chosen": False,
            "val_cv": 0.6,
            "val": {"mse": 0.6},
            "test": {"mse": 0.37, "mae": 0.39},
            "test_vs_mean": {"diff": -0.001 if dm else 0.0, "p": p, "dm": dm},
        }

    res = {
        "dataset": "ETTh1",
        "seq_len": 96,
        "pred_len": 96,
        "seed": 0,
        "members": ["a"],
        "router": "learned",
        "periods": [24],
        "windows": {"train": 1, "val": 1, "test": 1},
        "val": {"a": {"mse": 0.6, "mae": 0.5}},
        "test": {"a": {"mse": 0.4, "mae": 0.4}},
        "timings_s": {"a": {"fit": 1.0, "predict": 1.0}},
        "combiners": {"x": row(0.01, -2.9), "y": row(0.04, -2.1), "mean": row(1.0, 0.0)},
    }
    md = results_markdown(res)
    assert "lower, p 0.01 (Holm 0.02)" in md and "lower, p 0.04 (Holm 0.04)" in md
    assert "| mean | 0.6000 |" in md and "equal, p 1 |" in md  # no Holm: not in the family


def test_training_figure_ticks_whole_epochs(monkeypatch, tmp_path):
    # three epochs were ticked 1.00, 1.25, ..., 3.00: there is no epoch 1.25
    import ensemble.figures

    saved = []
    monkeypatch.setattr(ensemble.figures, "save", lambda fig, path, **kw: saved.append(fig))
    curve = dict(epochs=3, train_mse=[0.5, 0.4, 0.35], val_mse=[0.7, 0.65, 0.66], best_epoch=2)
    plot_training(tmp_path / "training.png", {"dlinear": curve})
    (ax,) = saved[0].axes
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    ensemble.figures.pyplot().close("all")


def test_a_reused_members_seconds_say_they_are_an_earlier_fits():
    # the fit seconds of a member reused from an earlier run read as this run's cost
    from experiments.report import results_markdown

    res = _res(
        val={m: {"mse": 0.6, "mae": 0.5} for m in "abc"},
        test={m: {"mse": 0.4 + i, "mae": 0.4} for i, m in enumerate("abc")},
        timings_s={
            "a": {"fit": 12.5, "predict": 1.0},
            "b": {"fit": 3.0, "predict": 1.0, "resumed": True},
            "c": {"fit": 2.0, "predict": 1.0},
        },
        member_fits={"a": {"reused": True}, "b": {"reused": True}, "c": {"reused": False}},
    )
    rows = {line.split(" |")[0][2:]: line for line in results_markdown(res).splitlines()}
    assert rows["a **(best member on val)**"].endswith("| 12.5 (reused) | 1.0 (reused) |")
    assert rows["b"].endswith(
        "| 3.0 (reused; resumed: the last part only) | 1.0 (reused; resumed: the last part only) |"
    )
    assert rows["c"].endswith("| 2.0 | 1.0 |")
    del res["member_fits"]  # results.json of runs before it: nothing to say
    assert "reused" not in results_markdown(res)


def _res(**more):
    res = {
        "dataset": "ETTh1",
        "seq_len": 96,
        "pred_len": 96,
        "seed": 0,
        "members": ["a", "b", "c"],
        "router": "mean",
        "periods": [168, 24],
        "windows": {"train": 1, "val": 1, "test": 1},
        # b lowest on val; a the lowest member on test; the ensemble lowest on test
        "val": {
            "a": {"mse": 0.62, "mae": 0.5},
            "b": {"mse": 0.6, "mae": 0.5},
            "c": {"mse": 0.7, "mae": 0.5},
            "ensemble": {"mse": 0.55, "mae": 0.5},
            "oracle": {"mse": 0.1, "mae": 0.1},
        },
        "test": {
            n: {"mse": m, "mae": 0.4}
            for n, m in {"a": 0.38, "b": 0.4, "c": 0.5, "ensemble": 0.37, "oracle": 0.1}.items()
        },
        "timings_s": {},
    }
    return res | more


def test_results_md_marks_the_best_member_on_val_not_the_lowest_test_mse():
    # a bold "(lowest test MSE)" copied into a thesis table nudged the choice onto test
    from experiments.report import results_markdown

    md = results_markdown(_res())
    rows = {line.split(" |")[0][2:] for line in md.splitlines() if line.startswith("| ")}
    assert "b **(best member on val)**" in rows and {"a", "c", "ensemble", "oracle"} <= rows
    assert "lowest test" not in md and "no forecast is marked by its test MSE" in md


def test_the_best_member_on_val_ties_to_the_first_listed_and_skips_the_diverged():
    from experiments.report import best_member_on_val

    res = _res()
    res["val"]["c"] = {"mse": 0.6 - 2**-54}  # b's score, summed in another order
    assert best_member_on_val(res) == "b"
    res["val"]["a"] = {"mse": None}  # diverged (null in results.json): never chosen
    res["val"]["b"] = {"mse": float("inf")}
    assert best_member_on_val(res) == "c"
    assert best_member_on_val({"members": ["a"], "val": {"a": {"mse": None}}}) is None


def test_results_md_says_which_period_each_member_used():
    # the run listed periods [168, 24]; at L=96 snaive silently used 24
    from experiments.report import results_markdown

    used = {
        "a": {"period": 24},
        "b": {"season": 0, "fourier": [24, 168]},
        "c": None,
    }
    md = results_markdown(_res(member_periods=used))
    assert (
        "Each member's period settings, as it forecast: a period 24; b no seasonal "
        "difference, Fourier periods 24, 168; none: c." in md
    )
    assert "period settings" not in results_markdown(_res())  # runs before the record
