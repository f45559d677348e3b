"""The search space: lookbacks that are multiples of a period, patch choices that fit, and
only the settings the user did not fix drawn."""

from __future__ import annotations

from dataclasses import replace

import pytest

optuna = pytest.importorskip("optuna")
from conftest import tune_spec  # noqa: E402

from experiments.tune_space import lookback_range, period_candidates, suggest  # noqa: E402


def test_lookback_multiples_and_candidates():
    assert lookback_range(24, 96, 720) == (96, 720)
    assert lookback_range(168, 96, 720) == (168, 672)
    assert lookback_range(1000, 96, 720) is None
    assert period_candidates([168, 24, 24, 1000, 12, 1], 96, 720, 3) == [168, 24, 12]


def test_patch_choices_fit_the_shortest_lookback():
    from experiments.tune_space import patch_choices

    for period, shortest in ((7, 7), (7, 14), (24, 96), (168, 168), (5, 3)):
        for choice in patch_choices(period, shortest):
            assert int(choice.split("/")[0]) <= shortest, (period, shortest, choice)
    assert "16/8" in patch_choices(24, 96)  # the official patch where it fits
    assert {"24/12", "24/24"} <= set(patch_choices(24, 96))  # with and without overlap


def test_settings_the_user_fixed_are_not_tuned_and_specs_with_settings_are(tmp_path):
    spec = replace(
        tune_spec(tmp_path / "x.csv", tmp_path / "t", trials=1),
        members=["dlinear@lr=0.01", "patchtst", "nlinear"],
        member_params={"patchtst": {"patch_len": 12}, "nlinear": {"epochs": 2}},
    )
    attrs = {"periods": [24], "min_seq_len": 48, "max_seq_len": 96}
    attrs["patch_choices"] = {"24": ["8/4", "24/24"]}
    trial = optuna.create_study().ask()
    _, _, tuned = suggest(trial, spec, attrs)
    # dlinear@lr=0.01 is tuned (by its base name) but keeps its own lr; patchtst keeps the
    # --set patch length and tunes its lr; nlinear's fixed epochs leave its lr tuned
    assert set(tuned) == {"dlinear", "patchtst", "nlinear"}
    assert "lr" not in tuned["dlinear"] and "kernel" in tuned["dlinear"]
    assert set(tuned["patchtst"]) == {"lr"} and set(tuned["nlinear"]) == {"lr"}
    assert not any(k.startswith(("dlinear.lr", "patchtst.patch")) for k in trial.params)


def test_the_search_space_table_matches_what_each_space_draws(tmp_path):
    from experiments.tune_space import SPACES, TUNED_GROUPS

    attrs = {"patch_choices": {"24": ["8/4", "24/24"]}}
    assert set(SPACES) == set(TUNED_GROUPS)
    for base, groups in TUNED_GROUPS.items():
        every = {k for g in groups for k in g}
        assert set(SPACES[base](optuna.create_study().ask(), 24, 96, attrs, set())) == every
        for g in groups:  # fixing one key of a group keeps the whole group out
            drawn = SPACES[base](optuna.create_study().ask(), 24, 96, attrs, {g[0]})
            assert set(drawn) == every - set(g), (base, g)


@pytest.mark.parametrize("seq_len,drawn,kernel", [(36, 75, 35), (37, 75, 37), (48, 25, 25)])
def test_a_free_dlinear_kernel_is_cut_to_an_odd_one_within_the_lookback(
    seq_len, drawn, kernel, tmp_path
):
    # a moving average wider than the lookback is refused by DLinear: the trial would fail
    from optuna.trial import FixedTrial

    spec = replace(tune_spec(tmp_path / "x.csv", tmp_path / "t", trials=1), members=["dlinear"])
    attrs = {"periods": [seq_len], "min_seq_len": seq_len, "max_seq_len": seq_len}
    trial = FixedTrial(
        {
            "period": seq_len,
            f"seq_len_p{seq_len}": seq_len,
            "dlinear.lr": 1e-3,
            "dlinear.kernel_mode": "free",
            "dlinear.kernel": drawn,
        }
    )
    assert suggest(trial, spec, attrs) == (
        seq_len,
        seq_len,
        {"dlinear": {"kernel": kernel, "lr": 1e-3}},
    )
