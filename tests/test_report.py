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
