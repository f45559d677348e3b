"""LightGBM: one global gradient-boosted model across channels, direct multi-horizon.

Rows are (window, channel) pairs from every channel (channel id is a categorical
feature), so one model learns from all channels at once.

Multi-horizon strategy: direct, on an orthonormal trajectory basis. The target of a row
is its horizon relative to the window's level, ``r = y[1..H] - level`` (``level`` = the
mean of the last season, which is free of the daily phase). The leading right singular
vectors of the train rows' ``r`` (from the eigenvectors of the ``[H, H]`` Gram matrix
``r.T @ r``) give an orthonormal basis ``U: [H, K]`` of the trajectories (K=16 captures
the trend and the daily shapes); one booster per coefficient ``z_k = r . U[:, k]`` is
trained with early stopping on the val rows, and the forecast is
``level + z_hat @ U.T``. Because ``U`` is orthonormal, the forecast's MSE is the sum of the
coefficients' MSEs plus the part of ``r`` outside the basis, so minimising each booster's
own loss minimises the forecast's. Compared with "horizon as a feature" this needs K
instead of H predictions per row (ETTm1 test: 0.9M instead of 7.7M), and unlike a
recursive strategy no error feeds back.

Features of a row, all computed from running sums of the series (never from
materialised windows): the last ``n_lags`` values, the shape of the last cycle of each
seasonal period (``profile_bins`` segment means: the seasonal lags), rolling mean / std /
min / max over one period and over the whole window, the slope over both, the level
itself, and calendar features of the first forecast step (time of day, day of week).
Lags and statistics are relative to the level, so trees (which cannot extrapolate)
see shapes rather than absolute values.

Training rows: all (window, channel) pairs up to ``max_train_rows`` (a seeded random
subsample above it; neighbouring windows overlap almost entirely, so little is lost),
val rows likewise up to ``max_val_rows``. Under ``--features MS`` only the target's rows
(``Split.loss_channels``): the metric scores the target alone, and the Time-Series-Library
models' MS loss is the target's (``f_dim = -1``), so MS fits as S does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ensemble.data import Split, Windows, sliding
from ensemble.errors import UserError
from ensemble.forecaster import BaseForecaster
from ensemble.io import write_text

log = logging.getLogger(__name__)


BLOCK_VALUES = 1 << 22  # feature values built at a time (16 MiB as float32)


@dataclass
class _Sums:
    """A series' rows and running sums (each [T + 1, C], a leading zero row), the
    channels they are of, and the timestamps calendar features read (None: NaN)."""

    x: np.ndarray
    cum: np.ndarray
    cum2: np.ndarray
    cumt: np.ndarray
    channel_ids: np.ndarray
    dates: pd.DatetimeIndex | None


def _window_sum(cum: np.ndarray, lo: np.ndarray | int, hi: np.ndarray | int) -> np.ndarray:
    """Sum of rows [lo, hi) from a running sum ``cum`` ([T + 1, C], leading zero row)."""
    return cum[hi] - cum[lo]


def trajectory_basis(r: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The leading ``k`` right singular vectors of ``r`` and the share of energy they hold.

    Args:
        r: [N, H] trajectories (rows).
        k: basis size, <= H.

    Returns:
        basis [H, k] with orthonormal columns, sorted by singular value (descending), and
        ``sum(s[:k] ** 2) / sum(s ** 2)`` over the singular values ``s`` of ``r``.
    """
    # eigh of the [H, H] Gram matrix instead of an SVD of r: the SVD builds an unused
    # [N, H] U plus LAPACK workspace (fit peak RSS on ETTm1 at H=720: 2.7 GB, 1.4 GB with
    # eigh). Its eigenvalues are s ** 2, clipped as round-off can make zero ones negative.
    # One BLAS thread: OpenBLAS threads spinning on a busy 2-core machine stalled this
    # for minutes.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        eigval, eigvec = np.linalg.eigh(r.T @ r)  # ascending
    energy = np.clip(eigval[::-1], 0.0, None)
    basis = eigvec[:, ::-1][:, :k]
    # eigenvectors are only defined up to sign, and LAPACK's choice can change with the
    # build or the input's round-off; fixing it (each column's largest-|.| entry positive)
    # makes basis.npy and the boosters' targets z_k reproducible and comparable across runs
    peak = np.abs(basis).argmax(axis=0)
    basis = basis * np.sign(basis[peak, np.arange(k)])
    total = energy.sum()
    explained = float(energy[:k].sum() / total) if total > 0 else 1.0
    return np.ascontiguousarray(basis), explained


class LightGBMForecaster(BaseForecaster):
    """Global LightGBM member (direct forecasts of trajectory-basis coefficients).

    Args:
        seq_len: L.
        pred_len: H.
        periods: seasonal periods (analyser's ranked periods); those <= L are used.
        n_lags: most recent values used as features.
        profile_bins: segments per seasonal cycle in the profile features.
        n_components: K, size of the trajectory basis (capped at H).
        max_train_rows: cap on (window, channel) training rows (random subsample above).
        max_val_rows: cap on validation rows used for early stopping.
        num_boost_round: maximum trees per booster.
        early_stopping: rounds without val improvement before a booster stops.
        learning_rate, num_leaves, min_data_in_leaf, feature_fraction, bagging_fraction,
            lambda_l2: LightGBM settings.
        num_threads: LightGBM threads. 1 by default: OpenMP threads busy-wait, and with
            other work on a 2-core machine 2 threads made fitting 10x slower in CPU time.
        seed: seeds the row subsample and LightGBM.
        progress: tqdm bar over the boosters (None: only on a terminal).
    """

    name = "lightgbm"
    # training and early-stopping rows follow Split.loss_channels (the target under MS)
    uses_loss_channels = True

    def __init__(
        self,
        seq_len: int,
        pred_len: int,
        periods: tuple[int, ...] | list[int] = (24,),
        n_lags: int = 24,
        profile_bins: int = 24,
        n_components: int = 16,
        max_train_rows: int = 100_000,
        max_val_rows: int = 30_000,
        num_boost_round: int = 1000,
        early_stopping: int = 50,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 100,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        num_threads: int = 1,
        level_feature: bool = False,
        seed: int = 0,
        progress: bool | None = None,
    ):
        self.seq_len = int(seq_len)
        self.pred_len = int(pred_len)
        # the three best-ranked periods that fit in the window, in rank order
        fit = [int(p) for p in periods if 2 <= int(p) <= seq_len]
        self.periods = list(dict.fromkeys(fit))[:3] or [min(24, seq_len)]
        self.n_lags = int(min(n_lags, seq_len))
        self.profile_bins = int(profile_bins)
        self.n_components = int(min(n_components, pred_len))
        self.max_train_rows = int(max_train_rows)
        self.max_val_rows = int(max_val_rows)
        self.num_boost_round = int(num_boost_round)
        self.early_stopping = int(early_stopping)
        self.learning_rate = float(learning_rate)
        self.num_leaves = int(num_leaves)
        self.min_data_in_leaf = int(min_data_in_leaf)
        self.feature_fraction = float(feature_fraction)
        self.bagging_fraction = float(bagging_fraction)
        self.lambda_l2 = float(lambda_l2)
        self.num_threads = int(num_threads)
        self.level_feature = bool(level_feature)
        self.seed = int(seed)
        self.progress = progress
        self.basis: np.ndarray | None = None  # [H, K]
        self.boosters: list = []
        self.feature_names: list[str] = []
        self.channels: list[int] | None = None  # the fitted channels (None: all)

    # ------------------------------------------------------------------ features

    @property
    def level_period(self) -> int:
        """The level is the mean over the top-ranked seasonal cycle (phase-free)."""
        return self.periods[0]

    def _sums(
        self,
        data: np.ndarray,
        dates: pd.DatetimeIndex,
        n: int,
        channels: np.ndarray | None = None,
    ) -> _Sums:
        """What every window's features are read from, built once a series.

        Args:
            data: [T, C] scaled rows; window ``w`` has inputs ``data[w : w + L]``.
            dates: timestamps of ``data``'s rows; calendar features need them to reach
                the first forecast step of the last of the ``n`` windows (else NaN).
            n: number of windows.
            channels: the channels to read (None: all).
        """
        chans = np.arange(data.shape[1]) if channels is None else np.asarray(channels)
        x = np.asarray(data[:, chans], dtype=np.float64)
        rows = np.arange(len(x), dtype=np.float64)[:, None]

        def cumulative(v: np.ndarray) -> np.ndarray:
            return np.concatenate([np.zeros((1, len(chans))), np.cumsum(v, axis=0)])

        calendar = dates if len(dates) >= n + self.seq_len else None
        return _Sums(x, cumulative(x), cumulative(x * x), cumulative(rows * x), chans, calendar)

    def _level(self, sums: _Sums, lo: int, hi: int) -> np.ndarray:
        """[hi - lo, C] level of windows lo..hi-1 (mean of their last season)."""
        end = np.arange(lo, hi) + self.seq_len
        return _window_sum(sums.cum, end - self.level_period, end) / self.level_period

    def _block(self, n_channels: int) -> int:
        """Windows whose features (of ``n_channels`` channels) hold about BLOCK_VALUES
        values: features are built a block at a time, never for a whole long series."""
        width = 16 + self.n_lags + sum(min(self.profile_bins, p) for p in self.periods)
        return max(1, BLOCK_VALUES // (width * n_channels))

    def _features(self, sums: _Sums, lo: int, hi: int) -> np.ndarray:
        """Features of windows lo..hi-1 of a series.

        Args:
            sums: the series' running sums (`_sums`), of C channels.
            lo, hi: the windows, ``0 <= lo < hi <= n``.

        Returns:
            [C * (hi - lo), F] float32, rows ordered channel-major (all windows of
            the first channel first).
        """
        L, C = self.seq_len, sums.x.shape[1]
        x, cum, nb = sums.x, sums.cum, hi - lo
        end = np.arange(lo, hi) + L  # exclusive end of each window's inputs
        level = self._level(sums, lo, hi)  # [nb, C]
        feats: dict[str, np.ndarray] = {"level": level} if self.level_feature else {}

        lagv = sliding(x[lo : hi - 1 + L], L)  # [nb, L, C] strided view, nothing copied
        for j in range(self.n_lags):
            feats[f"lag{j + 1}"] = lagv[:, L - 1 - j, :] - level

        for p in self.periods:
            # the last cycle's shape in `bins` segments: the seasonal lags
            bins = min(self.profile_bins, p)
            if p > self.n_lags or bins < p:
                edges = end[:, None] - p + (np.arange(bins + 1) * p) // bins  # [nb, bins + 1]
                for b in range(bins):
                    b_lo, b_hi = edges[:, b], edges[:, b + 1]
                    seg = _window_sum(cum, b_lo, b_hi) / (b_hi - b_lo)[:, None]
                    feats[f"p{p}_seg{b}"] = seg - level

        for m, tag in ((self.level_period, f"p{self.level_period}"), (L, "win")):
            start = end - m
            mean = _window_sum(cum, start, end) / m
            var = np.maximum(_window_sum(sums.cum2, start, end) / m - mean**2, 0.0)
            # least-squares slope over the last m rows: sum((t - t_mean) * x) / sum((t - t_mean)^2)
            t_mean = (start + end - 1)[:, None] / 2.0
            sxt = _window_sum(sums.cumt, start, end) - t_mean * _window_sum(cum, start, end)
            feats[f"{tag}_mean"] = mean - level
            feats[f"{tag}_std"] = np.sqrt(var)
            feats[f"{tag}_slope"] = sxt / (m * (m * m - 1) / 12.0)
            win = sliding(x[lo : hi - 1 + L], m)[L - m :]  # [nb, m, C] view: the last m inputs
            feats[f"{tag}_min"] = win.min(axis=1) - level
            feats[f"{tag}_max"] = win.max(axis=1) - level

        names = list(feats)
        out = np.empty((C, nb, len(names) + 3), dtype=np.float32)
        for i, k in enumerate(names):
            out[:, :, i] = feats[k].T
        # calendar of the first forecast step, and the channel id
        if sums.dates is not None:
            first = sums.dates[lo + L : hi + L]
            tod = (first.hour * 60 + first.minute).to_numpy() / 1440.0
            dow = first.day_of_week.to_numpy()
        else:
            tod = dow = np.full(nb, np.nan)
        out[:, :, -3] = tod
        out[:, :, -2] = dow
        out[:, :, -1] = sums.channel_ids[:, None]
        self.feature_names = names + ["time_of_day", "day_of_week", "channel"]
        return out.reshape(C * nb, -1)

    def _rows(
        self,
        split: Split,
        limit: int,
        rng: np.random.Generator,
        channels: tuple[int, ...] | None = None,
    ):
        """Features [N, F], trajectories relative to the level [N, H], for up to ``limit``
        rows of ``channels`` (None: all). Only the rows drawn are kept: the features of
        every (window, channel) pair of a long series (1M rows x 7 channels: 2.9 GB) were
        built before the draw."""
        n, C = split.n_windows, split.n_channels
        chans = np.arange(C) if channels is None else np.asarray(channels)
        # rows are channel-major: channel c holds rows c * n .. c * n + n - 1
        pick = (chans[:, None] * n + np.arange(n)).ravel()
        if len(pick) > limit:
            pick = pick[np.sort(rng.choice(len(pick), size=limit, replace=False))]
        c, w = np.divmod(pick, n)
        sums = self._sums(split.data, split.dates, n, chans)
        slot = np.empty(C, dtype=np.int64)  # a channel's place among `chans`
        slot[chans] = np.arange(len(chans))
        feats, step = None, self._block(len(chans))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            rows = np.flatnonzero((w >= lo) & (w < hi))
            if len(rows) == 0:
                continue
            block = self._features(sums, lo, hi)
            if feats is None:
                feats = np.empty((len(pick), block.shape[1]), dtype=np.float32)
            feats[rows] = block[slot[c[rows]] * (hi - lo) + (w[rows] - lo)]
        level = self._level(sums, 0, n)  # [n, len(chans)]
        y = split.targets()  # [n, H, C] view
        traj = y[w, :, c]  # [N, H], a copy (fancy indexing)
        traj -= level[w, slot[c]][:, None]  # in place: a second [N, H] array was the fit's peak
        return feats, traj

    # ------------------------------------------------------------------ fit / predict

    def _params(self) -> dict:
        return {
            "objective": "l2",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def check_splits(self, train: Split, val: Split) -> None:
        """Refuse splits too small to fit (LightGBM fails on them deep inside): a run asks
        before it replaces its folder's previous run or fits any member.

        Raises:
            UserError: fewer than 2 train rows or no validation row (windows x channels).
        """

        def rows(split: Split) -> int:
            fitted = split.n_channels if split.loss_channels is None else len(split.loss_channels)
            return split.n_windows * fitted

        n_tr = min(rows(train), self.max_train_rows)
        n_va = min(rows(val), self.max_val_rows)
        if n_tr < 2 or n_va < 1:
            raise UserError(
                f"{self.name}: {n_tr} train rows and {n_va} validation rows "
                "(windows x channels) are too few to fit (at least 2 and 1); lower seq_len "
                "or pred_len, or pass a longer series"
            )

    def fit(self, train: Split, val: Split) -> LightGBMForecaster:
        """Build rows, the trajectory basis (train rows only) and one booster per coefficient."""
        import lightgbm as lgb

        self.check_splits(train, val)
        self.channels = None if train.loss_channels is None else list(train.loss_channels)
        rng = np.random.default_rng(self.seed)
        # under MS the target's rows only, as the other members' loss (Split.loss_channels)
        x_tr, r_tr = self._rows(train, self.max_train_rows, rng, train.loss_channels)
        x_va, r_va = self._rows(val, self.max_val_rows, rng, val.loss_channels)
        self.basis, explained = trajectory_basis(r_tr, self.n_components)  # [H, K]
        log.info(
            "%s: %d train rows, basis K=%d explains %.3f",
            self.name,
            len(x_tr),
            self.n_components,
            explained,
        )
        z_tr, z_va = r_tr @ self.basis, r_va @ self.basis
        params = self._params()
        channel = [len(self.feature_names) - 1]
        # bin the features once; each booster only swaps the labels
        ds_tr = lgb.Dataset(
            x_tr,
            label=z_tr[:, 0],
            params=params,
            free_raw_data=False,
            feature_name=self.feature_names,
            categorical_feature=channel,
        )
        ds_tr.construct()
        ds_va = lgb.Dataset(
            x_va, label=z_va[:, 0], reference=ds_tr, params=params, free_raw_data=False
        )
        ds_va.construct()
        self.boosters = []
        disable = None if self.progress is None else not self.progress
        for k in tqdm(range(self.n_components), desc=self.name, disable=disable, leave=False):
            ds_tr.set_label(z_tr[:, k])
            ds_va.set_label(z_va[:, k])
            booster = lgb.train(
                params,
                ds_tr,
                num_boost_round=self.num_boost_round,
                valid_sets=[ds_va],
                callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)],
            )
            log.info("%s: coefficient %d, %d trees", self.name, k, booster.best_iteration)
            self.boosters.append(booster)
        return self

    def predict(self, windows: Windows) -> np.ndarray:
        """windows.context: [W + L - 1, C] -> [W, H, C]."""
        if self.basis is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        n = windows.n
        # under MS only the target is scored: the others get each window's last input
        # (as ARIMA's), not a booster pass each (minutes per booster on 321 channels)
        chans = None if self.channels is None else np.asarray(self.channels)
        sums = self._sums(windows.context, windows.dates, n, chans)
        C = sums.x.shape[1]
        step = self._block(C)
        if chans is None:
            out = np.empty((n, self.pred_len, C), dtype=np.float32)
            cols: slice | np.ndarray = slice(None)
        else:
            last = np.asarray(windows.context[self.seq_len - 1 : self.seq_len - 1 + n])
            out = np.repeat(last.astype(np.float32)[:, None, :], self.pred_len, axis=1)
            cols = chans
        # a bar over the coefficients: 2.5M rows (321 channels) took minutes per booster
        disable = None if self.progress is None else not self.progress
        total = len(self.boosters) * -(-n // step)
        with tqdm(total=total, desc=f"{self.name} predict", disable=disable, leave=False) as bar:
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                feats = self._features(sums, lo, hi)
                z = np.empty((len(feats), len(self.boosters)))  # [C * nb, K]
                for k, b in enumerate(self.boosters):
                    z[:, k] = b.predict(
                        feats, num_iteration=b.best_iteration, num_threads=self.num_threads
                    )
                    bar.update()
                traj = (z @ self.basis.T).reshape(C, hi - lo, -1).transpose(1, 2, 0)
                out[lo:hi, :, cols] = traj + self._level(sums, lo, hi)[:, None, :]  # [nb, H, C]
        return out

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict:
        keys = (
            "seq_len pred_len periods n_lags profile_bins n_components max_train_rows "
            "max_val_rows num_boost_round early_stopping learning_rate num_leaves "
            "min_data_in_leaf feature_fraction bagging_fraction lambda_l2 num_threads level_feature seed"
        ).split()
        return {k: getattr(self, k) for k in keys}

    def save(self, path: str | Path) -> None:
        """``config.json``, ``basis.npy`` and one LightGBM text model per coefficient."""
        if self.basis is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": self.name,
            "kwargs": self.config(),
            "feature_names": self.feature_names,
            "channels": self.channels,
        }
        (path / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        np.save(path / "basis.npy", self.basis)
        # Through Python's file I/O, not LightGBM's: its C++ fopen reads the path in the
        # ANSI code page on Windows, so a folder such as C:\\Users\\张三 is not found.
        for k, b in enumerate(self.boosters):
            text = b.model_to_string(num_iteration=b.best_iteration)
            write_text(path / f"booster_{k:02d}.txt", text)

    @classmethod
    def load(cls, path: str | Path) -> LightGBMForecaster:
        import lightgbm as lgb

        path = Path(path)
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
        obj = cls(**meta["kwargs"])
        obj.name = meta["name"]
        obj.feature_names = meta["feature_names"]
        obj.channels = meta.get("channels")  # saved before it: every channel forecast
        obj.basis = np.load(path / "basis.npy")
        obj.boosters = [
            lgb.Booster(model_str=(path / f"booster_{k:02d}.txt").read_text(encoding="utf-8"))
            for k in range(obj.basis.shape[1])
        ]
        return obj
