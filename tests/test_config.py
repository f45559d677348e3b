"""experiments.config: a config file that cannot be used is one line naming the file and
the fix; a run folder's own damaged config.yaml is still that run's."""

from __future__ import annotations

import logging

import pytest
from conftest import reused_members, synth_run_argv

from experiments.cli import main
from experiments.config import RunConfig

_FIX = "give the config.yaml a run or `tune` wrote"


def _one_line(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "the file is empty (no config keys)"),
        ("\n  \n# only a comment\n", "the file is empty (no config keys)"),
        ("seq_len: [96\n", "not valid YAML"),
        ("- seq_len\n", "expected a mapping of config keys (key: value lines), found a list"),
        ("date,OT\n2020-01-01,1\n", "found plain text: not a config.yaml"),
        ("seq_len: abc\n", "config key seq_len: 'abc' is not a whole number; correct it there"),
    ],
    ids=["empty", "blank", "yaml", "list", "csv", "type"],
)
def test_a_config_that_cannot_be_used_names_the_file_and_the_fix(text, needle, tmp_path, capsys):
    # an empty file ran every default (ETTh1, L=512, H=96) with exit 0; the others named
    # no file (a wrong key's value) or no fix
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text, encoding="utf-8")
    err = _one_line(["run", "--config", str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert f"{cfg}: " in err and needle in err and err.endswith(_FIX), err
    assert not (tmp_path / "r").exists()


def test_a_missing_config_says_which_file_to_give(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    err = _one_line(["run", "--config", str(missing), "--out", str(tmp_path / "r")], capsys)
    assert err == f"error: config file not found: {missing}; {_FIX}"


def test_a_run_folders_config_yaml_left_empty_is_still_its_runs(synth_csv, tmp_path, caplog):
    # an empty config.yaml read as all the defaults passed for the run's own settings; as
    # a damaged one, it is warned of, the members are reused and a new one is written
    csv, out = synth_csv(n=1400), tmp_path / "r"
    assert main(synth_run_argv(csv, out)) == 0
    good = (out / "config.yaml").read_text(encoding="utf-8")
    (out / "config.yaml").write_text("", encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(synth_run_argv(csv, out)) == 0
    said = [r.getMessage() for r in caplog.records if "config.yaml" in r.getMessage()]
    assert said and said[0].startswith(f"{out}: its config.yaml cannot be read (the file is empty")
    assert "`tune` wrote" not in said[0]  # the run rewrites its own file
    assert reused_members(out) == 2
    assert (out / "config.yaml").read_text(encoding="utf-8") == good
    assert RunConfig.from_file(out / "config.yaml").seq_len == 96
