"""Ablations in the routing report: the ensemble without each member (the router refitted
or its weights renormalised), and Time-LLM variants read from sibling runs of the same
experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_run_folder

from ensemble.errors import UserError
from experiments.analyse import analyse, load_run


def test_injection_ablation_goes_the_other_way_for_an_injecting_run(synth_csv, tmp_path):
    from experiments.analyse_ablations import training_ablations

    run = load_run(fake_run_folder(synth_csv(n=1200), tmp_path / "run"))
    assert training_ablations(run, {}, None) == []  # no timellm: nothing to ablate
    run.members = [*run.members, "timellm"]
    plain = {r["variant"] for r in training_ablations(run, {}, None)}
    run.config = {"member_params": {"timellm": {"inject": ["ridge"]}}}
    injecting = {r["variant"] for r in training_ablations(run, {}, None)}
    assert {"no-prompt", "inject"} <= plain and "no-inject" not in plain
    assert "no-inject" in injecting and "inject" not in injecting


def test_ablation_run_of_another_experiment_is_refused(synth_csv, tmp_path):
    from ensemble.errors import UserError

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    (other / "results.json").write_text(json.dumps({**res, "pred_len": 48}), encoding="utf-8")
    with pytest.raises(UserError, match="pred_len 48"):
        analyse(run_dir, out=tmp_path / "report", ablation_runs={"no-llm": str(other)})


def _sibling(change):
    """Write a sibling run's results.json: the run's, with the keys ``change(res)`` gives."""
    return lambda d, res: (d / "results.json").write_text(
        json.dumps({**res, **change(res)}), encoding="utf-8"
    )


@pytest.mark.parametrize(
    "make,needle",
    [
        pytest.param(lambda d, res: None, "no results.json there", id="missing"),
        pytest.param(
            lambda d, res: (d / "results.json").write_text("[1, 2]", encoding="utf-8"),
            "results.json is damaged",
            id="not-a-mapping",
        ),
        pytest.param(
            lambda d, res: (d / "results.json").write_text(
                json.dumps({**res, "test": {"ensemble": {"mse": "x"}}}), encoding="utf-8"
            ),
            "test.ensemble.mse is not a number",
            id="text-score",
        ),
        pytest.param(_sibling(lambda res: {"seed": 7}), "seed 7", id="other-seed"),
        # more than four keys: another feature set, member list or router is not an
        # ablation of the Time-LLM setting (all used to be accepted)
        pytest.param(_sibling(lambda res: {"features": "S"}), "features 'S'", id="other-features"),
        pytest.param(
            _sibling(lambda res: {"members": res["members"][:-1]}),
            "has members",
            id="other-members",
        ),
        pytest.param(_sibling(lambda res: {"router": "mean"}), "router 'mean'", id="other-router"),
        pytest.param(
            _sibling(lambda res: {"windows": {**res["windows"], "train": 10}}),
            "has windows",
            id="other-percent",
        ),
    ],
)
def test_bad_ablation_runs_are_refused_before_any_output(make, needle, synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    make(other, json.loads((run_dir / "results.json").read_text(encoding="utf-8")))
    with pytest.raises(UserError, match=needle):
        analyse(run_dir, out=tmp_path / "report", ablation_runs={"no-prompt": str(other)})
    assert not (tmp_path / "report").exists()


def test_ablation_runs_of_a_run_without_timellm_are_refused(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(
        (run_dir / "results.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(UserError, match="no timellm member"):
        analyse(run_dir, out=tmp_path / "report", ablation_runs={"no-prompt": str(other)})
    text = analyse(run_dir, out=tmp_path / "report").read_text(encoding="utf-8")
    assert "Time-LLM without" not in text and "this run has no timellm member" in text


def test_unknown_ablation_variant_writes_nothing(synth_csv, tmp_path):
    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    with pytest.raises(UserError, match="unknown ablation variant"):
        analyse(run_dir, out=tmp_path / "report", ablation_runs={"nollm": str(run_dir)})
    assert not (tmp_path / "report").exists()


def test_ablation_run_without_a_folder_exits_2(synth_csv, tmp_path, capsys):
    from experiments.cli import main

    run_dir = fake_run_folder(synth_csv(n=1200), tmp_path / "run")
    assert main(["analyse", str(run_dir), "--ablation-runs", "no-llm="]) == 2
    assert "expected VARIANT=DIR" in capsys.readouterr().err


def _learned_run(synth_csv, out: Path, members: str) -> Path:
    from experiments.cli import main

    argv = ["run", "--data-path", str(synth_csv(n=1400)), "--seq-len", "96", "--pred-len", "24"]
    argv += ["--members", members, "--router", "learned", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    return out


def test_member_ablation_of_a_feature_router_equals_a_run_without_the_member(
    synth_csv, tmp_path, monkeypatch
):
    # `learned` reads features that depend on the member set (each member's recent
    # errors); its ablation refits it on recomputed features, which must give what a
    # run without that member gives
    from router.learned import LearnedRouter

    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive,window_mean")
    alone = _learned_run(synth_csv, tmp_path / "without_naive", "snaive,window_mean")
    fitted, fit = [], LearnedRouter.fit
    monkeypatch.setattr(LearnedRouter, "fit", lambda self, *a: fitted.append(self) or fit(self, *a))
    monkeypatch.setattr("experiments.analyse_ablations.same_code", lambda res: True)
    an = json.loads((analyse(out).parent / "routing_analysis.json").read_text(encoding="utf-8"))
    # the references only fill a run's report, never the choice: the refits skip them
    assert len(fitted) == 3 and all(r.references == () for r in fitted)
    row = {r["variant"]: r for r in an["ablation"]}["without naive"]
    res = json.loads((alone / "results.json").read_text(encoding="utf-8"))
    # the row names the candidate the refit picked (another pick than the run's would
    # otherwise read as the member's effect), as the run without the member picked it
    picked = next(n for n, c in res["combiners"].items() if c["chosen"])
    assert row["method"].endswith(f"validation forecasts and features; it picked `{picked}`")
    assert row["mse"] == pytest.approx(res["test"]["ensemble"]["mse"], rel=1e-6)


def test_a_run_of_other_code_is_compared_with_its_router_refitted_here(
    synth_csv, tmp_path, monkeypatch
):
    # an older version's router (another selection rule) gave the run's ensemble: Δ of a
    # refit by this version against it mixed the two, and one sign flipped
    import numpy as np

    from experiments import analyse_ablations

    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive,window_mean")
    monkeypatch.setattr(analyse_ablations, "same_code", lambda res: False)
    rows = {r["variant"]: r for r in _ablation(out)}
    assert "full ensemble (refitted by this version)" not in rows  # the same router here
    with np.load(out / "forecasts.npz") as z:
        saved = dict(z)
    saved["test/ensemble"] = saved["test/snaive"]  # what "the old code" gave
    np.savez(out / "forecasts.npz", **saved)
    rows = {r["variant"]: r for r in _ablation(out)}
    full = rows["full ensemble (refitted by this version)"]
    assert full["mse"] != pytest.approx(rows["full ensemble (as run)"]["mse"])
    for name in ("without naive", "mean of all members"):  # every row below it
        row = rows[name]
        assert row["delta"] == pytest.approx(row["mse"] - full["mse"], rel=1e-6, abs=1e-9)
    from experiments.analyse_ablations import same_code

    assert not same_code({}) and not same_code({"environment": {"code": {"commit": None}}})


def _ablation(out):
    return json.loads((analyse(out).parent / "routing_analysis.json").read_text(encoding="utf-8"))[
        "ablation"
    ]


def test_the_ablation_of_a_two_member_run_is_the_other_member_alone(synth_csv, tmp_path, caplog):
    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive")
    an = json.loads((analyse(out).parent / "routing_analysis.json").read_text(encoding="utf-8"))
    rows = {r["variant"]: r for r in an["ablation"]}
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for gone, left in (("naive", "snaive"), ("snaive", "naive")):
        row = rows[f"without {gone}"]
        assert row["method"] == f"{left} alone"
        assert row["mse"] == pytest.approx(res["test"][left]["mse"], rel=1e-6)
        assert row["delta"] == pytest.approx(
            res["test"][left]["mse"] - res["test"]["ensemble"]["mse"], rel=1e-4, abs=1e-7
        )
    assert "failed" not in caplog.text


def test_renormalised_ablations_compare_like_with_like(synth_csv, tmp_path):
    # Without the validation targets a feature router's saved test weights are
    # renormalised. They are averaged over the horizon steps, so a member ablation built
    # from them is compared with all members recombined from the same weights: the
    # difference is then the member's alone, not the averaging's.
    from experiments.analyse_ablations import member_ablations

    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive,window_mean")
    rows = {r["variant"]: r for r in member_ablations(load_run(out), val_true=None)}
    with np.load(out / "forecasts.npz") as z, np.load(out / "router_weights.npz") as rw:
        names = ["naive", "snaive", "window_mean"]
        f, y, w = np.stack([z[f"test/{m}"] for m in names]), z["test/true"], rw["test"]
    mse = lambda fc: float(np.mean((fc - y) ** 2))  # noqa: E731
    all_saved = np.einsum("mwhc,wcm->whc", f, w)
    for i, m in enumerate(names):
        row = rows[f"without {m}"]
        assert "renormalised" in row["method"]
        rest = np.delete(w, i, axis=-1)
        rest = rest / rest.sum(-1, keepdims=True)
        fc = np.einsum("mwhc,wcm->whc", np.delete(f, i, axis=0), rest)
        assert row["mse"] == pytest.approx(mse(fc), rel=1e-5)
        assert row["delta"] == pytest.approx(mse(fc) - mse(all_saved), rel=1e-4, abs=1e-7)


def test_an_ablation_run_with_other_classical_settings_is_refused(synth_csv, tmp_path):
    import yaml

    run_dir = fake_run_folder(
        synth_csv(n=1200), tmp_path / "run", members=["naive", "snaive", "timellm"]
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_bytes((run_dir / "results.json").read_bytes())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    cfg["member_params"] = {"timellm": {"prompt": "none"}}  # the ablated setting: fine
    # no bars, a resume, checkpoints: change no number, fine
    cfg["member_params"]["naive"] = {"progress": False, "resume": True}
    cfg["member_params"]["snaive"] = {"checkpoint_minutes": 5}
    (other / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    analyse(run_dir, out=tmp_path / "ok", ablation_runs={"no-prompt": str(other)})
    cfg["member_params"]["snaive"] = {"period": 12}  # another member's setting: not fine
    (other / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(UserError, match="member settings"):
        analyse(run_dir, out=tmp_path / "report", ablation_runs={"no-prompt": str(other)})


def test_a_patch16_run_is_not_told_to_rerun_itself_as_patch16(synth_csv, tmp_path):
    run_dir = fake_run_folder(
        synth_csv(n=1200), tmp_path / "run", members=["naive", "snaive", "timellm"]
    )
    md = analyse(run_dir).read_text(encoding="utf-8")
    assert "timellm.prompt=none" in md  # other ablations are still suggested
    assert "timellm.patch_len=16" not in md


@pytest.mark.parametrize("quiet", [False, True])
def test_the_ablations_bar_shows_on_a_terminal_unless_quiet(synth_csv, tmp_path, bars, quiet):
    # the bar was drawn into redirected stderr too, and analyse had no --quiet
    from experiments import analyse_ablations
    from experiments.cli import main

    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive,window_mean")
    made = bars(analyse_ablations)
    assert main(["analyse", str(out), "--out", str(tmp_path / "a")] + ["--quiet"] * quiet) == 0
    assert len(made) == 1 and made[0].n == 3
    assert made[0].disable is (True if quiet else None)  # None: tqdm's "a terminal only"


def test_a_training_ablation_is_compared_like_with_like(synth_csv, tmp_path):
    # "test MAE" held Time-LLM's MAE alone, and Δ set the sibling's ensemble (its
    # results.json) against this run's recomputed from forecasts.npz
    from experiments.analyse import analyse_run
    from experiments.analyse_ablations import training_ablations
    from experiments.analyse_report import report_markdown

    run_dir = fake_run_folder(
        synth_csv(n=1200), tmp_path / "run", members=["naive", "snaive", "timellm"]
    )
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    res["test"]["ensemble"]["mse"] += 0.05  # as the run wrote it, not as recomputed
    (run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    sib = tmp_path / "run-patch16"
    sib.mkdir()
    same = {k: res[k] for k in ("dataset", "seq_len", "pred_len", "seed")}
    test = {"timellm": {"mse": 0.4, "mae": 0.5}, "ensemble": {"mse": 0.3, "mae": 0.45}}
    (sib / "results.json").write_text(json.dumps({**same, "test": test}), encoding="utf-8")
    run = load_run(run_dir)
    training = training_ablations(run, {}, None)
    row = next(r for r in training if r["variant"] == "patch16")
    d_t, d_e = 0.4 - res["test"]["timellm"]["mse"], 0.3 - res["test"]["ensemble"]["mse"]
    assert row["delta"] == pytest.approx({"timellm": d_t, "ensemble": d_e})
    text = report_markdown(run, analyse_run(run, None, None, None), training, [], "")
    line = next(ln for ln in text.splitlines() if ln.startswith("| Time-LLM with the fixed patch"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[1:4] == [
        "timellm 0.4000, ensemble 0.3000",
        "timellm 0.5000, ensemble 0.4500",
        f"timellm {d_t:+.4f}, ensemble {d_e:+.4f}",
    ]
    assert f"ensemble {res['test']['ensemble']['mse']:.4f}): like with like" in text


@pytest.mark.parametrize(
    ("then", "same"),
    [
        # a later commit of docs or tests alone: the same code tree, no refit
        ({"commit": "a" * 40, "tree": "t1", "modified": False}, True),
        ({"commit": "b" * 40, "tree": "t2", "modified": False}, False),  # other code
        ({"commit": "b" * 40, "tree": "t1", "modified": True}, False),  # edited then
        # recorded before the tree: its commit decides, as before
        ({"commit": "b" * 40, "modified": False}, True),
        ({"commit": "a" * 40, "modified": False}, False),
    ],
)
def test_same_code_compares_the_code_tree_where_the_run_recorded_it(then, same, monkeypatch):
    from experiments import analyse_ablations

    now = {"version": "0.1.0", "commit": "b" * 40, "tree": "t1", "modified": False}
    monkeypatch.setattr("experiments.run.code_version", lambda: now)
    assert analyse_ablations.same_code({"environment": {"code": then}}) is same
    now["modified"] = True  # edited here: never the run's code
    assert analyse_ablations.same_code({"environment": {"code": then}}) is False


def test_a_run_of_the_same_code_tree_is_not_refitted(synth_csv, tmp_path, monkeypatch):
    # a docs-only commit since the run made analyse refit the whole learned router again
    from router.learned import LearnedRouter

    out = _learned_run(synth_csv, tmp_path / "run", "naive,snaive")
    now = {"version": "0.1.0", "commit": "b" * 40, "tree": "t1", "modified": False}
    monkeypatch.setattr("experiments.run.code_version", lambda: now)
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    res["environment"]["code"] = {**now, "commit": "a" * 40}
    (out / "results.json").write_text(json.dumps(res), encoding="utf-8")
    fitted, fit = [], LearnedRouter.fit
    monkeypatch.setattr(LearnedRouter, "fit", lambda self, *a: fitted.append(self) or fit(self, *a))
    analyse(out)
    assert fitted == []  # two members: the ablations refit nothing; nor the full router
    res["environment"]["code"]["tree"] = "t0"  # other code: the full router refitted once
    (out / "results.json").write_text(json.dumps(res), encoding="utf-8")
    analyse(out)
    assert len(fitted) == 1
