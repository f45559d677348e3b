"""Shared fixtures: the real data folder and small synthetic CSVs."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Workers spread the suite over the cores (``-n auto`` in pyproject's addopts), at most
# this many: each holds torch and a backbone, and more than four gain little.
MAX_WORKERS = 4


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: its CPU affinity, lowered by a cgroup CPU quota (a
    container's ``--cpus``; v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us``), which
    ``os.cpu_count()`` does not see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    quotas = [("cpu.max",)] + [
        (f"{d}/cpu.cfs_quota_us", f"{d}/cpu.cfs_period_us") for d in ("cpu", "cpu,cpuacct")
    ]
    for files in quotas:
        try:
            text = " ".join((cgroup / f).read_text(encoding="utf-8") for f in files).split()
            quota, period = text[0], text[1]
        except (OSError, IndexError):
            continue
        if quota not in ("max", "-1") and quota.isdigit() and period.isdigit() and int(period):
            return max(1, min(cores, -(-int(quota) // int(period))))
    return cores


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per usable core, at most MAX_WORKERS."""
    return min(MAX_WORKERS, usable_cores())


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    """Under workers, one thread each: torch and BLAS would otherwise each start one
    thread per core in every worker, and the oversubscribed cores run the suite slower.
    Thread counts the user set are left as they are (torch reads MKL's before OMP's)."""
    workers = getattr(config.option, "numprocesses", None)
    if workers and not os.environ.get("PYTEST_XDIST_WORKER"):
        if not any(var in os.environ for var in _THREAD_VARS):
            os.environ.update(dict.fromkeys(_THREAD_VARS, "1"))


REAL_DATA = Path(
    os.environ.get(
        "HYBRID_FORECAST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with ETT-small/, weather/...; tests needing it skip when it is absent."""
    if not (REAL_DATA / "ETT-small" / "ETTh1.csv").is_file():
        pytest.skip(f"real data not found under {REAL_DATA}; set HYBRID_FORECAST_DATA")
    return REAL_DATA


def synthetic_frame(
    n: int = 2000, channels: int = 3, period: int = 24, seed: int = 0, freq: str = "h"
) -> pd.DataFrame:
    """Seasonal + trend + noise channels with a date column (target 'OT' last)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {}
    for c in range(channels):
        season = np.sin(2 * np.pi * (t + 3 * c) / period) + 0.5 * np.sin(4 * np.pi * t / period)
        trend = 0.002 * (c + 1) * t
        cols[f"x{c}" if c < channels - 1 else "OT"] = (
            10 + 2 * season + trend + 0.2 * rng.standard_normal(n)
        )
    df = pd.DataFrame(cols)
    df.insert(0, "date", pd.date_range("2020-01-01", periods=n, freq=freq))
    return df


@pytest.fixture
def terminal_ctrl_c():
    """SIGINT raising KeyboardInterrupt as in a terminal (a test run started in the
    background of a script starts with SIGINT ignored), put back after the test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def synth_csv(tmp_path: Path):
    """Factory: write a synthetic CSV (optionally edited by a callback) and return its path."""

    def make(
        n: int = 2000, channels: int = 3, period: int = 24, edit=None, name: str = "synth.csv"
    ) -> Path:
        df = synthetic_frame(n, channels, period)
        if edit is not None:
            df = edit(df)
        path = tmp_path / name
        with warnings.catch_warnings():  # pandas 2.2 on numpy 1.24 warns writing a NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            df.to_csv(path, index=False)
        return path

    return make


@pytest.fixture
def synth_splits(synth_csv):
    """Factory: Splits of a synthetic seasonal + trend series."""
    from ensemble.data import load_dataset, make_splits

    def make(
        seq_len: int = 96, pred_len: int = 24, n: int = 2000, channels: int = 3, period: int = 24
    ):
        return make_splits(
            load_dataset(data_path=synth_csv(n=n, channels=channels, period=period)),
            seq_len,
            pred_len,
        )

    return make


@pytest.fixture(scope="session")
def small_synth_splits(tmp_path_factory):
    """Session-wide Splits (L=96, H=24) of a 1500-row synthetic series, built once, so
    module-scoped fixtures can fit a member once and share it across tests."""
    from ensemble.data import load_dataset, make_splits

    cache: dict = {}

    def make(channels: int = 3):
        if channels not in cache:
            path = tmp_path_factory.mktemp("classical") / f"synth{channels}.csv"
            synthetic_frame(n=1500, channels=channels).to_csv(path, index=False)
            cache[channels] = make_splits(load_dataset(data_path=path), 96, 24)
        return cache[channels]

    return make


# ------------------------------------------------------------------ tiny Time-LLM members

TINY_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
)


def patch_tiny_backbone(mp: pytest.MonkeyPatch) -> None:
    """Make `timellm.backbone.load_backbone` return a 1-layer, width-32 random LLaMA (a
    decoder) for every spec but "minilm", which stays the real bidirectional MiniLM cut to
    one layer; a member's preflight then only asks that a backbone folder exist."""
    import timellm.backbone as backbone_mod
    import timellm.member as member_mod

    real = backbone_mod.load_backbone

    def fake(spec="minilm", **kw):
        if spec == "minilm":
            return real("minilm", llm_layers=1, device=kw.get("device"))
        return backbone_mod.random_backbone("llama", **TINY_LLAMA)

    def check(spec="minilm", *args):  # a stand-in folder need only be there
        if spec == "minilm":
            return real_check(spec, *args)
        return backbone_mod.check_local_backbone(spec)

    real_check = backbone_mod.check_backbone
    mp.setattr(backbone_mod, "load_backbone", fake)
    mp.setattr(member_mod, "check_backbone", check)


@pytest.fixture
def tiny_backbone(monkeypatch):
    """Time-LLM members built in this test get `patch_tiny_backbone`'s models."""
    patch_tiny_backbone(monkeypatch)


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory):
    """Splits of 400 synthetic rows x 2 channels at L=32, H=8: `tiny_timellm`'s shape."""
    from ensemble.data import load_dataset, make_splits

    path = tmp_path_factory.mktemp("tiny") / "synth.csv"
    synthetic_frame(n=400, channels=2).to_csv(path, index=False)
    return make_splits(load_dataset(data_path=path), 32, 8)


def tiny_timellm(**kw):
    """A small, fast `TimeLLMForecaster` (L=32, H=8 unless given) for synthetic data."""
    from timellm.member import TimeLLMForecaster

    base = dict(
        dataset="ETTh1",
        backbone="llama-random",
        seq_len=32,
        pred_len=8,
        d_model=8,
        d_ff=16,
        n_heads=2,
        num_prototypes=16,
        epochs=2,
        patience=0,
        batch_size=16,
        eval_batch_size=128,
        lr=1e-2,
        train_stride=2,
        val_stride=2,
        periods=[24, 12],
        progress=False,
    )
    return TimeLLMForecaster(**{**base, **kw})


def fake_run(
    folder: Path,
    seed: int,
    router: str = "learned",
    *,
    dataset: str = "ETTh1",
    pred_len: int = 24,
    **test: float,
) -> Path:
    """A run folder with only the results.json fields `summary` reads; ``test`` maps
    forecast -> test MSE (MAE is half of it, val MSE twice)."""
    scores = {n: {"mse": v, "mae": v / 2} for n, v in test.items()}
    val = {n: {"mse": 2 * v} for n, v in test.items()}  # members' val: twice their test
    combiners = {
        "stacked": {"test": {"mse": test["ensemble"], "mae": test["ensemble"] / 2}, "chosen": True}
    }
    if seed == 0:  # a combiner only one seed's version reported
        combiners["greedy"] = {"test": {"mse": 0.9, "mae": 0.45}, "chosen": False}
    res = {
        "dataset": dataset,
        "seq_len": 96,
        "pred_len": pred_len,
        "features": "M",
        "seed": seed,
        "members": ["a", "b"],
        "router": router,
        "test": scores,
        "val": val,
        "combiners": combiners,
    }
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(res), encoding="utf-8")
    return folder


@pytest.fixture
def seed_runs(synth_csv, tmp_path) -> list[Path]:
    """Two real run folders (seeds 0 and 1) of naive and snaive on a synthetic CSV."""
    from experiments.cli import main

    csv = str(synth_csv(n=1400))
    folders = []
    for seed in (0, 1):
        out = tmp_path / f"r{seed}"
        argv = ["run", "--data-path", csv, "--seq-len", "96", "--pred-len", "24", "--quiet"]
        argv += ["--members", "naive,snaive", "--router", "stacked", "--seed", str(seed)]
        assert main(argv + ["--out", str(out)]) == 0
        folders.append(out)
    return folders


def fake_run_folder(
    csv: Path,
    out: Path,
    router: str = "inverse_error",
    members: tuple[str, ...] | list[str] = ("naive", "snaive", "window_mean"),
) -> Path:
    """A run folder as `run` writes it, with noisy copies of the truth as forecasts
    (the later members noisier): for the routing report (`analyse`)."""
    from ensemble.data import load_dataset, make_splits
    from experiments.config import RunConfig

    members = list(members)
    L, H = 96, 24
    dataset = load_dataset(data_path=csv)
    splits = make_splits(dataset, L, H)
    rng = np.random.default_rng(0)
    arrays, scores = {}, {"val": {}, "test": {}}
    for part, split in (("val", splits.val), ("test", splits.test)):
        true = np.asarray(split.targets(), dtype=np.float32)
        for i, m in enumerate(members):
            f = true + (0.2 + 0.2 * i) * rng.standard_normal(true.shape).astype(np.float32)
            arrays[f"{part}/{m}"] = f
            scores[part][m] = {"mse": float(np.mean((f - true) ** 2)), "mae": 0.0}
        arrays[f"{part}/ensemble"] = np.mean([arrays[f"{part}/{m}"] for m in members], axis=0)
        scores[part]["ensemble"] = {
            "mse": float(np.mean((arrays[f"{part}/ensemble"] - true) ** 2)),
            "mae": 0.0,
        }
        if part == "test":
            arrays["test/true"] = true
    w = rng.dirichlet(np.ones(len(members)), size=arrays["test/true"].shape[0] * 3)
    w = w.reshape(-1, 3, len(members)).astype(np.float32)
    out.mkdir(parents=True)
    np.savez(out / "forecasts.npz", **arrays)
    ramp = np.linspace(0.0, 1.0, H)[:, None]
    step = np.concatenate([1 - ramp, ramp, 0 * ramp], axis=1)  # naive -> snaive along H
    np.savez(
        out / "router_weights.npz",
        test=w,
        val=w[:1],
        members=np.array(members),
        step_weights=step.astype(np.float32),
    )
    cfg = RunConfig(
        dataset=None, data_path=str(csv), seq_len=L, pred_len=H, members=members, router=router
    )
    (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    res = {
        "dataset": csv.stem,
        "data": {"path": str(csv), "sha256": dataset.sha256, "published": None},
        "features": "M",
        "seq_len": L,
        "pred_len": H,
        "seed": 0,
        "members": members,
        "router": router,
        "windows": splits.window_counts(),
        "periods": [24, 12],
        "val": scores["val"],
        "test": scores["test"],
    }
    (out / "results.json").write_text(json.dumps(res), encoding="utf-8")
    return out


class RecordedBar:
    """A stand-in for tqdm that records its settings and updates (``bars`` fixture)."""

    def __init__(self, iterable=None, total=None, disable=False, **kw):
        self.iterable, self.total, self.disable, self.kw, self.n = iterable, total, disable, kw, 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1

    def update(self, k: int = 1) -> None:
        self.n += k

    def set_postfix_str(self, *args, **kw) -> None:
        pass

    def set_postfix(self, *args, **kw) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.fixture
def bars(monkeypatch):
    """``bars(module)`` replaces ``module.tqdm`` with ``RecordedBar``; returns the list of
    bars that module made."""

    def patch(module) -> list[RecordedBar]:
        made: list[RecordedBar] = []

        def make(*args, **kw):
            made.append(RecordedBar(*args, **kw))
            return made[-1]

        monkeypatch.setattr(module, "tqdm", make)
        return made

    return patch


def tune_spec(csv: Path, out: Path, trials: int):
    """A resolved TuneSpec of a study that fits instantly: snaive (whose period is tuned)
    on ``csv``, H=24, lookbacks 48-96, a 1 s heartbeat and 2 s grace."""
    from experiments.tune import TuneSpec

    return TuneSpec(
        dataset=None,
        data_path=str(csv),
        pred_len=24,
        members=["snaive"],
        trials=trials,
        out=str(out),
        min_seq_len=48,
        max_seq_len=96,
        heartbeat_s=1,
        grace_s=2,
    ).resolved()


def interrupt_trial(monkeypatch: pytest.MonkeyPatch, number: int):
    """Ctrl-C in tune trial ``number`` (and only there); returns the real ``_evaluate``."""
    from experiments.tune_objective import Objective

    evaluate = Objective._evaluate

    def interrupted(self, trial):
        if trial.number == number:
            raise KeyboardInterrupt
        return evaluate(self, trial)

    monkeypatch.setattr(Objective, "_evaluate", interrupted)
    return evaluate


def synth_run_argv(csv: Path, out: Path, *extra: str) -> list[str]:
    """``run`` of two instant members (naive, snaive) on ``csv``, L=96, H=24, into ``out``."""
    argv = ["run", "--data-path", str(csv), "--seq-len", "96", "--pred-len", "24"]
    return argv + ["--members", "naive,snaive", "--out", str(out), "--quiet", *extra]


def reused_members(out: Path) -> int:
    """How many member forecasts the runs into ``out`` reused (run.log, all runs)."""
    return (out / "run.log").read_text(encoding="utf-8").count("reusing forecasts from")
