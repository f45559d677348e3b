"""`hybrid-forecast members`: every member with the settings it takes, and every router."""

from __future__ import annotations

import textwrap
from typing import Any

from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "members",
        help="the members, the settings each takes (name@key=value, --set name.key=value), "
        "and the routers",
        description="List the members `run --members` accepts, with the keys each one "
        "reads from `name@key=value` or `--set name.key=value`, and the `--router` names.",
        formatter_class=HelpFormatter,
    )
    p.set_defaults(func=handle)


def _first_paragraph(doc: str | None) -> str:
    text = (doc or "").strip().split("\n\n")[0]
    return " ".join(text.replace("``", "`").split())


# The attribute a built member keeps a setting's value in, where it is not the key
_ATTRIBUTES = {"arima": {"seasonal": "season", "fourier": "fourier_periods"}}

# Two runs that differ in everything a default may be derived from: a value equal in
# both is the member's own default, else it comes from the run
_CONTEXTS = (
    dict(seq_len=512, pred_len=96, n_channels=7, freq="h", periods=[24, 168], seed=0),
    dict(seq_len=336, pred_len=48, n_channels=3, freq="D", periods=[7], seed=1),
)
# A short lookback and horizon, where defaults capped by them (lightgbm's lags and
# components) differ; members that refuse so short a window are read from the two above.
_SHORT = dict(seq_len=16, pred_len=8, n_channels=2, freq="W", periods=[4], seed=2)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "+".join(map(str, value)) or "none"
    return str(value)


def setting_defaults(name: str, keys: tuple[str, ...]) -> list[str]:
    """``key=default`` for each setting of member ``name``: ``key=(run)`` where the
    default is derived from the run (its seed, lookback, horizon or periods), the bare
    key where the member decides at fit time (e.g. threads) or cannot be built here."""
    from experiments import registry
    from experiments.members import _LIGHTGBM_CASTS

    attrs = _ATTRIBUTES.get(name, {}) | (
        {k: a for k, a, _ in _LIGHTGBM_CASTS} if name == "lightgbm" else {}
    )

    def build(context: dict) -> Any:
        return registry.build(name, registry.MemberContext(**context, dataset="ETTh1"))

    try:
        built = [build(c) for c in _CONTEXTS]
    except Exception:  # a missing optional package: the keys alone still help
        return list(keys)
    try:
        built.append(build(_SHORT))
    except Exception:  # refuses a 16-step lookback
        pass
    out = []
    for key in keys:
        first, *rest = (getattr(m, attrs.get(key, key), None) for m in built)
        if first is None:
            out.append(key)
        elif any(v != first for v in rest[: len(_CONTEXTS) - 1]):
            out.append(f"{key}=(run)")
        elif any(v != first for v in rest):  # the same on long windows, less on short ones
            out.append(f"{key}={_shown(first)} (capped by the run)")
        else:
            out.append(f"{key}={_shown(first)}")
    return out


def listing() -> str:
    """The text ``hybrid-forecast members`` prints."""
    from experiments import registry
    from experiments.members import timellm_settings
    from router import COMBINERS

    wrap = dict(width=88, initial_indent="  ", subsequent_indent="      ")
    lines = [
        "members (--members a,b; settings as name@key=value or --set name.key=value;",
        "every member also takes progress=false, no progress bars, which changes no number;",
        "defaults after '='; (run): derived from the run's seed, lookback, horizon or periods;",
        "(capped by the run): less where the lookback or horizon is shorter;",
        "a bare key: unset unless given):",
    ]
    settings = registry.registered_settings()
    for name, description in registry.available().items():
        keys = timellm_settings() if name == "timellm" else settings[name]
        lines += textwrap.wrap(f"{name}: {description}", **wrap)
        if keys:
            lines += textwrap.wrap(
                f"settings: {', '.join(setting_defaults(name, keys))}",
                **{**wrap, "initial_indent": "      "},
            )
    lines += ["", "routers (--router NAME):"]
    for name, cls in COMBINERS.items():
        lines += textwrap.wrap(f"{name}: {_first_paragraph(cls.__doc__)}", **wrap)
    return "\n".join(lines)


def handle(args) -> int:
    print(listing())
    return 0
