"""Scoring a run: the members' forecasts stacked, every forecast scored (members, the
ensemble, the mean / median references and the oracle bound), the Diebold-Mariano tests,
a learned router's candidates compared, the router's weights and features saved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ensemble import hybrid, metrics
from ensemble.io import write_npz

log = logging.getLogger("hybrid_forecast.run")


def score_forecasts(
    specs: list[str],
    stack: np.ndarray,
    true: np.ndarray,
    ensemble: np.ndarray,
    losses: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """MSE and MAE of each member and of the ensemble.

    The ensemble is scored first, and its float32 copy (what ``forecasts.npz`` keeps) is
    returned; its float64 memory then holds the members' differences in turn (unless it
    shares the members' memory), so ``ensemble`` is overwritten. No [W, H, C] float64
    temporary is made beside it (electricity's shape: 0.6 GB less at the run's peak).

    Args:
        stack: [M, W, H, C] member forecasts; true: [W, H, C]; ensemble: [W, H, C].
        losses: filled with each forecast's per-window MSE [W] (the Diebold-Mariano
            tests' input), members first, when given.

    Returns:
        (scores, the ensemble as float32).
    """
    kept = ensemble.astype(np.float32)
    own: dict[str, np.ndarray] | None = None if losses is None else {}
    # (a combiner that hands back a view of the members' forecasts keeps them intact)
    spent = None if np.may_share_memory(ensemble, stack) else ensemble
    ens = _score("ensemble", ensemble, true, own, scratch=spent is not None)
    scores = {  # the members' differences go into the spent ensemble: no temporary
        spec: _score(spec, stack[i], true, losses, out=spent) for i, spec in enumerate(specs)
    }
    scores["ensemble"] = ens
    if losses is not None:
        losses.update(own)
    return scores, kept


def score_references(
    stack: np.ndarray,
    true: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    losses: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """MSE and MAE of the reference combinations reported with every router: mean,
    median (fitted on ``reference``, the validation stack and targets) and the oracle
    (best member per window and channel on its own targets: a bound only).

    Each is made, scored and dropped in turn (each is [W, H, C] float64), its memory
    reused for the differences; the caller can free what it holds before this.

    Args:
        stack: [M, W, H, C] member forecasts; true: [W, H, C].
        losses: filled with the mean's and median's per-window MSE [W], when given.
    """
    from router import make_combiner

    scores = {}
    for name in ("mean", "median"):
        ref = make_combiner(name).fit(*reference)
        scores[name] = _score(name, hybrid.combined_forecast(ref, stack), true, losses, True)
    oracle = hybrid.combine(stack, hybrid.oracle_weights(stack, true))
    scores["oracle"] = mse_mae(oracle, true, scratch=True)
    return scores


def seasonal_baseline(
    x: np.ndarray, true: np.ndarray, periods: list[int], channels: list[int], chunk: int = 512
) -> tuple[str, float]:
    """The lowest MSE of a last-value and a seasonal-naive forecast at each of the run's
    periods that fits the lookback: the floor a trained member must clear. A member above
    it on validation has not learned the series' cycle (Time-LLM after one epoch: 0.94
    against seasonal naive's 0.45 on ETTh1), and a comparison with it says nothing yet.

    Args:
        x: [W, L, C_all] input windows (a strided view); true: [W, H, C] targets of the
            evaluated ``channels``.
        periods: the run's periods (those longer than L are skipped).
        chunk: windows per block (no [W, H, C] copy of a wide split at once).

    Returns:
        (the forecast's name, e.g. ``snaive@period=24`` or ``naive``, its MSE).
    """
    w, seq_len, _ = x.shape
    h = true.shape[1]
    steps = np.arange(h)
    cands = {"naive": np.full(h, seq_len - 1)}  # [H] input row each step repeats
    for p in periods:
        if 2 <= p <= seq_len:
            cands[f"snaive@period={p}"] = seq_len - p + steps % p
    sums = dict.fromkeys(cands, 0.0)
    for lo in range(0, w, chunk):
        xs = x[lo : lo + chunk][..., channels]
        ys = true[lo : lo + chunk]
        for name, idx in cands.items():
            d = xs[:, idx, :] - ys
            sums[name] += float(np.einsum("whc,whc->", d, d))
    n = true.size
    name = min(sums, key=sums.get)
    return name, sums[name] / n


def _score(
    name: str,
    pred: np.ndarray,
    true: np.ndarray,
    losses: dict[str, np.ndarray] | None,
    scratch: bool = False,
    out: np.ndarray | None = None,
) -> dict[str, float]:
    """``mse_mae(pred, true, scratch, out)``, and ``name``'s per-window MSE into
    ``losses`` when given."""
    if losses is not None:
        losses[name] = metrics.window_mse(pred, true)
    return mse_mae(pred, true, scratch, out)


def mse_mae(
    pred: np.ndarray, true: np.ndarray, scratch: bool = False, out: np.ndarray | None = None
) -> dict[str, float]:
    """``metrics.scores(pred, true)`` with one float64 temporary of their shape, not four.

    The same numbers: the same float64 differences, laid out as ``pred - true`` lays them
    out, averaged in the same order (|d| for the MAE, then |d| * |d| = d * d in place for
    the MSE). No temporary at all where the differences can go where ``pred - true``
    would lay them out: over a float64 ``pred`` with ``scratch`` (the caller's own, not
    needed afterwards, laid out as the differences are), or into the memory of ``out`` (a
    contiguous float64 array of their shape whose values are spent, laid out as it may
    be).
    """
    into = _difference_into(out, pred, true) if out is not None else None
    if scratch and _same_layout_as_difference(pred, true):
        d = np.subtract(pred, true, out=pred)
    elif into is not None:
        d = np.subtract(pred, true, out=into, dtype=np.float64)  # float32 inputs too
    else:
        d = np.subtract(pred, true, dtype=np.float64)
    np.abs(d, out=d)
    mae = float(np.mean(d))
    np.multiply(d, d, out=d)
    return {"mse": float(np.mean(d)), "mae": mae}


def _same_layout_as_difference(pred: np.ndarray, true: np.ndarray) -> bool:
    """Whether ``pred - true`` would be a float64 array laid out in memory as ``pred`` is
    (then the differences can overwrite ``pred`` and their sums run in the same order)."""
    return _spare(pred, pred, true) and hybrid.memory_order(pred) == _difference_order(pred, true)


def _difference_into(buf: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray | None:
    """``buf``'s memory (values spent) as an array laid out as the float64 ``pred - true``
    would be, whatever ``buf``'s own layout; None where it cannot hold it."""
    if not _spare(buf, pred, true) or np.may_share_memory(buf, pred):
        return None
    order = _difference_order(pred, true)
    flat = buf.transpose(hybrid.memory_order(buf)).reshape(-1)  # a view: it is contiguous
    return flat.reshape([pred.shape[a] for a in order]).transpose(np.argsort(order))


def _spare(buf: np.ndarray, pred: np.ndarray, true: np.ndarray) -> bool:
    """Whether ``buf`` is a writeable, contiguous float64 array of their shape, apart
    from ``true`` (a strided view would sum in other pieces)."""
    if buf.dtype != np.float64 or not buf.flags.writeable:
        return False
    if not buf.shape == pred.shape == true.shape or min(buf.shape, default=0) < 2:
        return False
    contiguous = buf.transpose(hybrid.memory_order(buf)).flags.c_contiguous
    return contiguous and not np.may_share_memory(buf, true)


def _difference_order(pred: np.ndarray, true: np.ndarray) -> list[int]:
    """The memory order of the axes of ``pred - true`` (numpy picks it from the operands'
    strides, so a corner of each tells)."""
    corner = tuple(slice(0, 2) for _ in pred.shape)
    return hybrid.memory_order(np.subtract(pred[corner], true[corner], dtype=np.float64))


def significance_tests(
    losses: dict[str, np.ndarray], specs: list[str], pred_len: int
) -> dict[str, dict[str, Any]]:
    """Are the test differences more than chance? Diebold-Mariano tests of the ensemble
    against every other forecast, and of each pair of members (is Time-LLM really better
    than DLinear here?). ``losses``: per-window test MSE [W] by name."""
    ens = losses["ensemble"]
    return {
        "ensemble_vs": {
            name: metrics.diebold_mariano(ens, loss, pred_len)
            for name, loss in losses.items()
            if name != "ensemble"
        },
        "members": {
            a: {b: metrics.diebold_mariano(losses[a], losses[b], pred_len) for b in specs[i + 1 :]}
            for i, a in enumerate(specs[:-1])
        },
    }


def stack_members(results: dict[str, dict[str, Any]], part: str, channels: list[int]) -> np.ndarray:
    """The members' ``part`` forecasts of the evaluated channels as one [M, W, H, C] array.

    ``hybrid.stack`` of each member's ``[..., channels]`` (laid out as that gives them),
    but in the members' own dtype (float32; float64 only if a member's forecasts are),
    each member's array dropped from ``results`` once it is copied: no float64 copy of
    every member next to the stack, nor every member twice.
    """
    dtype = np.result_type(*(v[part] for v in results.values()))
    out = None
    for i, v in enumerate(results.values()):
        f = v.pop(part)[..., channels]
        if out is None:
            out = hybrid.empty_stack(len(results), f, dtype)
        out[i] = f
        del f
    return out


def write_router_weights(
    out: Path,
    combiner: Any,
    specs: list[str],
    w_val: np.ndarray,
    w_test: np.ndarray,
    feats: dict[str, np.ndarray | None],
    feature_names: list[str],
) -> None:
    """``router_weights.npz``: [W, C, M] weights on val and test, the router's features
    when it has any, and the per-horizon-step weights of the step-wise rules (stacked,
    inverse_error): [H, M] averaged over channels, and [H, C, M] as applied where they
    differ by channel (with the member forecasts, they rebuild test/ensemble; ``test`` is
    their average over the horizon), and ``horizon_averaged``.

    stacked_tilted's steps are weighted ``(1 - share[w, c]) * S[h, c] + share[w, c] *
    t[w, c]``: its stacked part's S [H, C, M] (``stacked_step_channel_weights``) and, per
    split, t [W, C, M] (``tilt_val``, ``tilt_test``) and share [W, C] (``tilt_share_val``,
    ``tilt_share_test``) rebuild its ensemble. Not ``step_weights``: those would be read
    as the weights every window applies."""
    from router.combiners import Combiner
    from router.tilted import TiltedStackedCombiner

    model = getattr(combiner, "model_", combiner)  # the learned router's chosen rule
    step = getattr(model, "step_weights_", None)
    step = (
        {}
        if step is None
        else {"step_weights": _step_weights(step).astype(np.float32)}
        | ({"step_channel_weights": step.astype(np.float32)} if step.ndim == 3 else {})
    )
    if isinstance(model, TiltedStackedCombiner):
        # two [W, C, M] arrays and two [W, C] more: the size of val/test again, no forecasts
        step = {"stacked_step_channel_weights": model.stacked_.step_weights_.astype(np.float32)}
        for part, w in (("val", w_val), ("test", w_test)):
            t, share = model.tilt(feats[part], w.shape[2], w.shape[0], w.shape[1])
            step[f"tilt_{part}"] = t.astype(np.float32)
            step[f"tilt_share_{part}"] = share.astype(np.float32)
    # whether ``val``/``test`` are averages over the horizon of weights applied step by
    # step (stacked, inverse_error, median, stacked_tilted): the routing report says so
    averaged = type(model).step_weights is not Combiner.step_weights
    write_npz(
        out / "router_weights.npz",
        val=w_val.astype(np.float32),
        test=w_test.astype(np.float32),
        members=np.array(specs),
        horizon_averaged=np.array(averaged),
        **step,
        **(
            {
                "features_val": feats["val"],
                "features_test": feats["test"],
                "feature_names": np.array(feature_names),
            }
            if combiner.needs_features
            else {}
        ),
    )


def _step_weights(step: np.ndarray) -> np.ndarray:
    """[H, M] or [H, C, M] per-step weights -> [H, M] (channel average)."""
    return step.mean(axis=1) if step.ndim == 3 else step


def compare_combiners(
    learned, val: tuple, test: tuple, mean_loss: np.ndarray, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Every candidate of a fitted learned router, refitted on all validation windows.

    Args:
        learned: a fitted ``LearnedRouter`` (its chosen model is reused, not refitted).
        val, test: (stack [M, W, H, C], targets [W, H, C], features [W, C, F] | None).
        mean_loss: [W] per-window test MSE of the mean combination.
        progress: a bar over the candidates, on a terminal.

    Returns:
        {combiner: {"val_cv": mean held-out MSE over the rolling-origin folds (the score
        the learned router chose by; the static references are scored for comparison
        only), "val_cv_vs_incumbent": Diebold-Mariano test of its held-out fold losses
        against the incumbent's, "val": {"mse", "mae"} in-sample on validation,
        "test": {"mse", "mae"},
        "test_vs_mean": Diebold-Mariano test of its test MSE against the mean's,
        "chosen": bool}}.
    """
    from tqdm.auto import tqdm

    from router import make_combiner
    from router.learned import registry_name

    out: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        learned.inner_scores_.items(),
        desc="router candidates",
        unit="router",
        leave=False,
        disable=None if progress else True,
    )
    for cand, cv in bar:
        name = registry_name(cand)
        model = (
            learned.model_
            if cand == learned.chosen_
            else make_combiner(
                name,
                seed=learned.seed,
                feature_names=learned.feature_names,
                member_names=learned.member_names,
            ).fit(*val, learned.terms_)
        )
        # one [W, H, C] forecast at a time: the test one is scored and dropped before
        # the validation one is made
        pred = model.forecast(test[0], test[2])
        test_loss = metrics.window_mse(pred, test[1])
        test_scores = mse_mae(pred, test[1], scratch=True)
        del pred
        val_scores = mse_mae(model.forecast(val[0], val[2]), val[1], scratch=True)
        out[name] = {
            "val_cv": float(cv),  # unrounded: results.md rounds it once, as the Router line
            "val_cv_vs_incumbent": learned.held_out_test(cand),
            "val": val_scores,
            "test": test_scores,
            "test_vs_mean": metrics.diebold_mariano(test_loss, mean_loss, test[1].shape[1]),
            "chosen": cand == learned.chosen_,
        }
        del model
    return out


def router_inputs(x, pred_len: int, periods: list[int], channels: list[int]):
    """``router.features.input_features`` of the evaluated channels: the part of
    ``router_features`` that is the same for any members routed over these windows."""
    from router.features import input_features

    return input_features(_channels_of(x, channels), pred_len, periods)


def router_features(
    x, stack: np.ndarray, periods: list[int], specs: list[str], channels: list[int], inputs=None
) -> tuple[np.ndarray, list[str]]:
    """Router features of a split's windows from their inputs only.

    Args:
        x: [W, L, C_all] input windows (strided view).
        stack: [M, W, H, C] members' forecasts of the evaluated channels.
        periods: ranked periods of the train rows.
        specs: member names.
        channels: the evaluated channels (indices into C_all).
        inputs: ``router_inputs`` of the same windows, if computed already.

    Returns:
        features [W, C, F] float32 and their names.
    """
    from router.features import window_features

    if stack.dtype != np.float64:  # float32 members: the features of their float64 values
        stack = _Float64Slices(stack)
    return window_features(
        _channels_of(x, channels), stack, periods, member_names=specs, inputs=inputs
    )


def _channels_of(x, channels: list[int]):
    """x [W, L, C_all] -> [W, L, C] of the evaluated channels (a view when all are)."""
    return x if list(channels) == list(range(x.shape[-1])) else x[..., channels]


class _Float64Slices:
    """A float32 [M, W, H, C] stack read as float64, slice by slice.

    The router features compute in the dtype of the forecasts they are given and read
    them by slices of windows; this gives them the float64 numbers of a float64 stack
    without one (``np.asarray`` of the whole still works, as a full float64 copy).
    """

    dtype = np.dtype(np.float64)

    def __init__(self, stack: np.ndarray):
        self._stack = stack
        self.shape = stack.shape
        self.ndim = stack.ndim

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._stack[key], dtype=np.float64)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self._stack, dtype=np.float64 if dtype is None else dtype)
