"""experiments.shell: commands printed for the user to copy."""

from __future__ import annotations

import shlex

from experiments import shell


def test_windows_paths_are_quoted_for_cmd_and_posix_ones_for_sh():
    words = ["hybrid-forecast", "run", "--config", r"C:\Users\张三\毕业 论文\config.yaml"]
    # cmd.exe: double quotes around the word with a space only; backslashes kept as they are
    assert shell.join(words, windows=True) == (
        r'hybrid-forecast run --config "C:\Users\张三\毕业 论文\config.yaml"'
    )
    posix = shell.join(["summary", "runs/a b", "runs/c"], windows=False)
    assert posix == "summary 'runs/a b' runs/c" and shlex.split(posix)[1] == "runs/a b"


def test_characters_cmd_acts_on_are_quoted():
    # cmd.exe would run "D\tune\..." as a second command after the &
    assert shell.join([r"C:\R&D\tune\best_config.yaml"], windows=True) == (
        r'"C:\R&D\tune\best_config.yaml"'
    )
    assert shell.join([r"C:\a%b\\"], windows=True) == '"C:\\a%b\\\\\\\\"'  # trailing \ doubled
    assert shell.join(["runs/h1"], windows=True) == "runs/h1"


def test_ensemble_and_timellm_quote_with_the_same_join_without_importing_experiments():
    # ensemble/ and timellm/ print commands too, and must not import experiments/
    import re
    from pathlib import Path

    import ensemble.shell

    assert shell.join is ensemble.shell.join
    root = Path(__file__).resolve().parents[1]
    for package in ("ensemble", "timellm"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"^\s*(from|import) experiments\b", text, re.M), path


def test_on_windows_by_default_where_the_module_says_so(monkeypatch):
    import ensemble.shell

    monkeypatch.setattr(ensemble.shell, "_WINDOWS", True)
    assert shell.join(["run", "--out", "a b"]) == 'run --out "a b"'
    monkeypatch.setattr(ensemble.shell, "_WINDOWS", False)
    assert shell.join(["run", "--out", "a b"]) == "run --out 'a b'"
