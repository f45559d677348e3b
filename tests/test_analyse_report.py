"""The routing report's figures and Markdown, drawn from a fake run folder."""

from __future__ import annotations

import numpy as np
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
