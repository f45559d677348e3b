"""Forecast the future with a finished run: its trained members and its router.

A run folder holds every member's trained model and their validation forecasts. The
forecast here needs nothing fitted again except the router, which is refitted on those
saved validation forecasts exactly as the run fitted it (checked: its validation weights
must equal the ones the run saved), so the forecast is the run's own ensemble applied to
the latest rows:

```
config.yaml, results.json           the run's settings, periods and data checksum
data (the run's file, or newer)     the last L + 5H - 1 rows, scaled with the run's scaler
members/<spec>/model                each member loaded, forecasting those windows
forecasts.npz val/*                 the router refitted on the run's validation forecasts
                  -> weights [H, C, M] of the last window -> ensemble [H, C] in the data's units
```

The rows before the last window are there for the router's skill features (each member's
error on the window's own recent past), as in the run.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble.errors import UserError, reason
from experiments import shell

log = logging.getLogger("hybrid_forecast.forecast")

# how far the router's weights, refitted here, may differ from those the run saved
_WEIGHT_TOL = 1e-4
# how far a loaded member's forecast of the last validation window may differ from the
# run's, as a share of the forecast's scale (at least 1: the data are standardised;
# another seed's DLinear was 0.144 off on ETTh1). A member on a language model is only
# warned of above _BACKBONE_TOL: a run on a GPU computed it in bfloat16, a CPU here in
# float32, and that gap is not measured yet (no GPU here), so no refusal may cost hours
_MEMBER_TOL = 1e-4
_BACKBONE_TOL = 5e-2


def _rerun(folder: Path) -> str:
    """The command that reruns the run in ``folder``, quoted for the user's shell; with
    --out, as config.yaml's ``out`` is where the run was made (a copied or moved folder)."""
    cfg = folder / "config.yaml"
    return shell.join(["hybrid-forecast", "run", "--config", cfg, "--out", folder])


@dataclass
class Forecast:
    """A run's forecast of the steps after the last row of the data.

    Attributes:
        frame: long table: ``date, channel, ensemble``, one column per member and one
            ``weight_<member>`` per member, in the data's units; a row's weights are
            those its step was combined with (the median and the stacked and
            inverse-error rules weigh each step apart), so the ensemble is the
            weighted sum of its members in every row.
        last: the timestamp of the last row the forecast starts after.
        data: the file whose rows were forecast from.
        weights: [C, M] the router's weights of this forecast, averaged over its steps
            (as ``router_weights.npz`` stores them).
        members: member names, in the order of ``weights``' last axis.
        run_last: the timestamp of the last row of the run's own data (a ``last`` before
            it is a backtest on the run's rows, not a forecast past them).
    """

    frame: pd.DataFrame
    last: pd.Timestamp
    data: Path
    weights: np.ndarray
    members: list[str]
    run_last: pd.Timestamp | None = None


def forecast_run(
    run_dir: str | Path,
    data_path: str | Path | None = None,
    run_data: str | Path | None = None,
    out: str | Path | None = None,
    fill: str | None = None,
    backbone: str | Path | None = None,
) -> Forecast:
    """Forecast the ``pred_len`` steps after the data's last row with a finished run.

    Args:
        run_dir: a finished run folder (``results.json`` and the members' models).
        data_path: a CSV with the run's columns (others are left out) and newer rows (the
            run's file updated, or only its recent rows); None: the run's own data file.
        run_data: the file the run was fitted on, where config.yaml no longer finds it
            (a run folder moved to another machine); checked against its checksum.
        out: also write the forecast there as CSV, while the run folder is locked (so a
            rerun cannot replace the models between forecast and file).
        fill: "ffill" to forward-fill NaN/inf in ``data_path``'s rows (the run's own
            ``fill`` applies to it in any case).
        backbone: the folder of the Time-LLM members' backbone where their saved path no
            longer finds it (a run moved to another machine); it must hold the files they
            were trained on (checked).

    Raises:
        UserError: not a finished run, a member without its saved model, the run's data
            file changed since or missing, a file without the run's columns or a long one,
            too few or irregular rows.
    """
    from ensemble import hybrid
    from ensemble.data import Windows, make_splits
    from ensemble.forecaster import predict_last
    from ensemble.io import read_lock, write_csv
    from experiments import registry
    from experiments.logfile import said_after_checks
    from experiments.member_cache import member_path
    from experiments.run import HOLDS_A_BACKBONE, member_context, release_memory, say_who_fitted
    from experiments.scoring import router_features
    from router.features import skill_context_rows

    if out is not None:  # before minutes of loading and forecasting, not after
        _check_writable(Path(out))
    folder = Path(run_dir)
    lock = read_lock(folder, "wait for it to finish")
    try:
        res = _finished_results(folder)
        cfg = _run_config(folder)
        _check_config_is_the_runs(cfg, res, folder)
        _check_members_are_the_runs(res, folder)
        if run_data is not None:
            cfg.dataset, cfg.data_path = res.get("dataset"), str(Path(run_data).resolve())
        with said_after_checks():  # a refused file: its error alone, not its warnings too
            dataset = _run_dataset(cfg, res, folder, run_data)
            splits = make_splits(dataset, cfg.seq_len, cfg.pred_len, percent=cfg.percent)
            _check_split_is_the_runs(dataset, splits, res, folder)
        specs = list(res["members"])
        periods = [int(p) for p in res["periods"]]
        ch = splits.eval_channels
        L, H = cfg.seq_len, cfg.pred_len
        for spec in specs:  # all there before any work
            if not (member_path(folder, spec) / "model").is_dir():
                raise UserError(
                    f"{spec} has no saved model in {member_path(folder, spec) / 'model'}; "
                    f"rerun the run to fit and save it "
                    f"({_rerun(folder)})"
                )

        # The rows to forecast from: checked before the router's refit and the members'
        # loading, so that a bad file is refused in seconds
        data = dataset
        with said_after_checks():
            if data_path is not None:
                data = _newer_data(data_path, cfg, fill, dataset)
                data = _check_same_series(data, dataset)
                _check_shared_rows(data, dataset)
            if out is not None and Path(out).resolve() in {
                Path(dataset.path).resolve(),
                Path(data.path).resolve(),
            }:
                raise UserError(f"--out {out} is a data file of this forecast; name another file")
            n = data.values.shape[0]
            if n < L:
                raise UserError(f"{data.path} has {n} rows; the run's lookback needs at least {L}")
            # the last window, and the earlier ones whose errors the router's skill
            # features score (windows t - H back to t - 5H + 1); a router without
            # features needs none
            wanted = skill_context_rows(L, H) if _reads_features(res, cfg) else L
            n_ctx = min(n, wanted)
            # a member whose filter scans the context (ARIMA) reads more rows, and counts
            # them for its seasonal terms: every row, then (built only: cheap)
            scans = any(
                getattr(
                    registry.build(s, member_context(s, cfg, splits, periods, folder, False)),
                    "scans_context",
                    False,
                )
                for s in specs
            )
            _check_steps(data, dataset, n if scans else n_ctx)

        val_stack = _saved_array(folder / "forecasts.npz", [f"val/{s}" for s in specs])
        combiner = _refit_router(
            folder, cfg, splits, specs, periods, val_stack, _chosen(res, cfg.router)
        )
        # each loaded member must forecast the run's last validation window as the run did;
        # a copy: a view would keep the whole [M, W, H, C] stack alive beside the members
        val_last = val_stack[:, -1].copy()
        del val_stack
        if combiner.needs_features != _reads_features(res, cfg):  # the rows checked above
            raise RuntimeError(f"{type(combiner).__name__}: needs_features is not its class's")
        if n < wanted:
            log.warning(
                "%s holds %d rows: the router's skill features score fewer past windows "
                "than in the run (it had %d rows before each window)",
                data.path,
                n,
                wanted,
            )
        # A member whose filter scans the context (ARIMA) starts it where the run started
        # it for the test windows, so that its state is the one the run scored a window
        # ending at the same row with; a file without that row: as many rows as the run's
        # last test window had.
        first_row = 0 if data is dataset else _first_row(data, dataset)
        at = splits.test.start - first_row  # that row in ``data``
        n_test = splits.test.windows().context.shape[0]
        n_scan = n - at if L <= n - at <= n else min(n, max(n_ctx, n_test))

        # the forecast's dates are written in the offset the file wrote its last row in
        zone = _written_zone(data)
        if zone is not None and day_or_longer(data.freq):
            log.warning(
                "%s: its dates' UTC offsets change (daylight saving time?) and those ahead "
                "are not known: the forecast's dates keep the last row's offset (%s)",
                Path(data.path).name,
                zone,
            )

        def last_rows(rows: int) -> Windows:
            context, dates = _context(data, rows, H, zone)
            return Windows(splits.scaler.transform(context), L, H, dates, first_row + n - rows)

        windows, scanned = last_rows(n_ctx), last_rows(n_scan)
        val_window, val_windows = _last_window(splits.val), splits.val.windows()
        fits = res.get("member_fits") or {}
        # a fix to a member since its fit is not in its model
        say_who_fitted(
            {s: f for s, f in fits.items() if s in specs and isinstance(f, dict)},
            folder / "members",
            "models loaded",
        )
        forecasts = []  # [W, H, C] of the evaluated channels, per member
        used: list[str] = []  # members --backbone was given to
        for i, spec in enumerate(specs):  # one at a time: two backbones need not fit at once
            mdir = member_path(folder, spec)
            built = registry.build(spec, member_context(spec, cfg, splits, periods, folder, False))
            member = _load(type(built), mdir, spec, folder, backbone, used)
            _check_member_is_the_runs(
                spec,
                predict_last(member, val_window, val_windows)[-1][..., ch],
                val_last[i],
                mdir,
                folder,
                registry.parse_spec(spec)[0] in HOLDS_A_BACKBONE,
            )
            forecasts.append(predict_last(member, windows, scanned)[..., ch])
            del member, built
            if registry.parse_spec(spec)[0] in HOLDS_A_BACKBONE:
                release_memory()
        if backbone is not None and not used:
            log.warning(
                "--backbone %s is not used: no member of this run ran on a backbone folder",
                backbone,
            )
        stack = np.stack(forecasts)  # [M, W, H, C]
        feats = None
        if combiner.needs_features:
            feats, _ = router_features(windows.x, stack, periods, specs, ch)
        combined = hybrid.combined_forecast(combiner, stack, feats)[-1]  # [H, C]
        weights = combiner.weights(stack, feats)[-1]  # [C, M]
        # the last window's own (a window's weights do not depend on the others')
        steps = combiner.step_weights(stack[:, -1:], None if feats is None else feats[-1:])[0]

        dates, last, run_last = windows.dates[-H:], data.dates[-1], dataset.dates[-1]
        if zone is not None:  # the members saw the UTC dates the run saw
            dates, last = dates.tz_convert(zone), last.tz_convert(zone)
            run_last = run_last.tz_convert(zone)
        fc = Forecast(
            frame=_frame(
                splits,
                [dataset.columns[c] for c in ch],
                dates,
                specs,
                combined,
                stack[:, -1],
                steps,
            ),
            last=last,
            data=Path(data.path),
            weights=weights,
            members=specs,
            run_last=run_last,
        )
        if out is not None:
            write_csv(out, fc.frame.to_csv(index=False))
        return fc
    finally:
        if lock is not None:
            lock.release()


def _check_writable(out: Path) -> None:
    """``--out`` must be a file that can be written, said before any work (a forecast
    of Time-LLMs takes minutes) rather than after it; nothing is created here."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name, e.g. {out / 'forecast.csv'}")
    if out.exists() and not out.is_file():  # /dev/stdout, a named pipe: written as it is
        return
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # written with its folders
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "a file, not a folder", str(folder))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(
            f"--out {out}: cannot write a file in {folder} ({exc.strerror or exc}); give "
            "another path"
        ) from None


def _newer_data(data_path: str | Path, cfg, fill: str | None, run):
    """``--data-path`` loaded as the run loaded its data (`ensemble.data.load_dataset`'s
    steps), but only its date column and ``run``'s columns are read and checked: any
    other column, text or numeric, is left out (said), as a run on features S leaves the
    others. Refused in this command's words where the loader's would send the user
    astray (its --data-dir, removing a column the forecast needs)."""
    # load_dataset checks every column of the file: a note beside the run's columns
    # would be refused, so the file is read as it reads one and the others dropped first
    from ensemble.data import dataset_from_table, read_table

    path = Path(data_path).expanduser()
    if not path.exists():
        raise UserError(
            f"--data-path {data_path} is not found; check the path (a CSV with the run's "
            "columns and newer rows)"
        )
    if not path.is_file():
        raise UserError(
            f"--data-path {data_path} is a folder; give a CSV file with the run's columns "
            "and newer rows"
        )
    df, date_col = read_table(path)
    wanted = list(run.columns)
    _refuse_long_layout(df, date_col, wanted, path)
    others = [str(c) for c in df.columns if c != date_col]
    missing = [c for c in wanted if c not in others]
    if missing:
        raise UserError(
            f"{path} has the columns {others}, not the run's {wanted} (no {missing[0]!r}); "
            "give the run's file with newer rows added"
        )
    extra = [c for c in df.columns if c != date_col and str(c) not in wanted]
    if extra:
        log.info(
            "%s: column(s) %s left out: not among the run's (%s)",
            path.name,
            ", ".join(map(str, extra)),
            ", ".join(wanted),
        )
        df = df.drop(columns=extra)
    try:
        return dataset_from_table(
            df,
            date_col,
            path,
            name=path.stem,
            split_rule=run.split_rule,
            features=cfg.features,
            target=run.target,
            fill=fill or cfg.fill,
        )
    except UserError as exc:
        text = str(exc)
        if "is not numeric" in text and text.endswith("remove the column or fix the value"):
            raise UserError(
                text.removesuffix("remove the column or fix the value")
                + "fix the value (the forecast needs each of the run's columns)"
            ) from None
        raise


def _refuse_long_layout(df: pd.DataFrame, date_col: str, wanted: list[str], path: Path) -> None:
    """Refuse a long file (a row per channel and date: ``unique_id, ds, y``, or an id
    column and one numeric column on repeating dates where the run's channels are
    absent): the forecast reads a wide one, and the long one's rows would be read as
    dates going backwards, or its columns as other channels.

    Raises:
        UserError: the long layout, with the pivot that makes it wide.
    """
    others = [c for c in df.columns if c != date_col]
    numeric = [c for c in others if pd.api.types.is_numeric_dtype(df[c])]
    text = [c for c in others if c not in numeric]
    absent = not set(wanted) <= {str(c) for c in others}
    repeats = bool(df[date_col].duplicated().any())
    if {"unique_id", "y"} <= set(others) and (absent or repeats):
        ids, value = "unique_id", "y"
    elif absent and repeats and len(text) == 1 and len(numeric) == 1:
        ids, value = text[0], numeric[0]
    else:
        return
    raise UserError(
        f"{path} is a long file ({date_col}, {ids}, {value}: a row per channel and date); "
        f"forecast reads a wide one, the date and a column per channel "
        f"({', '.join(wanted)}): pivot it, e.g. df.pivot(index={date_col!r}, "
        f"columns={ids!r}, values={value!r}).reset_index()"
    )


def _reads_features(res: dict[str, Any], cfg) -> bool:
    """Whether the router the run ended with reads the windows' skill features (and so
    the rows before the last window)."""
    from router import COMBINERS

    return bool(getattr(COMBINERS.get(_chosen(res, cfg.router)), "needs_features", True))


def _clock(data) -> pd.DatetimeIndex:
    """``data``'s dates on the clock their steps are counted on: as they are, except
    steps of a day or longer on dates with a zone, which are local days (23 or 25 hours
    at a daylight-saving change): those on the file's own wall clock, naive."""
    dates = data.dates
    if dates.tz is None or not day_or_longer(data.freq):
        return dates
    minutes = _written_minutes(data) if str(dates.tz) == "UTC" else None
    if minutes is not None and len(minutes) == len(dates):
        return dates.tz_convert(None) + pd.to_timedelta(minutes, unit="min")
    return dates.tz_localize(None)


def _first_off_step(dates: pd.DatetimeIndex, freq: str) -> tuple[int, str] | None:
    """The first of ``dates`` (after the first) that is not one step of ``freq`` after
    the one before it, and how: "repeat", "off" (off the step's grid) or "gap" (steps
    missing before it); None where every step is one. Calendars (business days,
    months...) as the loader reads them (`ensemble.csvfile.off_grid` and `find_gaps`)."""
    from ensemble.csvfile import find_gaps, off_grid

    found = []
    ns = dates.as_unit("ns").asi8
    repeat = np.flatnonzero(np.diff(ns) <= 0) + 1
    if len(repeat):
        found.append((int(repeat[0]), "repeat"))
    off = np.flatnonzero(off_grid(dates, freq)[1:]) + 1
    if len(off):
        found.append((int(off[0]), "off"))
    gap = find_gaps(dates, freq)
    if len(gap):
        found.append((int(gap[0]), "gap"))
    return min(found) if found else None


def _instants(dates: pd.DatetimeIndex) -> np.ndarray:
    """[T] int64 nanoseconds: UTC instants where the dates have a zone, else as written."""
    return (dates.tz_convert(None) if dates.tz is not None else dates).as_unit("ns").asi8


def _check_steps(data, origin, rows: int) -> None:
    """The last ``rows`` rows of ``data``, those the forecast reads (the lookback and the
    windows the router's skill features score), must be one step of the run's frequency
    apart: the members and the router read them as consecutive steps, so a missing, extra
    or off-step row would shift the lookback under the same forecast dates.

    The run's own rows (``data``'s rows at the run's times, `_check_shared_rows` found
    them the run's) are read as the run read them, gaps and all: the run scored its test
    windows over them as consecutive rows (and its loading warns of the gaps), so the
    forecast is the run's. Only steps into or between rows the run did not have are
    checked.

    Raises:
        UserError: the first row read that is not one step after the row before it.
    """
    freq, n = origin.freq, data.values.shape[0]
    if freq is None or rows < 2:
        return
    clock = _clock(data)

    t, t_run = _instants(data.dates), _instants(origin.dates)
    own = (t >= t_run[0]) & (t <= t_run[-1]) if data is not origin else np.ones(n, bool)
    later = np.arange(n - rows + 1, n)  # the second row of each step read
    checked = later[~(own[later] & own[later - 1])]
    # rows before the run's first and after its last: at most two runs of steps
    for part in np.split(checked, np.flatnonzero(np.diff(checked) > 1) + 1):
        if not len(part):
            continue
        lo = int(part[0]) - 1
        bad = _first_off_step(clock[lo : int(part[-1]) + 1], freq)
        if bad is None:
            continue
        row, how = lo + bad[0], bad[1]
        when, before = data.dates[row], data.dates[row - 1]
        fix = {
            "repeat": "drop the repeated row",
            "off": f"resample the file to the run's step ({freq})",
            "gap": "add the missing rows (with empty values, and pass --fill ffill to "
            "forward-fill them) or resample the file to the run's step",
        }[how]
        what = {
            "repeat": "repeats the row",
            "off": f"is not one step ({freq}) after the row before it ({before})",
            "gap": f"follows {before}: the steps between are missing",
        }[how]
        raise UserError(
            f"{data.path}: the row at {when} {what}; the forecast reads "
            f"{'its rows' if rows == n else f'its last {rows} rows'} as consecutive steps "
            f"of {freq}: {fix}"
        )


def _chosen(res: dict[str, Any], router: str) -> str:
    """The combiner the run's ``router`` ended as: the learned router's choice (its
    ``combiners`` table in results.json), else ``router`` itself."""
    chosen = [n for n, c in (res.get("combiners") or {}).items() if c.get("chosen")]
    return chosen[0] if router == "learned" and len(chosen) == 1 else router


def _refit_router(
    folder: Path,
    cfg,
    splits,
    specs: list[str],
    periods: list[int],
    val_stack: np.ndarray,
    router: str | None = None,
):
    """The run's router, refitted on the run's own validation forecasts (its weights are
    not saved as a model); refused where it no longer gives the run's weights.

    ``val_stack``: forecasts.npz's validation forecasts [M, W, H, C] of ``specs``.
    ``router``: what to refit (default ``cfg.router``). For a learned router its choice
    alone: the learned router ends by fitting what it chose on all validation windows,
    so its fold search (about 20 s on ETTh1) would only find the same one again.

    Raises:
        UserError: forecasts.npz of another shape than the run's windows, or weights
            that differ from router_weights.npz's by more than ``_WEIGHT_TOL``.
    """
    from experiments.scoring import router_features
    from router import make_combiner

    ch, H = splits.eval_channels, cfg.pred_len
    run_val_weights = _saved_array(folder / "router_weights.npz", ["val"])[0]
    expect = (len(specs), splits.val.n_windows, H, len(ch))
    if val_stack.shape != expect:
        raise UserError(
            f"{folder / 'forecasts.npz'} holds validation forecasts of shape "
            f"{val_stack.shape[1:]}, not this run's {expect[1:]}; rerun the run to write "
            "it again"
        )
    val_true = splits.val.targets()[..., ch]
    combiner = make_combiner(router or cfg.router, seed=cfg.seed, member_names=specs)
    feats = None
    if combiner.needs_features:
        feats, names = router_features(splits.val.inputs(), val_stack, periods, specs, ch)
        combiner.feature_names = names
    combiner.fit(val_stack, val_true, feats)
    gap = float(np.max(np.abs(combiner.weights(val_stack, feats) - run_val_weights)))
    if gap > _WEIGHT_TOL:
        raise UserError(
            f"the router refitted on {folder}'s validation forecasts gives other weights "
            f"than the run's (by up to {gap:.3g}): the packages or hybrid-forecast's code "
            "changed since the run? (results.json's environment says what it ran with) "
            f"rerun it ({_rerun(folder)})"
        )
    return combiner


def _frame(
    splits,
    channels: list[str],
    dates: pd.DatetimeIndex,
    specs: list[str],
    combined: np.ndarray,
    members: np.ndarray,
    weights: np.ndarray,
) -> pd.DataFrame:
    """The forecast as a long table in the data's units: one row per (date, channel) with
    the ensemble, each member and each member's weight.

    Args:
        dates: [H] the forecast's timestamps; combined: [H, C] scaled; members: [M, H, C]
            scaled; weights: [H, C, M] of each step.
    """
    ch = splits.eval_channels
    H = len(dates)

    def raw(x: np.ndarray) -> np.ndarray:  # [H, C] scaled -> the data's units
        return splits.scaler.inverse_transform(x, ch)

    columns: dict[str, Any] = {
        "date": np.repeat(dates, len(channels)),
        "channel": np.tile(channels, H),
        "ensemble": raw(combined).ravel(),
    }
    for i, spec in enumerate(specs):
        columns[spec] = raw(members[i]).ravel()
    for i, spec in enumerate(specs):
        columns[f"weight_{spec}"] = weights[..., i].ravel()  # [H, C] row-major, as the rows
    return pd.DataFrame(columns)


def _run_dataset(cfg, res: dict[str, Any], folder: Path, run_data: str | None = None):
    """The data the run was fitted on, as it was (its checksum in results.json)."""
    if run_data is not None:  # said in this command's words, not run's --dataset/--data-path
        from ensemble.data import registered_stems

        named = registered_stems().get(Path(run_data).stem.lower())
        what = None
        if not Path(run_data).expanduser().is_file():
            what = "is not found"
        elif named and named != res.get("dataset"):
            what = f"is {named}'s file"
        if what:
            raise UserError(
                f"--run-data {run_data} {what}; give the file the run in {folder} was "
                f"fitted on ({res.get('dataset') or 'its data'})"
            )
    try:
        dataset = cfg.load_dataset()
    except UserError as exc:
        if "not found" not in str(exc):
            raise
        raise UserError(
            f"the data file the run in {folder} was fitted on is not found "
            f"({cfg.data_path or cfg.dataset}); the scaler and the router come from it: "
            "give it with --run-data FILE"
        ) from None
    saved = res.get("data", {}).get("sha256")
    if not saved:
        log.warning(
            "%s records no checksum of the run's data (data.sha256): %s is not checked to "
            "be the file the run was fitted on",
            folder / "results.json",
            dataset.path,
        )
    elif dataset.sha256 != saved:
        raise UserError(
            f"{dataset.path} is not the file the run in {folder} was fitted on (its checksum "
            "differs; the scaler and the router came from that file): "
            + (
                "give --run-data the run's own file, as it was, and the newer rows with --data-path"
                if run_data is not None
                else "put the run's file back, or give it with --run-data, and the newer "
                "rows with --data-path"
            )
        )
    return dataset


def _load(
    cls,
    member_dir: Path,
    spec: str,
    folder: Path,
    backbone: str | Path | None = None,
    used: list[str] | None = None,
):
    """A member saved under ``member_dir/model``. A Time-LLM keeps its partial forecasts
    in this folder (not the one it was trained in), takes the best device here, and
    ``backbone`` for a local backbone folder, if given (and then noted in ``used``).

    Raises:
        UserError: the saved model cannot be read (a file cut short, overwritten, or
            written by another version); a rerun fits it again once the folder is gone.
    """
    import inspect

    used = [] if used is None else used
    model = member_dir / "model"
    takes = inspect.signature(cls.load).parameters
    try:
        if any(p.kind is p.VAR_KEYWORD for p in takes.values()):
            from timellm.member import backbone_override

            moved = backbone_override(model, backbone, spec)
            used.extend(moved.values())
            return cls.load(model, workdir=str(member_dir), device=None, progress=None, **moved)
        return cls.load(model)
    except (UserError, MemoryError, ImportError, PermissionError):
        raise  # not the files' fault: refitting would not help
    except Exception as exc:  # whatever a damaged file raises: pickle, zip, JSON, torch...
        if "OutOfMemory" in type(exc).__name__:  # torch.cuda.OutOfMemoryError
            raise
        raise UserError(
            f"cannot load {spec}'s saved model in {model} ({reason(exc)}); "
            f"delete that folder and rerun the run to fit it again "
            f"({_rerun(folder)})"
        ) from None


def _check_split_is_the_runs(dataset, splits, res: dict[str, Any], folder: Path) -> None:
    """The channels and window counts of config.yaml's data must be the run's: an edited
    target (features S/MS) or percent would otherwise forecast other channels or rows."""
    for what, now, then in (
        ("channels", [dataset.columns[c] for c in splits.eval_channels], res.get("channels")),
        ("windows", splits.window_counts(), res.get("windows")),
    ):
        if then is not None and now != then:
            raise UserError(
                f"{folder / 'config.yaml'} gives {what} {now} but the run in {folder} had "
                f"{then} (results.json); config.yaml was edited after the run (target, "
                "features or percent?): put it back, or rerun the run with it"
            )


def _saved_array(path: Path, keys: list[str]) -> np.ndarray:
    """``np.stack`` of the entries ``keys`` of a run's npz file, or a UserError saying the
    file is damaged (cut short, overwritten, or missing an entry)."""
    try:
        with np.load(path) as z:
            return np.stack([z[k] for k in keys])  # in the saved dtype (float32)
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, pickled data, a missing key...
        raise UserError(
            f"{path} is damaged ({reason(exc)}); rerun the run to write it again"
        ) from None


def _check_members_are_the_runs(res: dict[str, Any], folder: Path) -> None:
    """results.json's members must be forecasts.npz's, in its order: the router's weights
    are per member in that order, and an edited list would otherwise be refused later as
    a changed router ("the packages or the code changed?")."""
    path = folder / "forecasts.npz"
    try:
        with np.load(path) as z:
            saved = [k[4:] for k in z.files if k.startswith("val/") and k != "val/ensemble"]
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, pickled data...
        raise UserError(
            f"{path} is damaged ({reason(exc)}); rerun the run to write it again"
        ) from None
    if saved != res["members"]:
        how = "in another order" if sorted(saved) == sorted(res["members"]) else "other members"
        raise UserError(
            f"{folder / 'results.json'} lists the members {res['members']} but the run's "
            f"forecasts.npz holds {saved} ({how}): results.json was edited after the run; "
            f"put it back, or rerun the run ({_rerun(folder)})"
        )


def _last_window(split) -> Any:
    """The last window of ``split`` alone (its inputs, dates and row), as the run's
    forecast of ``split.windows()`` saw it."""
    from ensemble.data import Windows

    L, H = split.seq_len, split.pred_len
    t = split.data.shape[0] - H  # the rows that are some window's input
    return Windows(split.data[t - L : t], L, H, split.dates[t - L :], split.start + t - L)


def _check_member_is_the_runs(
    spec: str,
    got: np.ndarray,
    saved: np.ndarray,
    member_dir: Path,
    folder: Path,
    on_backbone: bool = False,
) -> None:
    """A loaded member must forecast the run's last validation window as the run did
    (forecasts.npz): a model folder copied from another run (another seed, other data) or
    fitted again since would otherwise forecast without a word.

    Args:
        got, saved: [H, C] that window's forecast now and in the run (scaled).
        on_backbone: a member on a language model: warned of above ``_BACKBONE_TOL``
            (another precision may explain a gap), not refused.
    """
    gap = float(np.max(np.abs(got - saved)))
    scale = max(1.0, float(np.max(np.abs(saved))))
    tol = _BACKBONE_TOL if on_backbone else _MEMBER_TOL
    if gap <= tol * scale:
        return
    text = (
        f"{spec}'s saved model in {member_dir} {'may not be' if on_backbone else 'is not'} "
        "the one behind the run's forecasts (its forecast of the last validation window "
        f"differs from forecasts.npz's by up to {gap:.3g})"
    )
    rerun = _rerun(folder)
    if on_backbone and np.isfinite(gap):
        log.warning(
            "%s; a run in another precision (bf16 on a GPU) differs a little, another "
            "fit by tenths: if the folder was copied from another run, delete it and "
            "rerun (%s)",
            text,
            rerun,
        )
        return
    raise UserError(f"{text}: delete that folder and rerun the run to fit it again ({rerun})")


def _run_config(folder: Path) -> Any:
    """The run folder's RunConfig; unreadable, the fix is the run's, not a --config's."""
    from experiments.config import RunConfig, without_config_fix

    try:
        return RunConfig.from_file(folder / "config.yaml")
    except UserError as exc:
        raise UserError(
            f"{without_config_fix(str(exc))}; put the run's config.yaml back, or rerun the "
            "run (its members are reused)"
        ) from None


def _check_config_is_the_runs(cfg, res: dict[str, Any], folder: Path) -> None:
    """config.yaml must still say what the run was made with (results.json): the members
    are rebuilt from it, and a model saved for L=96 cannot take 48 rows."""
    for key in ("seq_len", "pred_len", "seed", "router", "features"):
        if key in res and getattr(cfg, key) != res[key]:
            raise UserError(
                f"{folder / 'config.yaml'} says {key}: {getattr(cfg, key)!r} but the run in "
                f"{folder} was made with {res[key]!r} (results.json); config.yaml was edited "
                "after the run: put it back, or rerun the run with it"
            )


def _finished_results(out: Path) -> dict[str, Any]:
    """The run's results.json, or a UserError saying what the folder lacks."""
    if not out.is_dir():
        raise UserError(f"{out} is not a folder: give a run folder (hybrid-forecast run --out)")
    path = out / "results.json"
    missing = [p.name for p in (path, out / "config.yaml") if not p.is_file()]
    if len(missing) == 2:  # no run began here: a parent such as runs/, or a typo
        runs = sorted(p.parent.name for p in out.glob("*/config.yaml"))
        hint = f", e.g. {out / runs[0]} ({len(runs)} run folders here)" if runs else ""
        raise UserError(
            f"{out} is not a run folder (no results.json or config.yaml): give the folder "
            f"a run wrote (hybrid-forecast run --out){hint}"
        )
    if missing:
        raise UserError(
            f"{out} is not a finished run folder (no {' or '.join(missing)}); finish "
            "the run first (rerun its command: finished members are reused)"
        )
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
        members, periods = res["members"], res["periods"]
        # a string would pass as a list of one-letter members
        if not isinstance(members, list) or not members:
            raise ValueError("members")
        if not all(isinstance(m, str) for m in members):
            raise ValueError("members")
        if not isinstance(periods, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in periods
        ):
            raise ValueError("periods")
        for key in ("data", "combiners", "member_fits"):  # read as tables where present
            if key in res and not isinstance(res[key], dict):
                raise ValueError(key)
        if not all(isinstance(c, dict) for c in res.get("combiners", {}).values()):
            raise ValueError("combiners")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path} is damaged; rerun the run to write it again") from None
    for name in ("forecasts.npz", "router_weights.npz"):
        if not (out / name).is_file():
            raise UserError(f"{out} lacks {name}; rerun the run to write it again")
    return res


def _check_same_series(new, old):
    """The newer file must hold the run's channels at its frequency: ``new`` with its
    columns in the run's order (the names match one to one: put in order by name, and
    said), else refused."""
    import dataclasses

    if list(new.columns) != list(old.columns) and (
        len(set(new.columns)) == len(new.columns) == len(old.columns)
        and set(new.columns) == set(old.columns)
    ):
        log.warning(
            "%s: its columns are the run's in another order; read by name in the run's order (%s)",
            Path(new.path).name,
            ", ".join(old.columns),
        )
        order = [list(new.columns).index(c) for c in old.columns]
        new = dataclasses.replace(new, values=new.values[:, order], columns=list(old.columns))
    if list(new.columns) != list(old.columns):
        raise UserError(
            f"{new.path} has the columns {list(new.columns)}, not the run's "
            f"{list(old.columns)}; give the run's file with newer rows added"
        )
    if new.freq != old.freq:
        raise UserError(
            f"{new.path} is sampled every {new.freq!r}, the run's data every {old.freq!r}; "
            "resample it to the run's step"
        )
    return new


def _check_shared_rows(new, old) -> None:
    """The rows of a newer file at times the run's data holds must be the run's: the
    scaler, the members and the router were fitted on those (another site's file, or an
    edited one, would otherwise be forecast from without a word). Equal to 1e-4 of the
    column's spread, so a copy re-saved with fewer digits still passes."""
    if (new.dates.tz is None) != (old.dates.tz is None):
        if old.dates.tz is None:
            what = "with a UTC offset and the run's file without; write them without"
        else:
            what = "without a UTC offset and the run's file with one; write them with"
        raise UserError(
            f"{new.path} gives its dates {what} it, as the run's file does (the same "
            "times on the same clock)"
        )

    t_new, t_old = (
        _instants(new.dates),
        _instants(old.dates),
    )  # each sorted (a backward step is refused)
    # A repeated, extra or missing row after the run's data would shift the lookback by a
    # row under the same forecast dates; after it, that is all that can go wrong.
    after = t_new[t_new > t_old[-1]]
    repeated = np.flatnonzero(np.diff(after) == 0)
    if len(repeated):
        when = new.dates[len(t_new) - len(after) + int(repeated[0])]
        raise UserError(
            f"{new.path} repeats the row at {when} (past the run's data); drop the repeated "
            "rows: each is a step of the forecast's lookback"
        )
    lo, hi = max(t_new[0], t_old[0]), min(t_new[-1], t_old[-1])
    i_new = np.flatnonzero((t_new >= lo) & (t_new <= hi))
    i_old = np.flatnonzero((t_old >= lo) & (t_old <= hi))
    if lo > hi or not len(i_new):
        return  # only rows after the run's: nothing to compare
    # Within the span both cover, row for row the same times: np.intersect1d matched a
    # time once, so an edited second copy of a row went unchecked.
    k = min(len(i_new), len(i_old))
    bad = np.flatnonzero(t_new[i_new[:k]] != t_old[i_old[:k]])
    if len(bad) or len(i_new) != len(i_old):
        k = int(bad[0]) if len(bad) else k  # the first row where they part
        tn = t_new[i_new[k]] if k < len(i_new) else None
        to = t_old[i_old[k]] if k < len(i_old) else None
        if tn is not None and k > 0 and tn == t_new[i_new[k - 1]]:
            what = f"repeats the row at {new.dates[i_new[k]]}, which the run's data holds once"
        elif to is not None and (tn is None or tn > to):
            what = f"lacks the run's row at {old.dates[i_old[k]]}"
        else:
            what = f"has a row at {new.dates[i_new[k]]} that the run's data does not"
        raise UserError(
            f"{new.path} {what}: --data-path must be the run's file with newer rows added "
            "(its dates written as the run's file writes them)"
        )
    a, b = new.values[i_new], old.values[i_old]
    spread = np.nanstd(old.values, axis=0) + np.abs(b)
    off = np.argwhere(~(np.abs(a - b) <= 1e-4 * spread))
    if len(off):
        r, c = (int(v) for v in off[0])
        raise UserError(
            f"{new.path} differs from the run's data at {new.dates[i_new[r]]} "
            f"({new.columns[c]}: {a[r, c]:g}, the run's file {b[r, c]:g}; {len(off)} value(s) "
            "differ): --data-path must be the run's file with newer rows added"
        )


def _steps(a: pd.Timestamp, b: pd.Timestamp, offset) -> int:
    """Steps of ``offset`` from ``a`` to ``b`` (negative when ``b`` is earlier)."""
    if b < a:
        return -_steps(b, a, offset)
    return len(pd.date_range(a, b, freq=offset)) - 1


def _first_row(data, origin) -> int:
    """The row number the run's data gives ``data``'s first row: its own where the run's
    data holds that time, else counted in steps from the nearest earlier row (or back from
    the first). ARIMA's seasonal terms are functions of it, as in the run; rows within
    a file are counted as rows, as the run counted them."""
    from pandas.tseries.frequencies import to_offset

    first, dates = data.dates[0], origin.dates
    k = int(dates.searchsorted(first, side="right")) - 1  # the last row at or before it
    if k < 0:
        return -_steps(first, dates[0], to_offset(origin.freq or data.freq))
    return k + _steps(dates[k], first, to_offset(origin.freq or data.freq))


def _context(
    data, rows: int, H: int, zone: datetime.tzinfo | None = None
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """The last ``rows`` rows of ``data``, and the dates of those rows and of the H steps
    after them.

    Args:
        zone: the offset the file wrote its last row in, where ``data``'s dates are UTC
            (`_written_zone`): the steps continue that row's clock (a day after midnight
            is midnight there, not in UTC) and are returned in UTC, as the run's dates.
    """
    from pandas.tseries.frequencies import to_offset

    if data.freq is None:
        raise UserError(
            f"{data.path}: the dates have no regular step, so the steps to forecast are "
            "not defined; resample the file to the run's step"
        )
    offset = to_offset(data.freq)
    n = data.values.shape[0]
    last = data.dates[-1] if zone is None else data.dates[-1].tz_convert(zone)
    future = pd.date_range(last + offset, periods=H, freq=offset)
    if zone is not None:
        future = future.tz_convert(data.dates.tz)
    return data.values[n - rows :], data.dates[n - rows :].append(future)


# A UTC offset ending a written timestamp ("2019-04-01 00:00:00+02:00", "...T00:00Z"),
# after a time of day so that the "-01" ending a date is never read as one.
_OFFSET = re.compile(r"\d:\d\d(?::\d\d(?:\.\d*)?)?\s*(Z|[+-]\d\d:?\d\d)$")


def written_offsets(col: pd.Series) -> np.ndarray | None:
    """[T] each timestamp's UTC offset in minutes as ``col`` writes it (text, or Python
    datetimes); None where a value has none, or the column has one zone of its own.

    Offsets that change (``+01:00`` then ``+02:00`` across daylight saving time) are
    parsed as one UTC timeline (`ensemble.csvfile.parse_dates`); these are what the
    file said, to write its dates back in.
    """
    if len(col) == 0 or pd.api.types.is_datetime64_any_dtype(col):
        return None
    values = col.to_numpy()
    if isinstance(values[0], datetime.datetime):  # an object column of datetimes
        offsets = [v.utcoffset() if isinstance(v, datetime.datetime) else None for v in values]
        if any(o is None for o in offsets):
            return None
        return np.array([o // datetime.timedelta(minutes=1) for o in offsets], dtype=np.int64)
    found = col.astype(str).str.strip().str.extract(_OFFSET)[0]
    if found.isna().any():
        return None
    digits = found.where(found != "Z", "+0000").str.replace(":", "", regex=False)
    sign = np.where(digits.str[0] == "-", -1, 1)
    minutes = digits.str[1:3].astype(int) * 60 + digits.str[3:5].astype(int)
    return (sign * minutes.to_numpy()).astype(np.int64)


def offset_zone(minutes: int) -> datetime.timezone:
    """The fixed offset of ``minutes`` east of UTC."""
    return datetime.timezone(datetime.timedelta(minutes=int(minutes)))


def _written_zone(data) -> datetime.timezone | None:
    """The offset ``data``'s file wrote its last row in, where the file's offsets change
    (read as UTC: the file's own are lost); None where its dates keep their own zone."""
    if data.dates.tz is None or str(data.dates.tz) != "UTC":
        return None
    minutes = _written_minutes(data)
    if minutes is None or len(np.unique(minutes)) < 2:
        return None
    return offset_zone(minutes[-1])


def _written_minutes(data) -> np.ndarray | None:
    """[T] the UTC offset, in minutes, ``data``'s file wrote each row's date in
    (`written_offsets`); None where it wrote none."""
    from ensemble.csvfile import find_date_column, join_time_of_day, read_csv

    path = Path(data.path)
    df = read_csv(path)
    column = find_date_column(df, path)
    return written_offsets(join_time_of_day(df, column, path)[column])


def day_or_longer(freq: str | None) -> bool:
    """Whether a step of ``freq`` is a day or longer: its dates are local days, whose
    offset a daylight-saving change moves."""
    from pandas.tseries.frequencies import to_offset

    if freq is None:
        return False
    try:
        return pd.Timedelta(to_offset(freq)) >= pd.Timedelta("1D")
    except ValueError:  # calendar offsets (B, W-MON, MS...): days or longer
        return True
