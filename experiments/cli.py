"""The `hybrid-forecast` command line.

Each sub-command lives in its own module `experiments/cmd_<name>.py` exposing
`add_parser(sub)`, which registers an argparse sub-parser whose `func(args) -> int`
does the work. Modules import their heavy dependencies (torch, transformers) inside
the handler so that `hybrid-forecast --help` stays fast.

A `UserError` raised anywhere ends the process with exit code 2 and one line on
stderr, as do paths that cannot be used (``--out`` naming a file); argparse's own usage
errors also exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ensemble.errors import UserError

# Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "cmd_run",
    "cmd_data",
    "cmd_periods",
    "cmd_bench",
    "cmd_tune",
    "cmd_analyse",
    "cmd_summary",
    "cmd_timellm",
    "cmd_bench_step",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless X is None or empty, or the help
    text already names its default ("default 512", "default $HYBRID_FORECAST_DATA"),
    which would otherwise print two contradicting defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default == [] or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-forecast",
        description="Time-LLM and classical forecasters, combined by a feature-conditioned router.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"experiments.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == f"experiments.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


# Paths that cannot be written or read as asked (--out naming a file, a folder under a
# file, no permission): the user's input, not a fault of the program.
_PATH_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    try:  # Ctrl-C while the sub-command modules import is an interrupt like any other
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        code = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _PATH_ERRORS as exc:
        where = exc.filename or "a path"
        fix = (
            "give a file path there, not a folder"
            if isinstance(exc, IsADirectoryError)
            else "give a path to a folder you can write to (e.g. --out)"
        )
        print(f"error: cannot use {where}: {exc.strerror or exc}; {fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
