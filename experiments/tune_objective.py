"""One `tune` trial: the members fitted on train with the drawn settings, early-stopped on
val, scored by the val MSE of their equal-weight mean (test never loaded). The first
member with a per-epoch hook feeds the pruner while it trains. With ``--val-stride k``
the score is over one val window in k (`scored_windows`), and Time-LLM early-stops on
the same windows, so a trial forecasts no val window beyond those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble.progress import PROGRESS
from experiments.tune_space import suggest, trial_periods
from experiments.tune_study import claims_slot, load_study_data, machine_identity

if TYPE_CHECKING:
    from experiments.tune import TuneSpec

log = logging.getLogger("hybrid_forecast.tune")


# Members whose factories take a `progress` flag (their bars would garble parallel workers).
_QUIET_MEMBERS = ("dlinear", "nlinear", "patchtst", "itransformer")
# Members that early-stop on a strided val selection of their own (``val_stride``): under
# `tune --val-stride k` they get k unless set, and so score the windows the trial scores.
STRIDED_VAL_MEMBERS = ("timellm",)


def scoring_seed(spec: TuneSpec) -> int:
    """The seed `scored_windows` draws with: that of the study's Time-LLM member (its own
    ``seed`` setting, else the study's), so that the windows are the ones it early-stops on."""
    from experiments.registry import parse_spec

    for m in spec.members:
        base, own = parse_spec(m)
        if base in STRIDED_VAL_MEMBERS:
            return int({**spec.member_params.get(base, {}), **own}.get("seed", spec.seed))
    return spec.seed


def scored_windows(n_windows: int, val_stride: int, seed: int) -> np.ndarray:
    """[n] positions of the val windows a trial is scored on: all of them, or with
    ``val_stride`` k > 1 one drawn at random from each block of k (the last window always
    kept), as Time-LLM draws its early-stopping windows with ``val_stride`` k and the
    trial's seed, so that its best epoch's forecast of them is the trial's."""
    from timellm.trainer import select_starts

    if val_stride <= 1:
        return np.arange(n_windows)
    return select_starts(n_windows, val_stride, seed=seed + 1)


class SurplusTrial(Exception):
    """A trial started after the study already had its N trials claimed."""


def attach_epoch_callback(member: Any, callback: Callable[[int, float], None]) -> bool:
    """Hand the member a per-epoch hook if it has one (an ``on_epoch`` attribute)."""
    if hasattr(member, "on_epoch"):
        member.on_epoch = callback
        return True
    return False


class EpochReporter:
    """Feeds per-epoch validation losses to the pruner and stops a hopeless trial.

    Args:
        trial: the Optuna trial.
        live: False to only record the values (training already over: nothing to save).
        check_interrupts: raises an interrupt that arrived during the epoch but was
            swallowed (see `Objective.check_interrupts`).
        last_epoch: the member's last epoch (its ``epochs``), never pruned at: the trial
            has trained to the end, and is complete (at ``epochs`` <= 3 the pruners'
            first judgement, at epoch 3, labelled fully trained trials PRUNED).
    """

    def __init__(
        self,
        trial,
        live: bool = True,
        check_interrupts: Callable[[], None] = lambda: None,
        last_epoch: int | None = None,
    ):
        self.trial = trial
        self.live = live
        self.check_interrupts = check_interrupts
        self.last_epoch = last_epoch
        self.reported: set[int] = set()

    def __call__(self, epoch: int, val_loss: float) -> None:
        import optuna

        if self.live:
            self.check_interrupts()
        if epoch in self.reported or not np.isfinite(val_loss):
            return
        self.reported.add(epoch)
        self.trial.report(float(val_loss), step=int(epoch))
        final = self.last_epoch is not None and epoch >= self.last_epoch
        if self.live and not final and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val {val_loss:.4f})")


class Objective:
    """Fits the members of one trial on train and returns their val MSE.

    Args:
        spec: the study's spec.
        attrs: the study's attributes (period candidates, patch choices).

    Attributes:
        check_interrupts: raises a Ctrl-C or SIGTERM noted during the trial; called after
            every epoch of a member with a per-epoch hook (after every training step of
            one with a per-step hook: Time-LLM), and after each member. Python
            swallows an exception raised in a weakref callback or finalizer: a signal that
            arrived while one ran (a WeakKeyDictionary's clean-up, during DLinear's
            epochs) was lost, and the trial ran on to its end, in 3 of 6 Ctrl-Cs of
            `tune --jobs 2` measured. `work` sets it.
        live_interrupts: a context in which a Ctrl-C or SIGTERM is raised where it lands;
            outside it (Optuna storing the trial as started or finished) `work` only notes
            one, for the next check: raised there, it left the trial RUNNING, untold.
    """

    def __init__(self, spec: TuneSpec, attrs: dict[str, Any]):
        self.spec = spec
        self.attrs = attrs
        self.dataset = load_study_data(spec)
        self.check_interrupts: Callable[[], None] = lambda: None
        self.live_interrupts: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext
        )

    def __call__(self, trial) -> float:
        before = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(claims_slot(t) for t in before) >= self.spec.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: {self.spec.trials} trials already claimed")
        # two starts on a server storage (no ask lock) may both queue one interrupted
        # trial again: the lower-numbered copy runs it, this one would count it twice
        retry_of = trial.user_attrs.get("retry_of")
        twin = next(
            (
                t.number
                for t in before
                if retry_of is not None
                and t.user_attrs.get("retry_of") == retry_of
                and claims_slot(t)
            ),
            None,
        )
        if twin is not None:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(
                f"trial {trial.number}: trial {twin} already reruns trial {retry_of}"
            )
        with self.live_interrupts():
            try:
                self.check_interrupts()  # one that came while Optuna started the trial
                return self._evaluate(trial)
            except KeyboardInterrupt:
                # Optuna marks it FAIL; the next start queues its parameters again
                # (`requeue_interrupted`), as the heartbeat retry does for a killed trial
                with contextlib.suppress(Exception):
                    trial.set_user_attr("interrupted", True)
                raise
            except Exception as exc:
                import optuna

                if not isinstance(exc, optuna.TrialPruned):
                    # recorded, so the trial counts as finished and is not retried forever
                    message = f"{type(exc).__name__}: {exc}"[:500]
                    trial.set_user_attr("error", message)
                    log.warning(
                        "trial %d failed: %s (traceback in tune.log)", trial.number, message
                    )
                    log.info("trial %d traceback:\n%s", trial.number, traceback.format_exc())
                raise

    def _evaluate(self, trial) -> float:
        from ensemble import metrics
        from ensemble.data import make_splits
        from ensemble.forecaster import predict_at
        from experiments import registry

        spec = self.spec
        # first: a rerun on this machine fails the trial of a killed process at once
        trial.set_user_attr("worker", os.getpid())
        trial.set_user_attr("host", machine_identity())
        period, seq_len, tuned = suggest(trial, spec, self.attrs)
        trial.set_user_attr("seq_len", seq_len)
        trial.set_user_attr("member_params", tuned)
        # the scale was warned about at the start
        splits = make_splits(self.dataset, seq_len, spec.pred_len, percent=spec.percent, warn=False)
        ch = splits.eval_channels
        starts = scored_windows(splits.val.n_windows, spec.val_stride, scoring_seed(spec))
        trial.set_user_attr("val_windows", [len(starts), splits.val.n_windows])
        val_true = splits.val.targets()[starts][..., ch]
        periods = trial_periods(period, self.attrs["ranked_periods"])
        trial.set_user_attr("periods", periods)
        reporter = EpochReporter(trial, check_interrupts=self.check_interrupts)
        # The score is the members' mean; one member's epoch curve does not tell it (a
        # trial pruned on DLinear's curve scored better than the study's best), so with
        # several members no curve is reported and nothing is pruned.
        prune = len(spec.members) == 1
        forecasts = []
        t0 = time.perf_counter()
        for spec_m in spec.members:
            base, _ = registry.parse_spec(spec_m)
            params = {**spec.member_params.get(base, {}), **tuned.get(base, {})}
            if base in _QUIET_MEMBERS:
                params.setdefault("progress", False)
            if base in STRIDED_VAL_MEMBERS and spec.val_stride > 1:
                params.setdefault("val_stride", spec.val_stride)
            ctx = registry.MemberContext(
                seq_len=seq_len,
                pred_len=spec.pred_len,
                n_channels=splits.train.n_channels,
                freq=splits.dataset.freq,
                periods=periods,
                seed=spec.seed,
                dataset=splits.dataset.name,
                params=params,
                workdir=None,
            )
            member = registry.build(spec_m, ctx)
            epochs = getattr(member, "epochs", None)
            reporter.last_epoch = epochs if isinstance(epochs, int) else None
            live = prune and attach_epoch_callback(member, reporter)
            if not live:
                attach_epoch_callback(member, lambda epoch, val: self.check_interrupts())
            if hasattr(member, "on_step"):  # Time-LLM: an epoch takes minutes
                member.on_step = self.check_interrupts
            member.fit(splits.train, splits.val)
            self.check_interrupts()
            history = getattr(member, "history", None)
            if prune and not live and history:
                # no live hook: report the curve afterwards (the pruner learns from it)
                reporter.live = False
                for h in history:
                    if "val_mse" in h:
                        reporter(int(h["epoch"]), float(h["val_mse"]))
            f = predict_at(member, splits.val.windows(), starts)[..., ch]
            bad = f.size - int(np.count_nonzero(np.isfinite(f)))
            if bad:  # a NaN value is a FAIL without "error": uncounted, redrawn for ever
                raise ValueError(
                    f"{spec_m} forecast {bad} non-finite value(s) on the validation windows: "
                    "its fit diverged (a lower learning rate or other settings may help)"
                )
            trial.set_user_attr(f"val_mse.{spec_m}", metrics.mse(f, val_true))
            forecasts.append(f.astype(np.float64))
        value = metrics.mse(np.mean(forecasts, axis=0), val_true)
        if not np.isfinite(value):  # finite forecasts whose squares overflow
            raise ValueError(f"the validation MSE is {value}: the forecasts are far off scale")
        trial.set_user_attr("fit_s", round(time.perf_counter() - t0, 2))
        log.info(
            "trial %d: period %d L=%d %s -> val MSE %.4f",
            trial.number,
            period,
            seq_len,
            tuned,
            value,
            extra=PROGRESS,
        )
        return value
