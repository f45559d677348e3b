"""Combination rules and routers that weight members' forecasts per window and channel.

Every combiner has ``fit(val_forecasts [M, W, H, C], val_targets [W, H, C], features) -> self``
and ``weights(forecasts [M, W, H, C], features) -> [W, C, M]`` (rows on the simplex).
Combiners are fitted on validation forecasts only.
"""

from __future__ import annotations

from router.combiners import MeanCombiner

COMBINERS = {"mean": MeanCombiner}


def make_combiner(name: str, **kwargs):
    from ensemble.errors import UserError

    if name not in COMBINERS:
        raise UserError(f"unknown --router {name!r}: choose from {', '.join(COMBINERS)}")
    return COMBINERS[name](**kwargs)
