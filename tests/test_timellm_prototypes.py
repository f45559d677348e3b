"""Text prototypes (`timellm.prototypes`): nearest words, initial values, attention share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_timellm

from timellm.prototypes import (
    attention_share,
    describe_prototypes,
    initial_prototypes,
    nearest_words,
)

pytestmark = pytest.mark.usefixtures("tiny_backbone")


@pytest.fixture(scope="module")
def splits(tiny_splits):
    return tiny_splits


def test_nearest_words_match_a_brute_force_search_across_chunks():
    gen = torch.Generator().manual_seed(0)
    protos, emb = torch.randn(6, 5, generator=gen), torch.randn(50, 5, generator=gen)
    cos, ids = nearest_words(protos, emb, k=3, chunk=7)  # 8 chunks, the last one short
    full = F.normalize(protos, dim=1) @ F.normalize(emb, dim=1).T
    want_cos, want_ids = full.topk(3, dim=1)
    torch.testing.assert_close(cos, want_cos)
    assert torch.equal(ids, want_ids)


@pytest.mark.parametrize("prototype_map", ["lowrank", "full"])
def test_initial_prototypes_are_the_built_models(prototype_map):
    m = tiny_timellm(prototype_map=prototype_map, num_prototypes=12, seed=3)
    model = m.build()
    emb = model.llm.get_input_embeddings().weight.detach().float()
    with torch.no_grad():
        built = model.prototypes(emb).float()
    torch.testing.assert_close(initial_prototypes(m, emb), built)
    other = tiny_timellm(prototype_map=prototype_map, num_prototypes=12, seed=4)
    other.build()
    assert not torch.allclose(initial_prototypes(other, emb), built)


def test_attention_shares_sum_to_one_and_are_uniform_without_queries(splits):
    m = tiny_timellm(num_prototypes=16)
    model = m.build().eval()
    x = splits.test.inputs()
    share = attention_share(model, x, batch=5)
    assert share.shape == (16,) and share.sum() == pytest.approx(1.0, abs=1e-5)
    assert share.std() > 0  # random queries prefer some prototypes
    with torch.no_grad():  # a patch with no query attends to every prototype alike
        model.reprogramming.query.weight.zero_()
        model.reprogramming.query.bias.zero_()
    np.testing.assert_allclose(attention_share(model, x), np.full(16, 1 / 16), rtol=1e-5)


def test_described_prototypes_of_a_trained_member(splits):
    m = tiny_timellm(num_prototypes=16, epochs=1).fit(splits.train, splits.val)
    d = describe_prototypes(m, splits.test.inputs(), top=4, k=3)
    shares = [row["share"] for row in d["prototypes"]]
    assert len(shares) == 4 and shares == sorted(shares, reverse=True)
    assert d["top_share"] == pytest.approx(sum(shares)) and d["uniform_share"] == 1 / 16
    assert d["moved"] > 0  # training changed them
    row = d["prototypes"][0]
    assert len(row["words"]) == 3 and all(isinstance(w, str) for w in row["words"])
    assert row["cosines"] == sorted(row["cosines"], reverse=True)
    assert set(d["top1_cosine"]) == {"trained", "initial", "random", "word"}
    assert all(-1 <= v <= 1 for v in d["top1_cosine"].values())


def test_analyse_lists_the_prototypes_and_probes_the_prompt_of_a_run(synth_csv, tmp_path):
    from experiments.analyse import analyse
    from experiments.cli import main

    argv = ["run", "--data-path", str(synth_csv(n=500, channels=2)), "--seq-len", "32"]
    # the member spec form the docs give for prompt statistics: its own members/ folder
    argv += ["--pred-len", "8", "--members", "naive,timellm@prompt_stats=min+max+mean"]
    argv += ["--router", "mean"]
    argv += ["--out", str(tmp_path / "run"), "--quiet"]
    for kv in (
        "d_model=8",
        "d_ff=16",
        "n_heads=2",
        "num_prototypes=16",
        "epochs=1",
        "train_stride=4",
    ):
        argv += ["--set", f"timellm.{kv}"]
    assert main(argv) == 0
    report = tmp_path / "report"
    text = analyse(tmp_path / "run", out=report, prototypes=True, prompt_probe=True).read_text(
        encoding="utf-8"
    )
    # the probe's table and its figure: a bar per counterfactual prompt
    assert "## Does Time-LLM read its prompt?" in text and "own, mean shuffled" in text
    assert "![prompt_probe.png](prompt_probe.png)" in text
    assert (report / "prompt_probe.png").read_bytes()[:4] == b"\x89PNG"
    section = text.split("## What the text prototypes stand for")[1].split("\n## ")[0]
    assert "at initialisation" in section and section.count("\n| ") == 16  # header + 15
    assert "Time-LLM without the prompt prefix" in text  # its training ablations are offered

    # in the run's folder, one check after the other: the report keeps both
    analyse(tmp_path / "run", prompt_probe=True)
    text = analyse(tmp_path / "run", prototypes=True).read_text(encoding="utf-8")
    assert "## Does Time-LLM read its prompt?" in text and "![prompt_probe.png]" in text
    assert "## What the text prototypes stand for" in text
    # elsewhere (--out), another run's analysis may lie: nothing is taken from it
    text = analyse(tmp_path / "run", out=report).read_text(encoding="utf-8")
    assert "## Does Time-LLM read its prompt?" not in text

    # a damaged or missing saved model: one line saying so and how to save it again
    import re
    import shutil

    from ensemble.errors import UserError

    model = "members/timellm_prompt_stats=min_max_mean/model"
    damages = {
        "config.json": (b'{"kwargs": {"backb', "damaged (config.json: JSONDecodeError)"),
        "trainable.pt": (b"PK\x03\x04 truncated", "damaged (RuntimeError)"),
    }
    for i, (name, (content, needle)) in enumerate(damages.items()):
        copy = shutil.copytree(tmp_path / "run", tmp_path / f"copy{i}")
        (copy / model / name).write_bytes(content)
        with pytest.raises(UserError, match=re.escape(f"{needle}; delete ")):
            analyse(copy, out=tmp_path / f"r{i}", prototypes=True)
        (copy / model / name).unlink()
        with pytest.raises(UserError, match=f"has no {name}; delete .*forecasts.npz and rerun"):
            analyse(copy, out=tmp_path / f"r{i}", prompt_probe=True)
