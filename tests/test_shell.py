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
