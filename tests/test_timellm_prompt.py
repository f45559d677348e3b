"""Prompt building: statistics, order, extras, tokenisation cache, descriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timellm.backbone import load_backbone
from timellm.prompt import DATASETS, PromptBuilder, load_description, window_stats


@pytest.fixture(scope="module")
def tokenizer():
    return load_backbone("minilm", llm_layers=1).tokenizer


def test_window_stats_match_a_manual_loop() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 40, 3)).cumsum(axis=1)
    stats = window_stats(x)
    for w in range(5):
        for c in range(3):
            s = x[w, :, c]
            z = (s - s.mean()) / np.sqrt(s.var() + 1e-5)
            assert stats["min"][w, c] == pytest.approx(z.min())
            assert stats["max"][w, c] == pytest.approx(z.max())
            assert stats["median"][w, c] == pytest.approx(np.median(z))
            assert stats["up"][w, c] == (np.diff(z).sum() > 0)


def test_texts_are_window_major_with_extras(tokenizer) -> None:
    x = np.zeros((2, 10, 3))
    x[0, :, 1] = np.arange(10)  # window 0, channel 1 rises
    x[1, :, 2] = -np.arange(10)  # window 1, channel 2 falls
    pb = PromptBuilder(tokenizer, "Test data.", 4, [24, 12])
    texts = pb.build_texts(x, extra=["dlinear: up", None])
    assert len(texts) == 6
    assert "trend upward" in texts[1] and "trend downward" in texts[5]
    assert all(t.endswith("dlinear: up") for t in texts[:3])
    assert not any("dlinear" in t for t in texts[3:])
    assert "top periods 24, 12" in texts[0] and "next 4 steps from the previous 10" in texts[0]
    assert "min -1.57, max 1.57" in texts[1]  # compact numbers (3 significant digits)
    official = PromptBuilder(tokenizer, "Test data.", 4, [24], official=True).build_texts(x)
    assert official[0].startswith("<|start_prompt|>") and "top 5 lags are : [24]" in official[0]
    with pytest.raises(ValueError):
        pb.build_texts(x, extra=["one"])


def test_encode_left_pads_and_caches(tokenizer) -> None:
    calls = []

    class Counting:
        pad_token_id = tokenizer.pad_token_id
        eos_token_id = None

        def __call__(self, texts, **kw):
            calls.append(list(texts))
            return tokenizer(texts, **kw)

    pb = PromptBuilder(Counting(), "d", 4, [2])
    ids, mask = pb.encode(["short", "a much longer prompt text", "short"])
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert mask[1].all() and not mask[0].all()
    assert mask[0, -1] == 1 and mask[0, 0] == 0  # left padding
    assert (ids[0] == ids[2]).all()
    assert (ids[0][mask[0] == 0] == tokenizer.pad_token_id).all()
    for row, text in zip(ids, ["short", "a much longer prompt text", "short"], strict=True):
        own = tokenizer(text)["input_ids"]  # each prompt's own tokens, at the right edge
        assert row[-len(own) :].tolist() == own and mask[0].dtype == torch.long
    pb.encode(["short", "new one"])
    assert calls == [["short", "a much longer prompt text"], ["new one"]]


def test_descriptions_exist_for_every_dataset() -> None:
    generic = load_description(None)
    assert generic and load_description("no-such-dataset") == generic
    for name in DATASETS:
        text = load_description(name)
        assert text and text != generic
    assert load_description("etth1") == load_description("ETTh1")


def test_concise_prompt_is_shorter_than_official(tokenizer) -> None:
    x = np.random.default_rng(0).standard_normal((4, 512, 1)).cumsum(axis=1)
    desc = load_description("ETTh1")
    _, concise = PromptBuilder(tokenizer, desc, 96, [24, 12, 168])(x)
    _, official = PromptBuilder(tokenizer, desc, 96, [24, 12, 168], official=True)(x)
    assert concise.sum(1).max() < 0.7 * official.sum(1).max()
