"""Member registry: names on the command line -> Forecaster instances.

A member spec is ``name`` or ``name@key=value@key=value`` (the same member may appear
several times with different period-derived settings, e.g. ``dlinear@kernel=25`` and
``dlinear@kernel=49``). Values are parsed as int, float or left as strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ensemble.errors import UserError
from ensemble.forecaster import Forecaster

RESERVED = {"ensemble", "mean", "median", "oracle"}


@dataclass
class MemberContext:
    """What a factory may use to build a member.

    Attributes:
        seq_len, pred_len: L and H.
        n_channels: C.
        freq: pandas frequency of the data, or None.
        periods: ranked periods from the periodicity analyser (train rows only).
        seed: random seed.
        dataset: dataset name (for prompts).
        params: the member's own ``@key=value`` settings merged over config defaults.
        workdir: folder for this member's checkpoints and logs.
    """

    seq_len: int
    pred_len: int
    n_channels: int
    freq: str | None
    periods: list[int]
    seed: int
    dataset: str
    params: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None
    progress: bool | None = None  # None: bars only on a terminal; False: never


Factory = Callable[[MemberContext], Forecaster]
# name -> (factory, description, the settings it reads; None: the factory checks them)
_REGISTRY: dict[str, tuple[Factory, str, tuple[str, ...] | None]] = {}


def register(
    name: str, description: str, settings: tuple[str, ...] | None = ()
) -> Callable[[Factory], Factory]:
    """Register a member factory under ``name``.

    Args:
        settings: the ``@key=value`` / ``--set`` keys the factory reads; any other key is a
            user error (a typo such as ``dlinear@kernal=49`` must not be ignored). None: the
            factory validates its own keys.
    """

    def deco(fn: Factory) -> Factory:
        _REGISTRY[name] = (fn, description, settings)
        return fn

    return deco


def available() -> dict[str, str]:
    _load_builtin()
    return {k: v[1] for k, v in _REGISTRY.items()}


def registered_settings() -> dict[str, tuple[str, ...] | None]:
    """Member name -> the setting keys it was registered with (None: it checks its own)."""
    _load_builtin()
    return {k: v[2] for k, v in _REGISTRY.items()}


def _coerce(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def base_names(members: list[str] | str) -> set[str]:
    """The member names of specs, a list or comma-separated (``dlinear@kernel=49`` ->
    ``dlinear``)."""
    specs = members.split(",") if isinstance(members, str) else members
    return {parse_spec(m)[0] for m in specs if m.strip()}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'dlinear@kernel=25' -> ('dlinear', {'kernel': 25})."""
    base, *pairs = spec.strip().split("@")
    params = {}
    for p in pairs:
        if "=" not in p or not p.split("=", 1)[0].strip():
            raise UserError(
                f"member setting {p!r} in {spec!r} is not key=value (e.g. dlinear@kernel=25)"
            )
        k, v = p.split("=", 1)
        if k.strip() in params:  # else the last value would win without a word
            raise UserError(f"member setting {k.strip()!r} is given twice in {spec!r}")
        params[k.strip()] = _coerce(v.strip())
    return base, params


def parse_sets(items: list[str] | None, members: list[str] | str) -> dict[str, dict[str, Any]]:
    """``--set`` flags -> member defaults: ['dlinear.epochs=5'] -> {'dlinear': {'epochs': 5}}.

    Values are coerced as in member specs. A MEMBER that is not in ``members`` (specs such
    as ``dlinear@kernel=49`` count by their base name) is refused: the setting would
    silently do nothing.
    """
    bases = base_names(members)
    params: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--set {item!r}: expected MEMBER.KEY=VALUE, e.g. dlinear.epochs=5")
        lhs, val = item.split("=", 1)
        member, key = (t.strip() for t in lhs.split(".", 1))
        if not key:
            raise UserError(
                f"--set {item!r}: no setting named after {member!r}.; e.g. {member}.lr=0.001"
            )
        if member not in bases:
            raise UserError(
                f"--set {item!r}: {member!r} is not among the members "
                f"({', '.join(members)}); add it to --members or drop the --set"
            )
        if key in params.get(member, {}):  # else the last value would win without a word
            raise UserError(f"--set {member}.{key} is given twice; keep one")
        params.setdefault(member, {})[key] = _coerce(val.strip())
    return params


def split_members(text: str, flag: str = "--members") -> list[str]:
    """``"naive, dlinear"`` -> ``["naive", "dlinear"]``. An empty item between commas (a
    stray comma, an unset shell variable: ``naive,$M,dlinear``) is refused, not dropped;
    blanks alone give [] (refused as "no members" where members are needed)."""
    items = [s.strip() for s in text.split(",")]
    if any(items) and not all(items):
        raise UserError(
            f"{flag} {text!r} has an empty item: drop the extra comma, or give the member "
            "that belongs there"
        )
    return [s for s in items if s]


def parse_members(text: str | list[str]) -> list[str]:
    specs = [
        s.strip() for s in (split_members(text) if isinstance(text, str) else text) if s.strip()
    ]
    if not specs:
        raise UserError("no members given: pass --members naive,dlinear,... ")
    names = available()
    for s in specs:
        base, _ = parse_spec(s)
        if base not in names:
            raise UserError(f"unknown member {base!r}: choose from {', '.join(sorted(names))}")
        if s in RESERVED:
            raise UserError(f"{s!r} is reserved for combined forecasts; pick another member name")
    # the same settings written two ways ("period=24" and "period=24.0", settings in
    # another order, spaces inside a "+" list) are the same model: it must not vote twice
    seen: dict[tuple[str, tuple], str] = {}
    for s in specs:
        base, params = parse_spec(s)
        canon = tuple(
            sorted(
                (k, v.replace(" ", "") if isinstance(v, str) and "+" in v else v)
                for k, v in params.items()
            )
        )
        if (base, canon) in seen:
            raise UserError(
                f"a member is listed twice in {','.join(specs)} ({seen[(base, canon)]} and "
                f"{s} are the same settings); give the copies different @settings"
            )
        seen[(base, canon)] = s
    # distinct settings whose folder names coincide ("24+168" and "24_168") would
    # overwrite each other's model and forecasts; case too, on Windows and macOS
    from experiments.member_cache import member_dir  # it imports this module

    folders: dict[str, str] = {}
    for s in specs:
        folder = member_dir(s)
        if folder.lower() in folders:
            raise UserError(
                f"{folders[folder.lower()]} and {s} would share the folder members/{folder}; "
                "write one of them another way"
            )
        folders[folder.lower()] = s
    return specs


def build(spec: str, ctx: MemberContext) -> Forecaster:
    base, params = parse_spec(spec)
    _load_builtin()
    factory, _, settings = _REGISTRY[base]
    params = {**ctx.params, **params}
    # every member takes progress, so no registered list names it: checked here, or a
    # member that shows no bars would take naive@progress=maybe without a word
    if params.get("progress") is not None and not isinstance(params["progress"], bool):
        raise UserError(
            f"{spec}: a setting has the wrong type or value (progress must be true or "
            f"false, got {params['progress']!r}); write progress=true or progress=false"
        )
    if settings is not None:
        unknown = sorted(set(params) - set(settings) - {"progress"})
        if unknown:
            valid = ", ".join(sorted(settings)) or "none"
            raise UserError(f"unknown {base} setting(s) {', '.join(unknown)}; valid: {valid}")
    try:
        member = factory(replace(ctx, params=params))
    except (ValueError, TypeError) as exc:  # int("abc") and the like, before any fitting
        raise UserError(
            f"{spec}: a setting has the wrong type or value ({exc}); fix its @key=value "
            f"or --set {base}.KEY=VALUE"
        ) from None
    member.name = spec
    return member


def check_specs(
    specs: list[str],
    member_params: dict[str, dict[str, Any]],
    *,
    seq_len: int,
    pred_len: int,
    n_channels: int,
    freq: str | None,
    seed: int,
    dataset: str,
    preflight: bool = False,
) -> None:
    """Build every spec once, unfitted, so a bad ``@key=value`` or ``--set`` fails before
    hours of work (bench's first cell, tune's first trial) rather than inside them; with
    ``preflight`` (every member will be fitted: tune) also what a member checks before
    fitting, such as Time-LLM's backbone folder.

    Built with no periods, some members warn that they fall back to one: not this check's
    news (each real run passes the periods it detects), so warnings are muted meanwhile.
    """
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        for spec in specs:
            base, _ = parse_spec(spec)
            ctx = MemberContext(
                seq_len=seq_len,
                pred_len=pred_len,
                n_channels=n_channels,
                freq=freq,
                periods=[],
                seed=seed,
                dataset=dataset,
                params=dict(member_params.get(base, {})),
                progress=False,
            )
            member = build(spec, ctx)
            if preflight and hasattr(member, "preflight"):
                member.preflight()
    finally:
        logging.disable(previous)


_LOADED = False


def _load_builtin() -> None:
    """Import the built-in member definitions once (they register themselves)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from experiments import members  # noqa: F401
