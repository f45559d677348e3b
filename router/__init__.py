"""Combination rules and routers that weight members' forecasts per window and channel.

Every combiner has ``fit(val_forecasts [M, W, H, C], val_targets [W, H, C], features, terms)
-> self``, ``weights(forecasts [M, W, H, C], features) -> [W, C, M]`` (rows on the simplex;
the steps' average for the rules that weigh each horizon step apart),
``step_weights(forecasts, features) -> [W, H, C, M]`` (the weights each step is combined
with) and ``forecast(forecasts, features) -> [W, H, C]``. Combiners are fitted on validation
forecasts only (``terms``, optional, are their ``router.objective.WindowTerms``); ``features`` ([W, C, F], ``router.features.window_features``) come from
the windows' inputs only and are needed by combiners with ``needs_features``.

| name | rule |
|---|---|
| mean | equal weights |
| median | per-step median |
| inverse_error | weights ~ 1 / validation MSE, per channel and horizon step |
| best | the member with the lowest validation MSE, per channel |
| stacked | per-horizon-step simplex weights (constrained least squares), shrunk toward the mean |
| stacked_tilted | stacked, blended per window with weights ~ members' recent MSE ** -beta |
| greedy | Caruana greedy selection with replacement, per channel |
| rules | shallow tree over readable features, printed as rules |
| learned_lgbm | FFORMA-style LightGBM softmax weights |
| learned_torch | small gating network |
| learned | stacked, unless LightGBM, torch or rules beat it on rolling-origin validation folds with one-sided Diebold-Mariano p < 0.05 |
"""

from __future__ import annotations

import inspect

from router.combiners import (
    BestMemberCombiner,
    Combiner,
    GreedyCombiner,
    InverseErrorCombiner,
    MeanCombiner,
    MedianCombiner,
)
from router.learned import LearnedRouter
from router.learned_lgbm import LGBMRouter
from router.learned_torch import TorchRouter
from router.rules import RuleRouter
from router.stacked import PooledStackedCombiner, StackedCombiner
from router.tilted import TiltedStackedCombiner

COMBINERS: dict[str, type[Combiner]] = {
    "mean": MeanCombiner,
    "median": MedianCombiner,
    "inverse_error": InverseErrorCombiner,
    "best": BestMemberCombiner,
    "greedy": GreedyCombiner,
    "stacked": StackedCombiner,
    "stacked_pooled": PooledStackedCombiner,
    "stacked_tilted": TiltedStackedCombiner,
    "rules": RuleRouter,
    "learned_lgbm": LGBMRouter,
    "learned_torch": TorchRouter,
    "learned": LearnedRouter,
}


def make_combiner(name: str, **kwargs) -> Combiner:
    """Build a combiner by name; keyword arguments it does not take are ignored.

    The run passes the same context (``seed``, ``feature_names``, ``member_names``) to
    every combiner, so rules that need none of it ignore it.
    """
    from ensemble.errors import UserError

    if name not in COMBINERS:
        raise UserError(f"unknown router {name!r}: choose from {', '.join(COMBINERS)}")
    cls = COMBINERS[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


# Routers that learn from validation windows how to weigh members against each other.
LEARNED = ("learned", "learned_lgbm", "learned_torch")


def check_router_data(name: str, n_members: int, n_val: int) -> None:
    """Refuse a learned router with nothing to choose between or nothing to learn from
    (UserError), before any member is fitted."""
    from ensemble.errors import UserError

    if name not in LEARNED:
        return
    if n_members < 2:
        raise UserError(
            f"router {name} weighs members against each other: give at least two members, "
            "or use the router mean"
        )
    if n_val < 3:
        raise UserError(
            f"router {name} learns from validation windows and this split has {n_val}; "
            "use a longer series, a shorter lookback or horizon, or the router mean"
        )


__all__ = ["COMBINERS", "LEARNED", "Combiner", "check_router_data", "make_combiner"]
