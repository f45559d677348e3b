"""``HybridForecaster``: the hybrid ensemble behind a statsforecast-shaped Python API.

    >>> from experiments.api import HybridForecaster
    >>> hf = HybridForecaster(members=["dlinear", "arima"], router="learned",
    ...                       seq_len=512, pred_len=96)
    >>> hf.fit(df)                 # long (unique_id, ds, y) or wide (ds + one column per series)
    >>> fc = hf.predict(h=96)      # same layout: unique_id, ds, hybrid, <member columns>

What ``fit`` does, in the run's protocol: the last ``val_size`` share of the rows is held
out as validation; the scaler and the members are fitted on the rows before it (the
validation rows serve members only for early stopping); the router is fitted on the
members' validation forecasts. ``predict`` forecasts the ``h`` steps after the last row,
weighting the members per series with the router. Members are not refitted on the
validation rows (their forecasts there are what the router learned to weigh).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ensemble import hybrid
from ensemble.data import Split, StandardScaler, Windows, infer_freq, parse_dates
from ensemble.errors import UserError
from ensemble.forecaster import Forecaster


def _to_matrix(
    df: pd.DataFrame, id_col: str, time_col: str, target_col: str
) -> tuple[np.ndarray, pd.DatetimeIndex, list[str], str]:
    """A long or wide frame -> (values [T, C], dates [T], series names [C], layout)."""
    if time_col in df.columns:  # numbers would become nanoseconds since 1970
        dates = parse_dates(df[time_col], f"column {time_col!r}", file_lines=False)
        df = df.assign(**{time_col: dates.to_numpy()})
    if {id_col, time_col, target_col} <= set(df.columns):
        wide = df.pivot_table(index=time_col, columns=id_col, values=target_col, aggfunc="first")
        if wide.isna().any().any():
            raise UserError(
                "the series in the long frame do not share the same timestamps; "
                "align them (one row per unique_id and ds) before fitting"
            )
        layout = "long"
    else:
        wide = df.set_index(time_col) if time_col in df.columns else df
        if pd.api.types.is_string_dtype(wide.index) or wide.index.dtype == object:
            try:  # timestamps stored as text, as read_csv leaves them
                wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index))
            except (ValueError, TypeError):
                pass
        if not isinstance(wide.index, pd.DatetimeIndex):
            raise UserError(
                f"a wide frame needs a {time_col!r} column or a DatetimeIndex; a long frame "
                f"needs columns {id_col!r}, {time_col!r}, {target_col!r}"
            )
        wide = wide.select_dtypes("number")
        layout = "wide"
    wide = wide.sort_index()
    values = wide.to_numpy(dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise UserError("the frame has no numeric values, or NaN/inf among them; fill them first")
    return values, pd.DatetimeIndex(wide.index), [str(c) for c in wide.columns], layout


def _periods(train: np.ndarray, freq: str | None) -> list[int]:
    """Ranked seasonal periods of the train rows (as `run` uses them)."""
    from periodicity import analyse

    return [int(p) for p in analyse(train, freq=freq).top_periods(3, seasonal_only=True)]


class HybridForecaster:
    """Members combined window by window by a feature-conditioned router.

    Args:
        members: member names as on the command line (``"dlinear"``,
            ``"dlinear@kernel=49"``...) or ``Forecaster`` instances built for
            ``seq_len`` / ``pred_len``.
        router: a combiner name from ``router.COMBINERS`` (``learned``, ``greedy``, ``mean``...).
        seq_len: lookback L.
        pred_len: the longest horizon ``predict`` may be asked for (H).
        val_size: share of the rows held out for the router's validation forecasts.
        seed: random seed of members and router.
        member_params: per-member defaults, e.g. ``{"timellm": {"llm_layers": 2}}``.
    """

    def __init__(
        self,
        members: Sequence[str | Forecaster] = ("dlinear", "arima", "lightgbm"),
        router: str = "learned",
        seq_len: int = 512,
        pred_len: int = 96,
        val_size: float = 0.2,
        seed: int = 0,
        member_params: dict[str, dict[str, Any]] | None = None,
    ):
        self.members = list(members)
        self.router = router
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.val_size = val_size
        self.seed = seed
        self.member_params = member_params or {}

    # -------------------------------------------------------------------- fitting

    def _build(self, spec: str | Forecaster, periods: list[int], n_channels: int) -> Forecaster:
        if not isinstance(spec, str):
            return spec
        # The name -> member map lives with the CLI's registry; imported lazily so that
        # ensemble never depends on a member package at import time.
        from experiments import registry

        registry.parse_members([spec])  # a clear error for an unknown name
        base, _ = registry.parse_spec(spec)
        ctx = registry.MemberContext(
            seq_len=self.seq_len,
            pred_len=self.pred_len,
            n_channels=n_channels,
            freq=self.freq_,
            periods=periods,
            seed=self.seed,
            dataset="custom",
            params=dict(self.member_params.get(base, {})),
        )
        return registry.build(spec, ctx)

    def fit(
        self,
        df: pd.DataFrame,
        id_col: str = "unique_id",
        time_col: str = "ds",
        target_col: str = "y",
    ) -> HybridForecaster:
        """Fit members on the earlier rows and the router on their validation forecasts.

        Args:
            df: long frame (``unique_id, ds, y``) or wide frame (``ds`` column or a
                DatetimeIndex, one numeric column per series).
            id_col, time_col, target_col: column names of the long layout.

        Raises:
            UserError: the frame cannot be read or is too short.
        """
        from router import make_combiner
        from router.features import window_features

        values, dates, names, layout = _to_matrix(df, id_col, time_col, target_col)
        self.layout_, self.series_, self.cols_ = layout, names, (id_col, time_col, target_col)
        self.freq_ = infer_freq(dates)
        n, L, H = values.shape[0], self.seq_len, self.pred_len
        n_val = max(int(n * self.val_size), 2 * H + 1)  # the router needs some val windows
        n_train = n - n_val
        if n_train < L + H:
            raise UserError(
                f"{n} rows are too few for seq_len {L} + pred_len {H} with {n_val} validation "
                "rows; lower seq_len/pred_len or pass a longer series"
            )
        self.scaler_ = StandardScaler().fit(values[:n_train])
        scaled = self.scaler_.transform(values)
        scaled.flags.writeable = False

        def split(name: str, lo: int, hi: int) -> Split:
            return Split(name, scaled[lo:hi], dates[lo:hi], lo, L, H, names, self.freq_)

        train, val = split("train", 0, n_train), split("val", n_train - L, n)
        self.periods_ = _periods(scaled[:n_train], self.freq_)
        self.members_ = [self._build(m, self.periods_, len(names)) for m in self.members]
        self.member_names_ = [
            m if isinstance(m, str) else getattr(m, "name", f"m{i}")
            for i, m in enumerate(self.members)
        ]
        val_fc = []
        for member in self.members_:
            member.fit(train, val)
            val_fc.append(member.predict(val.windows()))
        val_stack = hybrid.stack(dict(zip(self.member_names_, val_fc, strict=True)))
        self.router_ = make_combiner(self.router, seed=self.seed, member_names=self.member_names_)
        feats = None
        if self.router_.needs_features:
            feats, fnames = window_features(
                val.inputs(), val_stack, self.periods_, self.member_names_
            )
            self.router_.feature_names = fnames
        self.router_.fit(val_stack, val.targets(), feats)
        self.values_, self.dates_ = scaled, dates
        return self

    # -------------------------------------------------------------------- forecasting

    def predict(self, h: int | None = None) -> pd.DataFrame:
        """Forecast the ``h`` steps after the last row of the fitted frame.

        Args:
            h: horizon, at most ``pred_len`` (default ``pred_len``).

        Returns:
            Long layout: ``unique_id, ds, hybrid`` and one column per member. Wide layout:
            ``ds`` and one column per series (the hybrid forecast). The router's weights
            of this forecast are in ``weights_`` ([C, M]).
        """
        from router.features import window_features

        H, L = self.pred_len, self.seq_len
        h = H if h is None else int(h)
        if not 1 <= h <= H:
            raise UserError(f"h must be in 1..pred_len={H} (got {h}); refit with a longer pred_len")
        # The last window, plus the earlier ones whose errors the router's skill features
        # score on rows the last window already sees: windows t - H back to t - 5H + 1
        # for the 4H-window ("long") average, as when the router was fitted.
        n_ctx = min(self.values_.shape[0], L + 5 * H - 1)
        context = self.values_[-n_ctx:]
        offset = pd.tseries.frequencies.to_offset(self.freq_ or "D")
        future = pd.date_range(self.dates_[-1], periods=H + 1, freq=offset)[1:]
        windows = Windows(
            context=context,
            seq_len=L,
            pred_len=H,
            dates=self.dates_[-n_ctx:].append(future),
            start=self.values_.shape[0] - n_ctx,
        )
        stack = hybrid.stack(
            {n: m.predict(windows) for n, m in zip(self.member_names_, self.members_, strict=True)}
        )
        feats = None
        if self.router_.needs_features:
            feats, _ = window_features(windows.x, stack, self.periods_, self.member_names_)
        combined = hybrid.combined_forecast(self.router_, stack, feats)[-1, :h]  # [h, C]
        self.weights_ = self.router_.weights(stack, feats)[-1]
        members = {
            n: self.scaler_.inverse_transform(stack[i, -1, :h])
            for i, n in enumerate(self.member_names_)
        }
        ens = self.scaler_.inverse_transform(combined)
        ds = future[:h]
        if self.layout_ == "wide":
            out = pd.DataFrame(ens, columns=self.series_)
            out.insert(0, self.cols_[1], ds)
            return out
        id_col, time_col, _ = self.cols_
        frames = []
        for c, sid in enumerate(self.series_):
            frame = {id_col: sid, time_col: ds, "hybrid": ens[:, c]}
            frame |= {n: f[:, c] for n, f in members.items()}
            frames.append(pd.DataFrame(frame))
        return pd.concat(frames, ignore_index=True)
