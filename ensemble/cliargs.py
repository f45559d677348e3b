"""argparse helpers shared by the data flags (``ensemble.data.add_data_arguments``) and
the sub-commands: options taken once, empty values refused, an --out naming a folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ensemble.errors import UserError


class Once(argparse.Action):
    """Store an option's value, refusing it a second time: argparse would keep the last
    one without a word (``--seed 0 --seed 1`` is one run of seed 1, not two runs)."""

    def __init__(self, *args: Any, hint: str, **kwargs: Any) -> None:
        self.hint = hint
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None:
            raise UserError(
                f"{self.option_strings[-1]} is given twice ({before} and {values}); {self.hint}"
            )
        setattr(namespace, self.dest, values)


def refuse_empty(args: argparse.Namespace, keys: tuple[str, ...]) -> None:
    """Refuse a flag of ``keys`` given as "" (or blanks): a slip such as an unset shell
    variable, which would otherwise mean the default (``--out ""``: the working folder)."""
    for key in keys:
        val = getattr(args, key, None)
        if isinstance(val, str) and not val.strip():
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} is empty: give a value, or drop {flag} for its default")


def names_a_folder(out: str) -> bool:
    """Whether ``out`` is a folder: one there, or a path ending in a slash (Path drops
    the slash, and the writer made a file of that name)."""
    return Path(out).is_dir() or out.endswith(tuple(s for s in (os.sep, os.altsep, "/") if s))
