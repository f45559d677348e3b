"""One trial: scored on validation only, never past the study's N trials, members freed
between trials, per-epoch losses fed to the pruner."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from conftest import tune_spec  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from experiments.tune import run_tune  # noqa: E402
from experiments.tune_objective import Objective, SurplusTrial  # noqa: E402
from experiments.tune_study import open_study, trial_counts  # noqa: E402


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_past_the_budget_is_surplus(synth_csv, tmp_path):
    spec = tune_spec(synth_csv(n=1200), tmp_path / "tune", trials=2)
    run_tune(spec, progress=False, plots=False)
    study = open_study(spec)
    trial = study.ask()  # a second worker that lost the race for the last slot
    with pytest.raises(SurplusTrial):
        Objective(spec, study.user_attrs)(trial)
    study.tell(trial, state=TrialState.FAIL)
    c = trial_counts(study)
    assert c["finished"] == 2 and c["discarded"] == 1


def test_trials_never_see_the_test_rows(synth_csv, tmp_path):
    # Tuning scores on validation: scrambling the rows only test windows reach (the last
    # 20 % of a 70/10/20 file) leaves every trial's value unchanged.
    import numpy as np

    def scramble(df):
        tail = slice(int(len(df) * 0.9), len(df))
        rng = np.random.default_rng(5)
        for col in df.columns[1:]:
            df.loc[df.index[tail], col] = rng.permutation(df[col].to_numpy()[tail]) * 3
        return df

    def values(csv, out, enqueue=()):
        for params in enqueue:  # two studies on different data: ask for the same settings
            open_study(tune_spec(csv, out, 3), create=True).enqueue_trial(params)
        run_tune(tune_spec(csv, out, trials=3), progress=False, plots=False)
        done = [
            t for t in open_study(tune_spec(csv, out, 3)).trials if t.state == TrialState.COMPLETE
        ]
        return [(t.params, t.value) for t in sorted(done, key=lambda t: t.number)]

    clean = values(synth_csv(n=1200), tmp_path / "a")
    wrecked_csv = synth_csv(n=1200, edit=scramble, name="w.csv")
    wrecked = values(wrecked_csv, tmp_path / "b", enqueue=[p for p, _ in clean])
    assert len(clean) == 3 and clean == wrecked


def test_epoch_hook_feeds_the_pruner_during_training(synth_splits):
    # the members' training loops call on_epoch after every epoch, so a pruner can stop
    # a trial mid-training (an exception from the hook ends the fit)
    from classical.dlinear import DLinear
    from experiments.tune_objective import attach_epoch_callback

    splits = synth_splits(seq_len=96, pred_len=24, n=1200)
    model = DLinear(96, 24, epochs=4, patience=10, progress=False)
    seen: list[tuple[int, float]] = []
    assert attach_epoch_callback(model, lambda e, v: seen.append((e, v)))
    model.fit(splits.train, splits.val)
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert [v for _, v in seen] == pytest.approx([h["val_mse"] for h in model.history])

    class Stop(Exception):
        pass

    def stop(epoch: int, val: float) -> None:
        if epoch == 2:
            raise Stop

    model = DLinear(96, 24, epochs=4, patience=10, progress=False)
    attach_epoch_callback(model, stop)
    with pytest.raises(Stop):
        model.fit(splits.train, splits.val)


def test_each_trial_starts_with_the_last_trials_members_freed(synth_csv, tmp_path, monkeypatch):
    # As in `run`: a member held by a reference cycle (a pruned trial's traceback makes
    # one) must not stay on the GPU while the next trial loads its own (Optuna collects
    # after each trial: gc_after_trial).
    import gc
    import sys
    import weakref

    from classical.naive import SeasonalNaive

    alive, members = [], []
    fit = SeasonalNaive.fit

    def fit_in_a_cycle(self, train, val):
        alive.append(sum(ref() is not None for ref in members))
        members.append(weakref.ref(self))
        cycle = [sys._getframe()]
        assert cycle
        return fit(self, train, val)

    monkeypatch.setattr(SeasonalNaive, "fit", fit_in_a_cycle)
    gc.disable()
    try:
        run_tune(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=3), progress=False)
    finally:
        gc.enable()
    assert alive == [0, 0, 0]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_whose_forecasts_diverged_is_an_error_that_counts(synth_csv, tmp_path, monkeypatch):
    # a NaN value made Optuna fail the trial without "error": uncounted, it was drawn
    # again and again (103 failed trials in 60 s, never ending)
    import numpy as np

    from classical.naive import SeasonalNaive

    def diverged(self, w):
        return np.full((w.n, w.pred_len, w.context.shape[1]), np.nan)

    monkeypatch.setattr(SeasonalNaive, "predict", diverged)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2)
    run_tune(spec, progress=False, plots=False)  # ends: the failed trials count
    study = open_study(spec)
    c = trial_counts(study)
    assert c["error"] == 2 and c["discarded"] == 0 and len(study.trials) == 2
    assert "fit diverged" in study.trials[0].user_attrs["error"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_no_pruning_warning_for_members_without_epochs(synth_csv, tmp_path, caplog):
    # snaive reports no per-epoch values: Optuna's "You need to set up the pruning
    # feature" warning reached the console.
    import logging

    caplog.set_level(logging.WARNING)
    run_tune(tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1), progress=False, plots=True)
    assert not [r for r in caplog.records if "pruning feature" in r.getMessage()]
    assert (tmp_path / "t" / "tune_history.png").is_file()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_member_without_an_epoch_hook_reports_its_history_after_fitting(
    synth_csv, tmp_path, monkeypatch
):
    # a member that trains in epochs but takes no per-epoch hook: its curve still reaches
    # the pruner, so later trials are judged against it (non-finite values left out)
    from classical.naive import SeasonalNaive

    fit = SeasonalNaive.fit
    curve = [
        {"epoch": 1, "val_mse": 0.9},
        {"epoch": 2, "val_mse": float("nan")},
        {"epoch": 3, "train_mse": 0.5},
        {"epoch": 4, "val_mse": 0.7},
    ]

    def fit_with_history(self, train, val):
        assert not hasattr(self, "on_epoch")
        out = fit(self, train, val)
        self.history = curve
        return out

    monkeypatch.setattr(SeasonalNaive, "fit", fit_with_history)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    run_tune(spec, progress=False, plots=False)
    (trial,) = open_study(spec).trials
    assert trial.state == TrialState.COMPLETE
    assert trial.intermediate_values == {1: 0.9, 4: 0.7}

    # Beside another member the score is their mean, which this curve does not tell: a
    # trial pruned on DLinear's curve beside window_mean beat the study's best
    import dataclasses

    both = dataclasses.replace(
        spec, members=["snaive", "naive"], out=str(tmp_path / "t2"), study=None, storage=None
    ).resolved()
    run_tune(both, progress=False, plots=False)
    (trial,) = open_study(both).trials
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values == {}
    assert "no pruning (--pruner median)" in (tmp_path / "t2" / "tune.log").read_text(
        encoding="utf-8"
    )


def test_an_interrupt_swallowed_in_an_epoch_stops_the_trial_at_the_epoch_end(
    synth_csv, tmp_path, monkeypatch
):
    # a Ctrl-C whose KeyboardInterrupt lands in a weakref callback is swallowed there: it
    # was raised again only after the trial, which ran on to its end (minutes of
    # Time-LLM); it is noted, and raised at the next epoch's end
    import signal
    from dataclasses import replace

    from experiments import tune_objective, tune_workers

    held = {}
    enter = tune_workers._NotedInterrupts.__enter__

    def keep(self):
        held["interrupts"] = self
        return enter(self)

    def swallowed_at_epoch_2(member, callback):
        def hook(epoch, val):
            if epoch == 2:  # noted, its exception lost
                held["interrupts"].noted.append((signal.SIGINT, signal.default_int_handler))
            callback(epoch, val)

        return attach(member, hook)

    attach = tune_objective.attach_epoch_callback
    monkeypatch.setattr(tune_workers._NotedInterrupts, "__enter__", keep)
    monkeypatch.setattr(tune_objective, "attach_epoch_callback", swallowed_at_epoch_2)
    spec = replace(
        tune_spec(synth_csv(n=1200), tmp_path / "t", trials=2),
        members=["dlinear"],
        member_params={"dlinear": {"epochs": 30, "patience": 30}},
    )
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    (trial,) = open_study(spec).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")
    assert sorted(trial.intermediate_values) == [1]  # stopped at epoch 2's end, not 30's


def test_a_member_with_a_step_hook_is_checked_for_interrupts_after_every_step(
    synth_csv, tmp_path, monkeypatch
):
    # Time-LLM's hook: a swallowed Ctrl-C stops the trial at the next step, not minutes later
    from experiments import registry, tune_workers

    class Stepping:  # a member that trains in steps and reports no epochs
        on_step = None

        def fit(self, train, val):
            for step in range(5):
                calls.append(step)
                self.on_step()

        def predict(self, windows):
            raise AssertionError("the trial should have stopped in fit")

    calls, held = [], {}
    enter = tune_workers._NotedInterrupts.__enter__

    def keep(self):
        held["interrupts"] = self
        return enter(self)

    def build(spec, ctx):
        import signal

        if "interrupts" in held:  # in the trial (not the checks before it): noted before
            # the first step, its exception lost
            held["interrupts"].noted.append((signal.SIGINT, signal.default_int_handler))
        return Stepping()

    monkeypatch.setattr(tune_workers._NotedInterrupts, "__enter__", keep)
    monkeypatch.setattr(registry, "build", build)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, progress=False, plots=False)
    assert calls == [0]
    (trial,) = open_study(spec).trials
    assert trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_second_copy_of_a_requeued_trial_is_surplus(synth_csv, tmp_path):
    # two starts on a server storage (no ask lock) both queued interrupted trial 0 again:
    # the lower-numbered copy reruns it, the other counted it twice
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=4)
    study = open_study(spec, create=True)
    first = study.ask()
    first.set_user_attr("interrupted", True)
    study.tell(first, state=TrialState.FAIL)
    for _ in range(2):
        study.enqueue_trial({}, user_attrs={"retry_of": 0})
    kept, twin = study.ask(), study.ask()  # each start's worker takes one
    objective = Objective(spec, study.user_attrs)
    with pytest.raises(SurplusTrial, match="trial 1 already reruns trial 0"):
        objective(twin)
    study.tell(twin, state=TrialState.FAIL)
    assert objective(kept) > 0  # the first copy runs
    other = study.ask()  # another trial, not a copy: runs too
    assert objective(other) > 0


def test_the_last_epoch_is_never_pruned():
    # the pruners judge from epoch 3 on: with epochs <= 3 a fully trained trial was
    # labelled PRUNED at its last epoch (and its score thrown away)
    from experiments.tune_objective import EpochReporter

    class Hopeless:  # a trial every pruner would stop
        def report(self, value, step):
            pass

        def should_prune(self):
            return True

    with pytest.raises(optuna.TrialPruned):
        EpochReporter(Hopeless(), last_epoch=3)(2, 1.0)
    EpochReporter(Hopeless(), last_epoch=3)(3, 1.0)  # trained to the end: complete
    with pytest.raises(optuna.TrialPruned):  # epochs unknown: judged as before
        EpochReporter(Hopeless())(3, 1.0)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_that_trained_every_epoch_is_complete(synth_csv, tmp_path, monkeypatch):
    from dataclasses import replace

    def from_epoch_3(self, study, trial) -> bool:  # as n_warmup_steps=3, every trial worse
        return max(trial.intermediate_values) >= 3

    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", from_epoch_3)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    for epochs, state in ((3, TrialState.COMPLETE), (5, TrialState.PRUNED)):
        dl = replace(
            spec,
            members=["dlinear"],
            member_params={"dlinear": {"epochs": epochs}},
            out=str(tmp_path / f"e{epochs}"),
            study=None,
            storage=None,
        ).resolved()
        run_tune(dl, progress=False, plots=False)
        (trial,) = open_study(dl).trials
        assert trial.state == state, epochs
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # pruned at 3 of 5


def test_scored_windows_keep_one_window_in_each_block():
    import numpy as np

    from experiments.tune_objective import scored_windows

    np.testing.assert_array_equal(scored_windows(10, 1, 0), np.arange(10))
    starts = scored_windows(103, 4, 0)
    assert starts[-1] == 102  # the most recent window is always scored
    blocks = np.bincount(starts[:-1] // 4, minlength=26)
    assert (blocks[:-1] == 1).all()  # one per block of 4: every phase of a cycle reachable
    assert not np.array_equal(starts[:-1] % 4, np.zeros(len(starts) - 1))  # not every 4th
    np.testing.assert_array_equal(scored_windows(103, 4, 0), starts)  # the seed fixes them
    assert not np.array_equal(scored_windows(103, 4, 1), starts)


def test_with_a_val_stride_a_trial_is_scored_on_those_windows_only(
    synth_csv, tmp_path, monkeypatch
):
    import numpy as np

    from ensemble import metrics
    from ensemble.data import load_dataset, make_splits
    from experiments import registry
    from experiments.tune_objective import scored_windows

    class Zero:  # forecasts 0: the score is the mean square of the scored targets
        def fit(self, train, val):
            return self

        def predict(self, windows):
            return np.zeros((windows.n, 24, windows.context.shape[1]))

    monkeypatch.setattr(registry, "build", lambda spec, ctx: Zero())
    csv = synth_csv(n=1200)
    spec = tune_spec(csv, tmp_path / "t", trials=1)
    spec.val_stride = 4
    run_tune(spec, progress=False, plots=False)
    (trial,) = open_study(spec).trials
    val = make_splits(load_dataset(data_path=csv), trial.user_attrs["seq_len"], 24).val
    starts = scored_windows(val.n_windows, 4, spec.seed)
    assert len(starts) < val.n_windows / 3
    target = val.targets()
    assert trial.value == pytest.approx(metrics.mse(np.zeros_like(target[starts]), target[starts]))
    assert trial.value != pytest.approx(metrics.mse(np.zeros_like(target), target), rel=1e-3)


def test_time_llm_early_stops_on_the_scored_windows_and_forecasts_no_others(
    synth_csv, tmp_path, monkeypatch
):
    # the trial's score is the best epoch's forecast of the windows it early-stopped on:
    # no val window is forecast after training (with every window: minutes a trial)
    from conftest import patch_tiny_backbone, tiny_timellm

    from experiments import registry
    from timellm.member import TimeLLMForecaster

    patch_tiny_backbone(monkeypatch)
    built = []

    def build(spec, ctx):  # the tuned settings on a tiny model
        keep = ("val_stride", "patch_len", "stride", "lr")
        m = tiny_timellm(
            seq_len=ctx.seq_len,
            pred_len=ctx.pred_len,
            seed=ctx.seed,
            periods=list(ctx.periods),
            **{k: v for k, v in ctx.params.items() if k in keep},
        )
        built.append(m)
        return m

    forecasts = []
    predict_set = TimeLLMForecaster.predict_set
    monkeypatch.setattr(
        TimeLLMForecaster,
        "predict_set",
        lambda self, data, **kw: forecasts.append(len(data)) or predict_set(self, data, **kw),
    )
    monkeypatch.setattr(registry, "build", build)
    spec = tune_spec(synth_csv(n=1200), tmp_path / "t", trials=1)
    spec.members, spec.val_stride = ["timellm"], 3
    spec.member_params = {"timellm": {"epochs": 2}}
    run_tune(spec, progress=False, plots=False)
    (trial,) = open_study(spec).trials
    assert trial.state == TrialState.COMPLETE
    member = built[-1]
    assert member.val_stride == 3 and forecasts == []
    best = min(h["val_mse"] for h in member.history)
    assert trial.value == pytest.approx(best, rel=1e-5)  # the epoch's own score


def test_the_scored_windows_are_drawn_with_the_time_llm_members_seed():
    # so that they are the windows it early-stops on when its seed is set apart
    from dataclasses import replace

    from conftest import tune_spec as spec_of

    from experiments.tune_objective import scoring_seed

    spec = replace(spec_of("x.csv", "out", trials=1), members=["dlinear"], seed=3)
    assert scoring_seed(spec) == 3
    assert scoring_seed(replace(spec, members=["dlinear", "timellm"])) == 3
    assert scoring_seed(replace(spec, members=["timellm@seed=5"])) == 5
    both = replace(spec, members=["timellm"], member_params={"timellm": {"seed": 7}})
    assert scoring_seed(both) == 7
