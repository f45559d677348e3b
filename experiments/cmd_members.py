"""`hybrid-forecast members`: every member with the settings it takes, and every router."""

from __future__ import annotations

import textwrap

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


def listing() -> str:
    """The text ``hybrid-forecast members`` prints."""
    from experiments import registry
    from experiments.members import timellm_settings
    from router import COMBINERS

    wrap = dict(width=88, initial_indent="  ", subsequent_indent="      ")
    lines = [
        "members (--members a,b; settings as name@key=value or --set name.key=value;",
        "every member also takes progress=false, no progress bars, which changes no number):",
    ]
    settings = registry.registered_settings()
    for name, description in registry.available().items():
        keys = timellm_settings() if name == "timellm" else settings[name]
        lines += textwrap.wrap(f"{name}: {description}", **wrap)
        if keys:
            lines += textwrap.wrap(
                f"settings: {', '.join(keys)}", **{**wrap, "initial_indent": "      "}
            )
    lines += ["", "routers (--router NAME):"]
    for name, cls in COMBINERS.items():
        lines += textwrap.wrap(f"{name}: {_first_paragraph(cls.__doc__)}", **wrap)
    return "\n".join(lines)


def handle(args) -> int:
    print(listing())
    return 0
