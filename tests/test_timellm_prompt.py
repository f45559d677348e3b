"""Prompt building: statistics, order, extras, tokenisation cache, descriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timellm.backbone import load_backbone
from timellm.prompt import (
    DATASETS,
    STAT_LABELS,
    PromptBuilder,
    load_description,
    parse_stats,
    window_stats,
)


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
            assert stats["trend"][w, c] == (np.diff(z).sum() > 0)


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


def test_chosen_statistics_are_stated_in_order_with_their_values(tokenizer) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(96)
    x = np.stack([np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(96)] * 2, axis=-1)
    x = np.stack([3 + 2 * x, np.full((96, 2), 5.0)])  # [2, 96, 2]: daily cycle, constant
    pb = PromptBuilder(tokenizer, "D.", 8, [24], stats="mean,std+last,volatility,window_period")
    texts = pb.build_texts(x)
    z = (x[0, :, 0] - x[0, :, 0].mean()) / np.sqrt(x[0, :, 0].var() + 1e-5)
    expected = (
        f"Input: mean {x[0, :, 0].mean():.3g}, std {x[0, :, 0].std():.3g}, last {z[-1]:.3g}, "
        f"volatility {np.diff(z).std():.3g}, window period 24."
    )
    assert texts[0].endswith(expected), texts[0]
    assert texts[2].endswith("mean 5, std 0, last 0, volatility 0, window period none.")
    strength = PromptBuilder(tokenizer, "D.", 8, [24], stats=["seasonal_strength"])
    assert float(strength.build_texts(x)[0].split("seasonal strength ")[1][:-1]) > 0.9
    # the paper's five, in the paper's order, are the default and give the same text
    default = PromptBuilder(tokenizer, "D.", 8, [24]).build_texts(x)
    named = PromptBuilder(tokenizer, "D.", 8, [24], stats="min,max,median,trend,periods")
    assert named.build_texts(x) == default
    assert set(parse_stats(None)) < set(STAT_LABELS)


def test_the_default_prompt_is_the_text_it_always_was(tokenizer) -> None:
    # written out in full, as the code before prompt_stats wrote it (checked against it):
    # older checkpoints were trained on exactly this text
    x = np.zeros((1, 10, 2))
    x[0, :, 0] = np.arange(10)
    x[0, :, 1] = -(np.arange(10) ** 2)
    texts = PromptBuilder(tokenizer, "Test {stats} data.", 4, [24, 12]).build_texts(x, ["ridge up"])
    assert texts == [
        "Test {stats} data. Task: forecast the next 4 steps from the previous 10. "
        "Input: min -1.57, max 1.57, median 0, trend upward, top periods 24, 12. ridge up",
        "Test {stats} data. Task: forecast the next 4 steps from the previous 10. "
        "Input: min -1.96, max 1.06, median 0.298, trend downward, top periods 24, 12. ridge up",
    ]


def test_bad_statistics_are_refused(tokenizer) -> None:
    with pytest.raises(ValueError, match="unknown prompt statistic"):
        parse_stats("min,mode")
    with pytest.raises(ValueError, match="twice"):
        parse_stats("min+min")
    for empty in (" , ", "[]", "null", []):  # how --set and YAML spell an empty list
        with pytest.raises(ValueError, match="at least one"):
            parse_stats(empty)
    for number in (1, True, 0.5):
        with pytest.raises(ValueError, match="must name statistics, e.g. min,max,mean"):
            parse_stats(number)
    with pytest.raises(ValueError, match="official prompt"):
        PromptBuilder(tokenizer, "D.", 8, [24], official=True, stats="mean")


def test_a_swapped_statistic_comes_from_the_donor_window(tokenizer) -> None:
    x = np.zeros((2, 10, 1))
    x[0, :, 0] = np.arange(10)  # rises
    x[1, :, 0] = 100 - np.arange(10) ** 2  # falls, another level
    pb = PromptBuilder(tokenizer, "D.", 4, [24], stats="mean,trend")
    own = pb.build_texts(x)
    donor = x[::-1]
    swapped = pb.build_texts(x, swap=["trend"], donor=donor)
    assert "mean 4.5, trend downward" in swapped[0] and "mean 4.5, trend upward" in own[0]
    assert "trend upward" in swapped[1] and own[1].split(",")[0] == swapped[1].split(",")[0]
    with pytest.raises(ValueError, match="donor"):
        pb.build_texts(x, swap=["trend"])


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


def test_the_token_cache_holds_well_under_a_kilobyte_per_prompt(tokenizer) -> None:
    # ETTm1 at L=512 tokenises about 400k prompts: 2.7 kB each as Python strings and
    # lists of ints was 1 GB held for the whole fit
    import gc
    import tracemalloc

    x = np.random.default_rng(0).standard_normal((300, 96, 7))
    pb = PromptBuilder(tokenizer, load_description("ETTm1"), 96, [96, 672], seq_len=512)
    texts = pb.build_texts(x)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids, mask = pb.encode(texts)
        del ids, mask
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / len(texts) < 1000, held / len(texts)
    again, _ = pb.encode(texts[:5])  # cached: the same tokens as the tokenizer's own
    own = tokenizer(texts[0])["input_ids"]
    assert again[0, -len(own) :].tolist() == own


def test_prompts_cut_at_the_cap_are_warned_about_once(tokenizer, caplog) -> None:
    # they used to lose their statistics (stated last) in silence
    pb = PromptBuilder(tokenizer, "d", 4, [2], max_length=8)
    pb.encode(
        [
            "short",
            "a much longer prompt text that goes on and on",
            "another text cut at eight tokens",
        ]
    )
    pb.encode(["yet another prompt that is far too long for the cap"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith("2 of 3 prompts reached the 8-token cap")
    assert pb.cut == 3
    PromptBuilder(tokenizer, "d", 4, [2]).encode(["short"])  # nothing cut: nothing said
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_descriptions_exist_for_every_dataset() -> None:
    generic = load_description(None)
    assert generic and load_description("no-such-dataset") == generic
    for name in DATASETS:
        text = load_description(name)
        assert text and text != generic
    assert load_description("etth1") == load_description("ETTh1")
    # the files' other names: the official repo's and the Autoformer collection's
    assert load_description("electricity") == load_description("ECL") != generic
    assert load_description("national_illness") == load_description("illness")


def test_concise_prompt_is_shorter_than_official(tokenizer) -> None:
    x = np.random.default_rng(0).standard_normal((4, 512, 1)).cumsum(axis=1)
    desc = load_description("ETTh1")
    _, concise = PromptBuilder(tokenizer, desc, 96, [24, 12, 168])(x)
    _, official = PromptBuilder(tokenizer, desc, 96, [24, 12, 168], official=True)(x)
    assert concise.sum(1).max() < 0.7 * official.sum(1).max()
