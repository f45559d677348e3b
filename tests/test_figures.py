"""ensemble.figures: the font fallback, the extra formats, the atomic save."""

from __future__ import annotations

import warnings

import matplotlib
import pytest

from ensemble import figures
from ensemble.errors import UserError
from experiments.cli import main


@pytest.fixture
def plt(monkeypatch):
    """pyplot with the caller's rcParams restored afterwards."""
    with matplotlib.rc_context():
        yield figures.pyplot()


def test_installed_fallback_fonts_draw_the_glyphs_dejavu_lacks(monkeypatch, tmp_path, caplog):
    # STIXGeneral stands in for a CJK font (none is installed here): it has U+210A,
    # which DejaVu Sans lacks, as DejaVu Sans lacks 油温
    monkeypatch.setattr(figures, "CJK_FONTS", ("No Such Font", "STIXGeneral"))
    assert figures.cjk_fonts() == ["STIXGeneral"]
    plt = figures.pyplot()
    before = list(plt.rcParams["font.family"])
    fig, ax = plt.subplots()
    ax.set_title("channel \u210a")
    ax.legend(handles=ax.plot([0, 1], label="\u210a"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures.save(fig, tmp_path / "f.png")
    assert not [w for w in caught if "missing from" in str(w.message)]
    assert not [r for r in caplog.records if "drawn as boxes" in r.getMessage()]
    assert list(plt.rcParams["font.family"]) == before  # the user's settings untouched


def test_a_backend_already_chosen_is_kept():
    import matplotlib

    plt = figures.pyplot()
    backend = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        figures.pyplot()
        assert matplotlib.get_backend().lower() == "svg"
    finally:
        plt.switch_backend(backend)


def test_extra_formats_are_written_beside_the_png_and_the_figure_closed(plt, tmp_path, monkeypatch):
    monkeypatch.setenv(figures.FIGURES_ENV, " PDF, .svg,png,pdf")
    assert figures.extra_formats() == ["pdf", "svg"]
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = figures.save(fig, tmp_path / "f.png", dpi=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "f.svg"]
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert fig.number not in plt.get_fignums()  # closed (another test's may be open)
    monkeypatch.delenv(figures.FIGURES_ENV)
    fig, _ = plt.subplots()
    figures.save(fig, tmp_path / "g.pdf")  # the suffix's own format, nothing beside it
    assert sorted(p.name for p in tmp_path.glob("g.*")) == ["g.pdf"]


def test_saving_again_without_a_format_removes_only_the_copies_save_wrote(
    plt, tmp_path, monkeypatch
):
    import os

    monkeypatch.setenv(figures.FIGURES_ENV, "pdf,svg")
    fig, _ = plt.subplots()
    figures.save(fig, tmp_path / "f.png")
    own = tmp_path / "f.eps"  # the user's, written long before
    own.write_text("mine", encoding="utf-8")
    os.utime(own, (1e9, 1e9))
    monkeypatch.setenv(figures.FIGURES_ENV, "svg")
    fig, _ = plt.subplots()
    figures.save(fig, tmp_path / "f.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.eps", "f.png", "f.svg"]
    monkeypatch.delenv(figures.FIGURES_ENV)
    fig, _ = plt.subplots()
    figures.save(fig, tmp_path / "f.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.eps", "f.png"]
    assert own.read_text(encoding="utf-8") == "mine"


def test_a_bad_format_is_refused_before_any_work(synth_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(figures.FIGURES_ENV, "pdf,jpg")
    with pytest.raises(UserError, match="'jpg' is not a figure format"):
        figures.extra_formats()
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv()), "--seq-len", "32", "--pred-len", "8"]
    assert main([*argv, "--members", "naive", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HYBRID_FORECAST_FIGURES='pdf,jpg'" in err
    assert not out.exists()


def test_run_from_python_refuses_a_bad_format_before_touching_the_folder(
    synth_csv, tmp_path, monkeypatch
):
    from experiments.config import RunConfig
    from experiments.run import run

    out = tmp_path / "r"
    cfg = dict(dataset=None, data_path=str(synth_csv()), seq_len=32, pred_len=8)
    run(RunConfig(**cfg, members=["naive"], out=str(out)), progress=False)
    before = (out / "results.json").read_text(encoding="utf-8")
    monkeypatch.setenv(figures.FIGURES_ENV, "jpg")
    with pytest.raises(UserError, match="'jpg' is not a figure format"):
        run(RunConfig(**cfg, members=["snaive"], out=str(out)), progress=False)
    assert (out / "results.json").read_text(encoding="utf-8") == before


def test_a_rerun_removes_the_old_runs_extra_formats(synth_csv, tmp_path, monkeypatch):
    out = tmp_path / "r"
    argv = ["run", "--data-path", str(synth_csv()), "--seq-len", "32", "--pred-len", "8"]
    argv += ["--members", "naive,dlinear@epochs=2", "--out", str(out), "--quiet"]
    monkeypatch.setenv(figures.FIGURES_ENV, "pdf")
    assert main(argv) == 0
    assert (out / "training.pdf").is_file() and (out / "test_windows.pdf").is_file()
    monkeypatch.delenv(figures.FIGURES_ENV)
    assert main(argv) == 0
    assert not list(out.glob("*.pdf")) and (out / "training.png").is_file()


def test_characters_no_font_has_are_one_log_line_not_a_warning_each(plt, tmp_path, caplog):
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    if set(figures.CJK_FONTS) & installed:
        pytest.skip("a CJK font is installed here: nothing is missing")
    fig, ax = plt.subplots()
    ax.set_title("test window 3 (油温, scaled)")
    ax.set_xlabel("温")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures.save(fig, tmp_path / "f.png")
    assert not [w for w in caught if "missing from" in str(w.message)]
    said = [r.getMessage() for r in caplog.records if "drawn as boxes" in r.getMessage()]
    assert said == [
        "f.png: no installed font has 2 of its characters (油, 温), drawn as boxes; install a "
        "CJK font such as Noto Sans CJK SC or SimHei"
    ]


def test_the_missing_glyph_warning_of_every_matplotlib_version_is_recognised():
    # matplotlib 3.9 on says "missing from font(s) X", 3.7 and 3.8 "missing from current font"
    new = "Glyph 27833 (\\N{CJK UNIFIED IDEOGRAPH-6CB9}) missing from font(s) DejaVu Sans."
    old = "Glyph 27833 (\\N{CJK UNIFIED IDEOGRAPH-6CB9}) missing from current font."
    assert figures._MISSING_GLYPH.search(new) and figures._MISSING_GLYPH.search(old)
    assert not figures._MISSING_GLYPH.search("Matplotlib is building the font cache")
