"""Every figure the project writes goes through here: one matplotlib set-up, one save.

* The backend is Agg (files only: runs go on without a display), unless pyplot was
  already in use (a notebook keeps its own).
* Installed CJK fonts (Microsoft YaHei, SimHei, PingFang, Noto/Source Han Sans...) are
  appended to the font families of the figure being saved, so a channel named 油温 is
  drawn, not as empty boxes: matplotlib (>= 3.6) falls back glyph by glyph along that
  list, and Latin text keeps DejaVu Sans. Nothing global changes: a user's rcParams
  stay theirs.
* ``save`` writes the PNG atomically (a run folder never holds half a figure) and, for
  a thesis, the same figure in each format named by ``$HYBRID_FORECAST_FIGURES`` (e.g.
  ``pdf`` or ``pdf,svg``) beside it; saving again without a format removes the copy the
  earlier save wrote, so a folder never holds a PDF older than its PNG.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("hybrid_forecast.figures")
_MISSING_GLYPH = re.compile(r"^Glyph \d+ .*missing from (current )?font")
FIGURES_ENV = "HYBRID_FORECAST_FIGURES"
VECTOR_FORMATS = ("pdf", "svg", "eps", "ps")
# Fonts with the Chinese glyphs, by platform: Windows, macOS, Linux.
CJK_FONTS = (
    "Microsoft YaHei",
    "SimHei",
    "DengXian",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Arial Unicode MS",
)


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, on the Agg backend unless pyplot was imported before."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cjk_fonts() -> list[str]:
    """The installed fonts of ``CJK_FONTS``, in its order."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in CJK_FONTS if f in installed]


def _with_fallbacks(family: list[str], fallbacks: list[str]) -> list[str]:
    return list(family) + [f for f in fallbacks if f not in family]


def extra_formats() -> list[str]:
    """The formats ``$HYBRID_FORECAST_FIGURES`` asks for besides PNG.

    Raises:
        UserError: a format matplotlib cannot write.
    """
    from ensemble.errors import UserError

    wanted = [f.strip().lower().lstrip(".") for f in os.environ.get(FIGURES_ENV, "").split(",")]
    wanted = [f for f in dict.fromkeys(wanted) if f and f != "png"]
    bad = [f for f in wanted if f not in VECTOR_FORMATS]
    if bad:
        raise UserError(
            f"${FIGURES_ENV}={os.environ[FIGURES_ENV]!r}: {bad[0]!r} is not a figure format "
            f"here; use a comma-separated list of {', '.join(VECTOR_FORMATS)} (PNG is always written)"
        )
    return wanted


def _stale_copies(path: Path, keep: list[str]) -> list[Path]:
    """The copies an earlier ``save`` of ``path`` wrote in formats no longer asked for.

    A copy counts as ours only when it was written within a minute of ``path``'s current
    version (``save`` writes them together), so a user's own ``plot.pdf`` beside
    ``plot.png`` is left alone.
    """
    try:
        written = path.stat().st_mtime
    except OSError:
        return []
    found = []
    for fmt in VECTOR_FORMATS:
        copy = path.with_suffix(f".{fmt}")
        if fmt in keep or copy == path:
            continue
        try:
            if abs(copy.stat().st_mtime - written) <= 60:
                found.append(copy)
        except OSError:
            continue
    return found


def save(fig: Any, path: str | os.PathLike, dpi: int = 100, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` and beside it in each extra format, then close it.

    Args:
        fig: a matplotlib Figure.
        path: the file to write, in the format of its suffix (PNG without one); extra
            formats take its name with their suffix.
        dpi: the resolution of raster formats (vector formats have none).
        tight: apply ``tight_layout`` first.

    Returns:
        ``path``.
    """
    import matplotlib
    from matplotlib.text import Text

    from ensemble.io import _atomic

    plt = pyplot()
    path = Path(path)
    try:
        formats = extra_formats()
        # font.family, not font.sans-serif: a generic family resolves to one font, while
        # each name of a family list is a fallback for the glyphs the ones before it lack.
        # The figure's texts took their family when made; tick labels take it when drawn.
        fallbacks = cjk_fonts()
        for text in fig.findobj(Text):
            text.set_fontfamily(_with_fallbacks(text.get_fontfamily(), fallbacks))
        family = _with_fallbacks(matplotlib.rcParams["font.family"], fallbacks)
        with (
            warnings.catch_warnings(record=True) as caught,
            plt.rc_context({"font.family": family}),
        ):
            warnings.simplefilter("always")
            if tight:
                fig.tight_layout()
            own = path.suffix.lstrip(".").lower() or "png"
            stale = _stale_copies(path, [own, *formats])
            _atomic(path, lambda fh: fig.savefig(fh, format=own, dpi=dpi))
            for old in stale:
                old.unlink(missing_ok=True)
            for fmt in (f for f in formats if f != own):
                _atomic(path.with_suffix(f".{fmt}"), lambda fh, f=fmt: fig.savefig(fh, format=f))
    finally:
        plt.close(fig)
    # "missing from font(s)" since matplotlib 3.9, "missing from current font." before
    missing = {str(w.message) for w in caught if _MISSING_GLYPH.search(str(w.message))}
    for w in caught:  # the others as they came
        if str(w.message) not in missing:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:  # one line, not one warning per glyph and draw
        codes = (m.split()[1] for m in missing if m.startswith("Glyph "))
        glyphs = sorted({chr(int(c)) for c in codes if c.isdigit()})
        log.warning(
            "%s: no installed font has %d of its characters (%s), drawn as boxes; install a "
            "CJK font such as Noto Sans CJK SC or SimHei",
            path.name,
            len(glyphs),
            ", ".join(glyphs[:3]) + (", ..." if len(glyphs) > 3 else ""),
        )
    return path
