"""Counterfactual prompts (`timellm.probe`) on tiny random backbones and synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_timellm

from timellm.probe import VARIANTS, prompt_probe, stat_variants

pytestmark = pytest.mark.usefixtures("tiny_backbone")


@pytest.fixture(scope="module")
def splits(tiny_splits):
    return tiny_splits


def test_swapped_prompts_move_a_prompted_model(splits):
    m = tiny_timellm(epochs=1).fit(splits.train, splits.val)
    windows, y = splits.test.windows(), splits.test.targets()
    res = prompt_probe(m, windows, y, seed=1)
    stats = ["shuffled:min", "shuffled:max", "shuffled:median", "shuffled:trend"]
    assert stat_variants(m) == stats and set(res) == {*VARIANTS, *stats}
    # one statistic from the shuffled window moves the forecast, by less than all of them
    assert 0 < res["shuffled:min"]["change"] < res["shuffled"]["change"]
    own = m.predict(windows)
    assert res["own"]["change"] == 0.0 and res["own"]["p"] == 1.0
    assert 0.0 <= res["shuffled"]["p"] <= 1.0
    assert res["own"]["mse"] == pytest.approx(float(np.mean((own - y) ** 2)), rel=1e-6)
    # the patches attend to the prompt: another window's text changes the forecast
    assert res["shuffled"]["change"] > 0 and res["none"]["change"] > 0
    # one channel only: errors over that channel's targets
    one = prompt_probe(m, windows, y[..., [1]], channels=[1], seed=1, per_statistic=False)
    assert set(one) == set(VARIANTS)
    assert one["own"]["mse"] == pytest.approx(float(np.mean((own[..., 1] - y[..., 1]) ** 2)))


def _contains(row: list[int], part: list[int]) -> bool:
    return any(row[i : i + len(part)] == part for i in range(len(row) - len(part) + 1))


def test_swapping_statistics_of_an_injected_prompt_keeps_each_channel(splits):
    m = tiny_timellm(epochs=1, inject=["ridge"], prompt_stats="mean").fit(splits.train, splits.val)
    windows = splits.test.windows()
    perm = np.random.default_rng(0).permutation(windows.n)
    own, swapped = m.prompt_set(windows), m.prompt_set(windows, swap=(["mean"], perm))
    assert not np.array_equal(own.ids.numpy(), swapped.ids.numpy())
    # channel c of window w states the mean of channel c of window perm[w] (BERT's
    # tokenizer splits at spaces and punctuation, so a phrase's ids do not depend on context)
    means = windows.x.mean(axis=1)  # [W, C]
    for w in range(0, windows.n, 7):
        for c in range(windows.x.shape[2]):
            part = m.builder.tokenizer(f"mean {means[perm[w], c]:.3g}.", add_special_tokens=False)
            assert _contains(swapped.ids[w, c].tolist(), part["input_ids"])


def test_injected_forecasts_are_computed_once_per_probe(splits, monkeypatch):
    m = tiny_timellm(epochs=1, inject=["ridge"]).fit(splits.train, splits.val)
    calls = []
    real = type(m).injected_forecasts

    def counted(self, windows):
        calls.append(windows.n)
        return real(self, windows)

    monkeypatch.setattr(type(m), "injected_forecasts", counted)
    res = prompt_probe(m, splits.test.windows(), splits.test.targets())
    assert len(res) == 7 and len(calls) == 1  # own, shuffled, none and four statistics


def test_a_model_without_prompt_is_unmoved(splits):
    m = tiny_timellm(epochs=1, prompt="none").fit(splits.train, splits.val)
    res = prompt_probe(m, splits.test.windows(), splits.test.targets())
    assert res["shuffled"]["change"] == 0.0 and res["none"]["change"] == 0.0
    assert res["shuffled"]["mse"] == res["own"]["mse"]
