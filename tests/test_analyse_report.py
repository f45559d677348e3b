"""The routing report's figures and Markdown, drawn from a fake run folder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_run_folder

from experiments.analyse import analyse_run, load_run, window_features
from experiments.analyse_report import make_figures, probe_figure, report_markdown

PNG = b"\x89PNG"


def test_figures_follow_what_the_run_has(synth_csv, tmp_path):
    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    feats = window_features(np.asarray(run.test["naive"][:, :96]), 24)  # any [W, L, C] input
    out = tmp_path / "with"
    out.mkdir()
    names = make_figures(run, feats, out)
    assert names == [
        "weights_distribution.png",
        "weights_over_time.png",
        "weights_vs_features.png",
        "win_rates.png",
        "router_vs_mean.png",
    ]
    assert all((out / n).read_bytes()[:4] == PNG for n in names)
    # a plain mean writes no weights; without data there are no features: only the
    # figure that needs neither
    run.weights = None
    bare = tmp_path / "bare"
    bare.mkdir()
    assert make_figures(run, None, bare) == ["router_vs_mean.png"]
    assert sorted(p.name for p in bare.iterdir()) == ["router_vs_mean.png"]


def test_report_names_the_run_its_members_and_links_each_figure(synth_csv, tmp_path):
    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    an = analyse_run(run, None, None, None)
    text = report_markdown(run, an, [], ["a.png", "b.png"], "features skipped (test)")
    assert text.startswith("# Routing report: synth features=M L=96 H=24 seed=0\n")
    assert "members naive, snaive, window_mean" in text
    assert "features skipped (test)" in text
    assert text.rstrip().endswith("![a.png](a.png)\n![b.png](b.png)")


def test_probe_figure_labels_each_counterfactual_with_its_p(tmp_path):
    probe = {
        "own": {"mse": 0.5, "change_rel": 0.0, "p": 1.0},
        "shuffled": {"mse": 0.55, "change_rel": 0.02, "p": 0.01},
        "none": {"mse": 0.5, "change_rel": 0.001, "p": 0.9},
        "shuffled:trend": {"mse": 0.49, "change_rel": 0.005, "p": 0.3},
    }
    assert probe_figure(probe, tmp_path) == ["prompt_probe.png"]
    assert (tmp_path / "prompt_probe.png").read_bytes()[:4] == PNG


def _run_and_analysis(synth_csv, tmp_path, **kw):
    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run", **kw))
    return run, analyse_run(run, None, None, None)


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next section."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_feature_figure_splits_a_tied_win_as_the_tables_do(synth_csv, tmp_path, monkeypatch):
    # two members making the same forecast tie in every window: argmin gave the first
    # all the wins in the figure while the tables split them
    import ensemble.figures

    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    run.test["snaive"] = run.test["naive"].copy()
    run.weights = None
    feats = window_features(np.asarray(run.test["window_mean"][:, :96]), 24)
    drawn = {}
    monkeypatch.setattr(
        ensemble.figures, "save", lambda fig, path, **kw: drawn.update({path.name: fig})
    )
    make_figures(run, feats, tmp_path)
    ax = drawn["weights_vs_features.png"].axes[0]
    naive, snaive = (np.asarray(line.get_ydata(), float) for line in ax.lines[:2])
    ok = ~np.isnan(naive)
    assert ok.any()
    np.testing.assert_allclose(naive[ok], snaive[ok])  # the tie split evenly
    assert np.nanmax(naive) <= 0.5 + 1e-12


def test_a_low_dof_test_carries_its_caveat_in_the_text_and_the_table(synth_csv, tmp_path):
    from ensemble import metrics

    run, an = _run_and_analysis(synth_csv, tmp_path)
    weak = {"diff": 0.1, "dm": 1.2, "p": 0.3, "dof": 1}
    an["router_vs_mean"]["dm"] = weak
    row = {k: v for k, v in an["ablation"][-1].items() if k != "p_holm"}
    an["ablation"] = [
        *an["ablation"][:-1],
        {**row, "p_vs_full": 0.4, "dm_vs_full": 0.9, "dof_vs_full": 1},
    ]
    text = report_markdown(run, an, [], [], "")
    note = metrics.caveat(weak)
    assert note
    where = _section(text, "Where the router beats or loses to the mean")
    assert f"p = 0.3 (two-sided, 1 dof); {note}." in where
    table = [ln for ln in _section(text, "Ablations").splitlines() if ln.startswith("|")]
    assert table[0].startswith(
        "| variant | test MSE | test MAE | Δ MSE vs full | p vs full | dof | note |"
    )
    assert len({ln.count("|") for ln in table}) == 1, table
    cells = [c.strip() for c in table[-2].split("|")]  # the edited row, before "without timellm"
    assert cells[6:8] == ["1", note]


def test_an_undefined_p_is_a_blank_cell(synth_csv, tmp_path):
    run, an = _run_and_analysis(synth_csv, tmp_path)
    an["router_vs_mean"]["dm"] = {"diff": 0.0, "dm": None, "p": float("nan"), "dof": 1}
    an["ablation"][-1] |= {"p_vs_full": float("nan"), "dm_vs_full": None, "p_holm": None}
    text = report_markdown(run, an, [], [], "")
    assert "nan" not in text.lower()
    assert "no p (the test is undefined here)" in text


def test_the_holm_family_leaves_out_a_row_that_tests_nothing(synth_csv, tmp_path):
    from ensemble import metrics

    run, an = _run_and_analysis(synth_csv, tmp_path, router="mean")
    rows = {r["variant"]: r for r in an["ablation"]}
    assert rows["mean of all members"]["dm_vs_full"] == 0.0  # the `mean` router's own forecast
    assert rows["mean of all members"]["p_holm"] is None
    tested = [r for r in an["ablation"] if r["variant"].startswith("without ")]
    expect = metrics.holm([r["p_vs_full"] for r in tested])
    assert [r["p_holm"] for r in tested] == pytest.approx(expect)
    text = report_markdown(run, an, [], [], "")
    ablations = _section(text, "Ablations")
    assert f"(Holm {expect[0]:.3g})" in ablations
    mean_row = next(ln for ln in ablations.splitlines() if ln.startswith("| mean of all members"))
    assert "Holm" not in mean_row
    assert "family of 3 tests: without naive, without snaive, without window_mean" in ablations
    assert "Left out of the family: mean of all members" in ablations


def test_captions_say_only_what_the_run_has(synth_csv, tmp_path):
    run, an = _run_and_analysis(synth_csv, tmp_path)
    text = report_markdown(run, an, [], [], "")
    # window-varying weights: the channel means need not come from a fit per channel
    channels = _section(text, "Weights per channel")
    assert "fitted them per channel" not in channels
    assert "features (or its fits) differ" in channels
    # the mean weight beside pooled MSEs counts each channel equally
    assert "each channel counting equally" in _section(text, "Validation against test")
    # weights fixed per channel
    run.weights = np.broadcast_to(run.weights[:1], run.weights.shape).copy()
    an = analyse_run(run, None, None, None)
    assert "its own weights, the same in every window" in _section(
        report_markdown(run, an, [], [], ""), "Weights per channel"
    )
    # no router weights: the regime caption describes no weight columns
    feats = window_features(np.asarray(run.test["naive"][:, :96]), 24)
    run.weights = None
    an = analyse_run(run, feats, None, None)
    regimes = _section(report_markdown(run, an, [], [], ""), "Win rates per regime")
    assert "`weight`" not in regimes and " weight |" not in regimes
    assert "No weight columns" in regimes


def test_equal_step_weights_of_a_per_step_rule_are_said_once(synth_csv, tmp_path):
    # stacked weighs each step apart; when its fit gave every step and channel the same
    # weights the section said both "(a fixed rule)" and "weighs each horizon step apart"
    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run", router="stacked"))
    run.weights = np.full(run.weights.shape, 1 / 3)
    run.step_weights = np.full(run.step_weights.shape, 1 / 3)
    run.horizon_averaged = True
    an = analyse_run(run, None, None, None)
    weights = _section(report_markdown(run, an, [], [], ""), "Weight distribution per member")
    assert "a fixed rule" not in weights
    assert "every horizon step" in weights
    assert weights.count("weighs each") == 1


def test_a_member_that_has_not_learned_the_series_is_said_before_every_section():
    from experiments.analyse_report import _below_baseline_note

    res = {
        "members": ["snaive", "dlinear", "timellm"],
        "val": {"snaive": {"mse": 0.51}, "dlinear": {"mse": 0.39}, "timellm": {"mse": 0.94}},
        "baseline": {"forecast": "snaive@period=24", "val_mse": 0.51},
    }
    note = " ".join(_below_baseline_note(res))
    assert "Not yet a model of the series: timellm**" in note and "0.5100" in note
    res["val"]["timellm"]["mse"] = 0.45
    assert _below_baseline_note(res) == []
    assert _below_baseline_note({k: v for k, v in res.items() if k != "baseline"}) == []


def test_the_regime_a_member_is_weighted_most_in_says_its_win_rate_there():
    # "weights timellm most in trend strength low" read as praise, yet the regime table
    # had timellm's worst win rate there (34 % against 44 %)
    from experiments.analyse_report import _skill_section

    side = {"share": 0.5, "win_rate": 0.4, "mse_ratio": 1.0}
    an = {
        "weight_follows_skill": {"timellm": {"above": side, "below": side}, "naive": None},
        "regimes": {
            "trend_strength": {
                "low": {"mean_weight": {"timellm": 0.6}, "win_rate": {"timellm": 0.343}},
                "mid": {"mean_weight": {"timellm": 0.4}, "win_rate": {"timellm": 0.445}},
                "high": {"mean_weight": {"timellm": 0.3}, "win_rate": {"timellm": 0.435}},
            }
        },
    }
    text = " ".join(_skill_section(an, ["naive", "timellm"]))
    assert (
        "trend strength low (0.600, against 0.300 in high; it wins 34.3% of that regime's "
        "windows, 43.5% of high's)" in text
    )
