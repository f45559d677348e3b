"""The `hybrid-forecast` command line.

Each sub-command lives in its own module `experiments/cmd_<name>.py` exposing
`add_parser(sub)`, which registers an argparse sub-parser whose `func(args) -> int`
does the work. Modules import their heavy dependencies (torch, transformers) inside
the handler so that `hybrid-forecast --help` stays fast.

A `UserError` raised anywhere ends the process with exit code 2 and one line on
stderr, as do paths that cannot be used (``--out`` naming a file) and argparse's own
usage errors. Ctrl-C exits with 130 and SIGTERM (timeout, kill, batch schedulers) or
Windows' Ctrl-Break with 143, all through the same interrupt path: run/tune/bench log
it, and a tune trial cut short is marked failed at once instead of after the heartbeat
grace.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
from pathlib import Path, PureWindowsPath
from typing import NoReturn

from ensemble.errors import UserError

# Sub-command modules, in the order `--help` lists them.
COMMAND_MODULES = [
    "cmd_run",
    "cmd_forecast",
    "cmd_data",
    "cmd_periods",
    "cmd_bench",
    "cmd_tune",
    "cmd_analyse",
    "cmd_summary",
    "cmd_timellm",
    "cmd_bench_step",
    "cmd_members",
    "cmd_doctor",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless X is None or empty, the option
    is an on/off flag, or the help text already names its default ("default 512",
    "default $HYBRID_FORECAST_DATA"), which would otherwise print two contradicting
    defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if action.default is None or action.default == [] or flag or "default" in text:
            return text
        return super()._get_help_string(action)


# Commands that write figures (the others need not care about $HYBRID_FORECAST_FIGURES)
_DRAWING = {"run", "periods", "bench", "tune", "analyse", "timellm"}


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in one line naming the sub-command's help, not argparse's usage block
    (42 lines for `timellm`). Sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hybrid-forecast",
        description="Time-LLM and classical forecasters, combined by a feature-conditioned router.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"experiments.{name}").add_parser(sub)
    return parser


def _leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub-)sub-parser that ``args`` were parsed by: ``data info``'s for ``data info``."""
    while True:
        subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subs is None or getattr(args, subs.dest, None) not in subs.choices:
            return parser
        parser = subs.choices[getattr(args, subs.dest)]


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown option is reported by the sub-command that
    got it (and names its --help), not by the top-level parser."""
    for arg in sys.argv[1:] if argv is None else argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes Python could not decode: a GBK terminal, say
            raise UserError(
                f"argument {ascii(arg)} is not UTF-8 text: set the terminal to UTF-8 "
                "(e.g. LANG=zh_CN.UTF-8) or put the value in a config.yaml saved as UTF-8"
            ) from None
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf = _leaf_parser(parser, args)
        lists = [a for a in leaf._actions if not a.option_strings and a.nargs in ("+", "*")]
        # `summary r0 --finished-only r1`: argparse stops a list of positionals at the
        # first option and leaves the rest over (its intermixed mode refuses sub-parsers)
        if len(lists) == 1 and not any(e.startswith("-") for e in extra):
            dest = lists[0].dest
            setattr(args, dest, [*(getattr(args, dest) or []), *extra])
        else:
            leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    for key, value in vars(args).items():  # --out=~/runs/x: no shell expands that "~"
        setattr(args, key, [_home(v) for v in value] if isinstance(value, list) else _home(value))
    return args


def _home(value: object) -> object:
    """A "~" path with the home folder in it; any other value as it is."""
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops the work like Ctrl-C does (logs, trial states, temp files)."""


def _on_sigterm(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM (Ctrl-Break) kills at once
    raise Terminated()


def _terminating() -> list[int]:
    """SIGTERM, and on Windows Ctrl-Break (SIGBREAK), which its console sends instead."""
    return [signal.SIGTERM] + ([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else [])


def _close_progress_bars() -> None:
    """End any open tqdm bar, so that the message below starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar must never hide the error message
            pass


# What to tell the user after an interrupt; commands not listed: "rerun the command".
_RESUME_HINT = {
    "run": "rerun the same command: the members that finished are reused and an "
    "interrupted Time-LLM continues from its last checkpoint",
    "bench": "rerun the same command: finished cells and members are reused and an "
    "interrupted Time-LLM continues from its last checkpoint",
    "tune": "rerun the same command to finish the study's remaining trials (the interrupted "
    "trial is not counted)",
    "timellm": "rerun the same command: it continues from the last checkpoint (add "
    "--resume to make a checkpoint of other settings an error, not a fresh start)",
}


# Paths that cannot be written or read as asked (--out naming a file, a folder under a
# file, no permission): the user's input, not a fault of the program.
_PATH_ERRORS = (
    FileExistsError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
# Other OS errors that are about the place written to, not a bug: errno -> what to do
# (EDQUOT is not defined on Windows).
_DISK_ERRORS = {
    getattr(errno, name): fix
    for name, fix in (
        ("ENOSPC", "free some disk space or write elsewhere (e.g. --out on another disk)"),
        ("EDQUOT", "free some of your disk quota or write elsewhere"),
        ("ENAMETOOLONG", "give a shorter path"),
        ("EROFS", "the disk is read-only: write elsewhere (e.g. --out)"),
    )
    if hasattr(errno, name)
}

# Why Windows (or a FAT or SMB disk on Linux) refuses a file name.
_BAD_NAME = (
    'a Windows file name cannot contain < > : " | ? * or end in a space or dot '
    "(cmd: a trailing backslash before a closing quote escapes it)"
)


def _bad_name(exc: OSError) -> bool:
    """Whether ``exc`` is the OS refusing a file name: EINVAL naming a file (WinError 123,
    ERROR_INVALID_NAME, on Windows), or WinError 267 (ERROR_DIRECTORY, also a folder
    listed that is a file) about a name with such a character. A broken pipe on
    Windows is EINVAL too, but names no file; an EINVAL about a name Windows takes is
    some other fault."""
    if not isinstance(exc.filename, str) or not exc.filename:
        return False
    winerror = getattr(exc, "winerror", None)
    if winerror == 267:
        return _has_bad_char(exc.filename)
    # elsewhere EINVAL has other causes (a folder moved into itself, O_DIRECT on tmpfs)
    return winerror == 123 or (exc.errno == errno.EINVAL and _has_bad_char(exc.filename))


def _has_bad_char(path: str) -> bool:
    """A part of ``path`` (after its drive) that Windows refuses as a file name."""
    parts = PureWindowsPath(path).parts
    if PureWindowsPath(path).anchor:
        parts = parts[1:]
    return any(
        set('<>:"|?*') & set(part) or (part not in (".", "..") and part[-1] in " .")
        for part in parts
    )


def _report_bad_name(exc: OSError, parser, args) -> int:
    _close_progress_bars()
    leaf = _leaf_parser(parser, args) if parser is not None and args is not None else None
    flag = _flag_of(exc.filename, leaf, args)
    fix = f"; check {flag}" if flag else ""
    print(f"error: cannot use {exc.filename}: {_BAD_NAME}{fix}", file=sys.stderr)
    return 2


def _flag_of(path: str | None, parser: argparse.ArgumentParser | None, args) -> str | None:
    """The option (or positional) whose path value ``path`` is, lies in or contains:
    the most specific one, e.g. --data-dir for its CSV, --storage for its SQLite file."""
    if not path or parser is None or args is None:
        return None
    target = Path(path).absolute()
    best: tuple[int, str] | None = None
    for action in parser._actions:
        values = getattr(args, action.dest, None)
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str) or not value or value == "-":
                continue
            given = Path(value.removeprefix("sqlite:///")).absolute()
            if given == target or given in target.parents or target in given.parents:
                longs = [o for o in action.option_strings if o.startswith("--")]
                name = longs[0] if longs else action.metavar or action.dest.upper()
                depth = len(given.parts)
                if best is None or depth > best[0]:
                    best = (depth, name)
    return best[1] if best else None


_WINDOWS = os.name == "nt"
_WINDOWS_MAX_PATH = 260  # without LongPathsEnabled, longer paths fail as "not found"


def _path_fix(exc: OSError, flag: str | None, out_free: bool = False) -> str:
    """How to fix a path error; ``out_free``: the command writes into its input folder
    unless given --out (`analyse` and `forecast` of a read-only run folder)."""
    if _WINDOWS and isinstance(exc, FileNotFoundError) and exc.filename:
        n = len(os.path.abspath(exc.filename))
        if n >= _WINDOWS_MAX_PATH:
            return (
                f"the path is {n} characters, over Windows' limit of {_WINDOWS_MAX_PATH}: "
                f"give a shorter {flag or '--out'}, or turn on LongPathsEnabled"
            )
    if isinstance(exc, IsADirectoryError):
        return "give a file path there, not a folder"
    if flag in ("--data-dir", "--data-path", "--config"):  # read, never written
        return f"check {flag}: the file must exist and be readable"
    if flag and not flag.startswith("--") and isinstance(exc, PermissionError):
        if out_free:
            return f"{flag} cannot be written to: write the outputs elsewhere with --out"
        return f"check {flag}: its files must be readable by you"
    if flag:
        return f"check {flag}: give a path you can write to"
    return "give a path to a folder you can write to (e.g. --out)"


def _locked(exc: OSError) -> bool:
    """Whether ``exc`` is Windows refusing to replace a file another program has open
    (Excel locks the CSVs it shows; io.replace has retried for seconds by then)."""
    return (
        _WINDOWS
        and isinstance(exc, PermissionError)
        and isinstance(exc.filename, str)
        and os.path.isfile(exc.filename)
    )


def _locked_fix(args) -> str:
    """What to do about a file held open by another program."""
    fix = "is open in another program (Excel locks the CSVs it shows): close it and rerun"
    out = getattr(args, "out", None)
    if getattr(args, "command", None) == "bench" and isinstance(out, str):
        from experiments.shell import join

        fix += f", or `{join(['hybrid-forecast', 'bench', '--report-only', '--out', out])}`"
    return fix


def _tolerant_output() -> None:
    """Characters the console's code page lacks (a channel named ``SWDR (W/m²)`` on a
    GBK console, or redirected to a file there; "±" on a machine without a locale, whose
    ASCII stdout Python opens with surrogateescape) are written as ``\\xb2``, not raised
    as a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        if errors in ("strict", "surrogateescape") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _offline_kernel_fallback(record: logging.LogRecord) -> bool:
    """False for bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community"
    warning: on a CPU with AVX-512 BF16 it is raised at import, on GPU machines too, when the
    optional Hub kernel cannot be fetched (offline, or not trusted), and 4-bit still works
    through bitsandbytes' own CPU code. Nothing for the user to fix; the log file of a
    run or tune keeps it (the filter sits on the console handler only)."""
    return not (
        record.name.startswith("bitsandbytes") and "kernels-community" in record.getMessage()
    )


def _console_logging() -> None:
    """Warnings and errors on stderr, one line each, without the fallback above."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.addFilter(_offline_kernel_fallback)


def main(argv: list[str] | None = None) -> int:
    parser = args = None
    _tolerant_output()
    previous: dict[int, object] = {}
    try:  # a plain call from a worker thread cannot install handlers: no SIGTERM path there
        for signum in _terminating():
            previous[signum] = signal.signal(signum, _on_sigterm)
    except ValueError:
        pass
    try:  # Ctrl-C while the sub-command modules import is an interrupt like any other
        parser = build_parser()
        args = parse(parser, argv)
        _console_logging()
        if getattr(args, "command", None) in _DRAWING:
            from ensemble.figures import extra_formats

            extra_formats()  # a bad $HYBRID_FORECAST_FIGURES now, not after hours of training
        code = args.func(args)
    except UserError as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `hybrid-forecast members | head`: the reader has what it wanted. Exit as a
        # process killed by SIGPIPE would, and keep the interpreter's final flush from
        # raising again into the closed pipe.
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())
        return 141
    except _PATH_ERRORS as exc:
        if _bad_name(exc):
            return _report_bad_name(exc, parser, args)
        _close_progress_bars()
        if _locked(exc):
            print(f"error: {exc.filename} {_locked_fix(args)}", file=sys.stderr)
            return 2
        where = exc.filename or "a path"
        leaf = _leaf_parser(parser, args) if parser is not None and args is not None else None
        # a command writing into its input folder unless given --out, which cannot
        # write there (a file it cannot read is not fixed by --out)
        run_dir = getattr(args, "run_dir", None)
        out_free = (
            leaf is not None
            and "--out" in leaf._option_string_actions
            and getattr(args, "out", None) is None
            and not (isinstance(run_dir, str) and os.access(run_dir, os.W_OK))
        )
        fix = _path_fix(exc, _flag_of(exc.filename, leaf, args), out_free)
        print(f"error: cannot use {where}: {exc.strerror or exc}; {fix}", file=sys.stderr)
        return 2
    except OSError as exc:
        if _bad_name(exc):
            return _report_bad_name(exc, parser, args)
        if exc.errno not in _DISK_ERRORS:
            raise
        _close_progress_bars()
        where = exc.filename or "a file"
        print(
            f"error: cannot write {where}: {exc.strerror}; {_DISK_ERRORS[exc.errno]}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        _close_progress_bars()
        command = getattr(args, "command", None)
        hint = _RESUME_HINT.get(command or "", "rerun the command")
        print(f"interrupted: {hint}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: not installed from Python, cannot be restored
                signal.signal(signum, handler)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
