"""The official Time-LLM command line (``run_main.py`` flags), mapped onto a run of ours.

A user's existing command, e.g. ::

    python run_main.py --task_name long_term_forecast --is_training 1 \\
      --root_path ./dataset/ETT-small/ --data_path ETTm1.csv --model_id ETTm1_512_96 \\
      --model_comment Qwen3B --model TimeLLM --data ETTm1 --features M --seq_len 512 \\
      --label_len 48 --pred_len 96 ... --llm_model QWEN --llm_model_path DIR --load_in_4bit

runs unchanged as ``hybrid-forecast timellm --task_name long_term_forecast ...``. Every
official flag is accepted (plus the community fork's ``--llm_model_path``,
``--load_in_4bit`` and ``--num_tokens``); flags without a meaning here are listed back
as ignored. Unset flags take the official defaults, so a command means what it meant
under ``run_main.py`` (seed 2021, ``d_model`` 16, learning rate 1e-4, ...).

The result is the fields of a run configuration (``experiments.config.RunConfig``: data,
L, H, seed, run folder) with ``member_params`` for the ``timellm`` member (or ``dlinear``
for ``--model DLinear``), exactly what ``hybrid-forecast run --members timellm --set
timellm.KEY=VALUE ...`` would build. It stays a plain dict so that this package does not
import ``experiments`` (arrows point one way).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble import shell
from ensemble.data import DATASETS
from ensemble.errors import UserError

# The official run_main.py defaults (models/TimeLLM.py hard-codes num_tokens = 1000).
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "task_name": "long_term_forecast",
    "is_training": 1,
    "model_id": "test",
    "model_comment": "none",
    "model": "TimeLLM",
    "seed": 2021,
    "data": "ETTh1",
    "root_path": "./dataset",
    "data_path": "ETTh1.csv",
    "features": "M",
    "target": "OT",
    "seq_len": 96,
    "label_len": 48,
    "pred_len": 96,
    "d_model": 16,
    "n_heads": 8,
    "d_ff": 32,
    "moving_avg": 25,
    "dropout": 0.1,
    "patch_len": 16,
    "stride": 8,
    "prompt_domain": 0,
    "llm_model": "LLAMA",
    "itr": 1,
    "train_epochs": 10,
    "batch_size": 32,
    "eval_batch_size": 8,
    "patience": 10,
    "learning_rate": 1e-4,
    "loss": "MSE",
    "lradj": "type1",
    "pct_start": 0.2,
    "llm_layers": 6,
    "percent": 100,
    "num_tokens": 1000,
}

# Accepted for compatibility; they change nothing here (why, in one word or two).
IGNORED = {
    "label_len": "no decoder",
    "e_layers": "not in Time-LLM",
    "d_layers": "not in Time-LLM",
    "factor": "not in Time-LLM",
    "embed": "no time features",
    "activation": "fixed",
    "output_attention": "never returned",
    "num_workers": "no data loader processes",
    "use_amp": "precision per device (--precision)",
    "des": "only names the run folder",
    "loss": "MSE",
    "freq": "inferred from the dates",
    "checkpoints": "checkpoints live in the run folder",
    "loader": "not used",
    "seasonal_patterns": "M4 only",
    "align_epochs": "not used",
    "pct_start": "only with --lradj TST",
    "moving_avg": "DLinear only",
}

# --faithful: the member settings that undo our deviations by choice (docs/timellm.md
# deviations 8, 10 and 15), for a reproduction; fixes of the official faults stay.
FAITHFUL = {
    "prompt": "official",
    "prototype_map": "full",
    "backbone_dropout": True,
    "prompt_max_length": 2048,  # TimeLLM.py's tokenizer cap (ours is 256 for speed)
}

# --llm_model names -> backbone spec when no --llm_model_path is given.
_LLM_NO_PATH = {
    "BERT": "minilm",  # the embedded MiniLM (a small BERT); bert-base is not shipped
}

# Time-LLM-only flags that --model DLinear lists as ignored (why), beyond the LLM's own.
_NOT_DLINEAR = {
    "n_heads": "not in DLinear",
    "dropout": "not in DLinear",
    "patch_len": "not in DLinear",
    "stride": "not in DLinear",
    "num_tokens": "not in DLinear",
    "eval_batch_size": "not in DLinear",
    "inject": "DLinear has no prompt",
    "precision": "DLinear trains in float32",
    # the result is the same on either device, and a DLinear fit is cheap on the CPU
    "device": "our DLinear runs on the CPU",
    # nothing to refuse: a rerun of the same settings reuses the saved forecasts
    "resume": "DLinear keeps no checkpoint",
}
_NO_LLM = (
    "llm_model",
    "llm_model_path",
    "llm_layers",
    "llm_dim",
    "d_model",
    "d_ff",
    "load_in_4bit",
    "load_in_8bit",
    "backbone",
    "prompt_domain",
    "faithful",
)

# --lradj -> our schedule, reproducing the rates run_main.py trains with (its type1 and
# constant start from lr/25: see `timellm.trainer.official_epoch_lr`); TST is OneCycleLR
# stepped per batch, our "onecycle".
_SCHEDULES = {
    "type1": "official_type1",
    "TST": "onecycle",
    "COS": "official_cos",
    "constant": "official_constant",
}


def add_official_arguments(parser: argparse.ArgumentParser) -> None:
    """All run_main.py flags (defaults None, so we know which were given) plus ours."""
    g = parser.add_argument_group("official Time-LLM flags (run_main.py)")
    text = ("task_name", "model_id", "model_comment", "model", "data", "root_path", "data_path")
    for name in text + ("features", "target", "loader", "freq", "checkpoints"):
        g.add_argument(f"--{name}", type=str)
    g.add_argument("--seasonal_patterns", type=str)
    for name in (
        "is_training",
        "seed",
        "seq_len",
        "label_len",
        "pred_len",
        "enc_in",
        "dec_in",
        "c_out",
        "d_model",
        "n_heads",
        "e_layers",
        "d_layers",
        "d_ff",
        "moving_avg",
        "factor",
        "patch_len",
        "stride",
        "prompt_domain",
        "llm_dim",
        "num_workers",
        "itr",
        "train_epochs",
        "align_epochs",
        "batch_size",
        "eval_batch_size",
        "patience",
        "llm_layers",
        "percent",
        "num_tokens",
    ):
        g.add_argument(f"--{name}", type=int)
    for name in ("dropout", "learning_rate", "pct_start"):
        g.add_argument(f"--{name}", type=float)
    for name in ("embed", "activation", "des", "loss", "lradj", "llm_model", "llm_model_path"):
        g.add_argument(f"--{name}", type=str)
    for name in ("output_attention", "use_amp", "load_in_4bit", "load_in_8bit"):
        g.add_argument(f"--{name}", action="store_true", default=None)

    o = parser.add_argument_group("ours (hyphen or underscore spelling)")
    o.add_argument(
        "--backbone",
        help="minilm | PATH | gpt2-random, llama-random, qwen2-random, qwen2.5-3b-random "
        "(random weights, to measure a shape; overrides --llm_model)",
    )
    o.add_argument("--train-stride", "--train_stride", dest="train_stride", type=int)
    o.add_argument("--val-stride", "--val_stride", dest="val_stride", type=int)
    o.add_argument(
        "--inject",
        help="classical forecasts in the prompt: ridge, dlinear, nlinear joined by '+' "
        "(out-of-fold on train); 'none' turns it off",
    )
    o.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="refuse a checkpoint of other settings instead of starting afresh (a plain "
        "rerun already continues a matching checkpoint: an epoch's end, or inside an epoch)",
    )
    o.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    o.add_argument("--device", help="cpu | cuda (default: best available)")
    o.add_argument(
        "--out",
        help="run folder (default: run_main.py's checkpoint folder name under runs/, "
        "runs/<task>_<model_id>_<model>_<data>_ft.._sl.._ll.._pl.._..._<des>_<ii>-<model_comment>)",
    )
    o.add_argument("--data-dir", "--data_dir", dest="data_dir", help="folder with ETT-small/...")
    o.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other member setting, e.g. --set prototype_map=full (repeatable)",
    )
    o.add_argument(
        "--faithful",
        action="store_true",
        default=None,  # None: not given (listed as ignored for DLinear only when given)
        help="the official maths where ours differs by choice: official prompt wording, "
        "full prototype map, backbone dropout while training, the 2048-token prompt cap "
        "(faults stay fixed)",
    )
    o.add_argument("--quiet", action="store_true", help="no progress bars")


@dataclass
class OfficialMapping:
    """The outcome of mapping official flags.

    Attributes:
        config: RunConfig fields as a dict (``member_params`` filled for the member).
        member: "timellm" or "dlinear".
        ignored: "flag (why)" for each given flag that means nothing here.
        checks: channel counts to verify once the data is loaded: enc_in, dec_in, c_out.
        itr: how many seeds to run (official ``--itr``: seed, seed + 1, ...).
        notes: what a flag took from elsewhere, or what the official code does silently.
        outs: the run folder of each of the ``itr`` runs.
        train: False for ``--is_training 0``: test the trained model in the run folder,
            refuse to train one.
        missing_data: the refusal for a registered dataset's file found neither at
            ROOT/DATA_PATH nor in our data folder, raised by the command before loading.
    """

    config: dict[str, Any]
    member: str
    ignored: list[str] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)
    itr: int = 1
    notes: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    train: bool = True
    missing_data: str | None = None


# run_main.py's defaults of the flags that only name its checkpoint folder.
_NAMING_DEFAULTS = {"e_layers": 2, "d_layers": 1, "factor": 1, "embed": "timeF", "des": "test"}


def official_setting(args: argparse.Namespace, ii: int = 0) -> str:
    """run_main.py's name for run ``ii`` of ``--itr`` (its checkpoint folder is this plus
    ``-<model_comment>``): task, model id, model, data, features, sl, ll, pl, dm, nh, el,
    dl, df, fc, eb, des, ii. A change of lookback, horizon or size gets its own folder."""

    def v(name: str) -> Any:
        given = getattr(args, name, None)
        if given is not None:
            return given
        return _NAMING_DEFAULTS[name] if name in _NAMING_DEFAULTS else OFFICIAL_DEFAULTS[name]

    return (
        f"{v('task_name')}_{v('model_id')}_{v('model')}_{v('data')}_ft{v('features')}"
        f"_sl{v('seq_len')}_ll{v('label_len')}_pl{v('pred_len')}_dm{v('d_model')}"
        f"_nh{v('n_heads')}_el{v('e_layers')}_dl{v('d_layers')}_df{v('d_ff')}"
        f"_fc{v('factor')}_eb{v('embed')}_{v('des')}_{ii}"
    )


def _value(args: argparse.Namespace, name: str) -> Any:
    v = getattr(args, name, None)
    return OFFICIAL_DEFAULTS.get(name) if v is None else v


def prompt_bank_file(data: str) -> Path:
    """Where run_main.py reads ``--prompt_domain 1``'s description: ETT.txt for any ETT
    dataset, else <data>.txt, in ./dataset/prompt_bank under the working directory."""
    return Path("dataset") / "prompt_bank" / f"{'ETT' if 'ETT' in data else data}.txt"


def _domain_description(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(description, why ignored) for ``--prompt_domain``.

    With 1 and run_main.py's description file present, the description is that file's
    text (yours, edited or not). Otherwise our prompt bank describes the dataset, and a
    given flag gets a "flag (why)" line saying so.

    Raises:
        UserError: the file is empty or not UTF-8 text.
    """
    given = args.prompt_domain
    if given is None:
        return None, None
    path = prompt_bank_file(str(_value(args, "data")))
    if not given:  # run_main.py then uses one fixed ETT sentence for every dataset
        return None, f"--prompt_domain {given} (the prompt bank's description is used)"
    if not path.is_file():  # run_main.py tests it for truth: 2 reads the file as 1 does
        return (
            None,
            f"--prompt_domain {given} (no {path} here: the prompt bank's description is used)",
        )
    try:
        text = path.read_text(encoding="utf-8-sig").strip()  # Notepad writes a BOM
    except UnicodeDecodeError:
        raise UserError(
            f"{path} is not UTF-8 text: save it as UTF-8 and rerun (a GBK or ANSI file: "
            "Notepad, Save as, Encoding UTF-8)"
        ) from None
    if not text:
        raise UserError(f"{path} is empty: write the dataset's description in it")
    return text, None


def _backbone(args: argparse.Namespace) -> str:
    for flag, value in (("--backbone", args.backbone), ("--llm_model_path", args.llm_model_path)):
        if not value:
            continue
        # A path that is not there fails here, before the data are loaded or a run folder
        # is made (transformers would answer with its hub repo-id naming rules).
        if Path(value).expanduser().is_file():
            raise UserError(
                f"{flag} {value}: a file, not a folder; give the folder of a saved Hugging "
                "Face model (config.json, weights, tokenizer files): GGUF files (llama.cpp, "
                "Ollama) cannot be loaded"
            )
        if Path(value).is_absolute() or value.startswith("."):
            if not Path(value).is_dir():
                raise UserError(
                    f"{flag} {value}: no such folder; give a local Hugging Face model folder "
                    "(with config.json)"
                )
        return str(value)
    llm = str(_value(args, "llm_model")).upper()
    if llm in _LLM_NO_PATH:
        return _LLM_NO_PATH[llm]
    if llm == "GPT2":
        raise UserError(
            "--llm_model GPT2 needs the GPT-2 weights, which are not shipped and cannot be "
            "downloaded here: download openai-community/gpt2 elsewhere and pass "
            "--llm_model_path DIR, or use --llm_model BERT (the embedded MiniLM)"
        )
    if llm in ("LLAMA", "QWEN"):
        raise UserError(
            f"--llm_model {llm} needs --llm_model_path DIR (a local Hugging Face model folder, "
            "e.g. Qwen2.5-3B); or use --llm_model BERT for the embedded MiniLM"
        )
    raise UserError(
        f"unknown --llm_model {llm!r}: use GPT2, LLAMA, BERT or QWEN, or --llm_model_path"
    )


def _fallback(args: argparse.Namespace, file: Path, name: str) -> tuple[str | None, str | None]:
    """(note, refusal) for a registered dataset's file missing at ROOT/DATA_PATH.

    Found in our data folder, it is used (an official folder layout other than ours still
    runs) and the note says so: run_main.py would stop, and a mistyped --root_path must
    not read another copy unnoticed. Found nowhere, the refusal names ROOT/DATA_PATH
    first; the command raises it before loading (the mapping stays usable without data).
    """
    import os

    from ensemble.data import DATA_ENV, data_dir_from

    folder = data_dir_from(args.data_dir)
    other = folder / DATASETS[name][0]
    if other.is_file():
        return f"{file} not found; using {other}", None
    source = (
        "--data-dir"
        if args.data_dir
        else f"${DATA_ENV}"
        if os.environ.get(DATA_ENV)
        else "./dataset"
    )
    return None, (
        f"data file not found: {file} (from --root_path and --data_path), nor {other} "
        f"(from {source}); point --root_path at the folder that holds {file.name}, or run "
        f"`{shell.join(['hybrid-forecast', 'data', 'download', name, '--data-dir', folder])}`"
    )


# run_main.py's --data keys read with its Dataset_Custom (any CSV), lower-cased; "custom"
# is Time-Series-Library's name for it
_CUSTOM_KEYS = ("custom", "ecl", "traffic", "weather")


def _data(args: argparse.Namespace) -> tuple[str | None, str | None, Path | None]:
    """(dataset name, data path, ROOT/DATA_PATH where a registered dataset's file is
    missing there: see `_fallback`) from --data, --root_path and --data_path."""
    data = str(_value(args, "data"))
    file = Path(_value(args, "root_path")) / str(_value(args, "data_path"))
    registered = {k.lower(): k for k in DATASETS}
    name = data if data in DATASETS else registered.get(data.lower())  # e.g. --data Weather
    if name is not None:
        # The registered split rule; the file where the user keeps it, else our data dir,
        # but only for that dataset's own file (not ETTm1.csv read as ETTh1)
        if file.is_file():  # absolute: the run's config.yaml reruns from any folder
            return name, str(file.resolve()), None
        if file.stem.lower() != name.lower():
            raise UserError(
                f"data file not found: {file} (from --root_path and --data_path), and it is "
                f"not {name}'s file, which --data {data} names; fix the paths or --data"
            )
        return name, None, file
    stem = file.stem.lower()
    if stem in registered and data.lower() not in _CUSTOM_KEYS:
        # run_main.py stops on a --data its data_dict lacks; here a mistyped --data would
        # otherwise train on the default --data_path ETTh1.csv unnoticed
        raise UserError(
            f"--data {data} is not a dataset run_main.py knows; for {file.name} pass "
            f"--data {registered[stem]} (or --data custom)"
        )
    if not file.is_file() and stem in registered:  # --data custom --data_path weather.csv
        return registered[stem], None, file
    if not file.is_file():
        raise UserError(
            f"data file not found: {file} (from --root_path and --data_path); check the "
            "paths, or use --data ETTh1/ETTm1/... with --data-dir DIR"
        )
    return None, str(file.resolve()), None


def map_official(args: argparse.Namespace) -> OfficialMapping:
    """Map parsed official flags to our run configuration.

    Raises:
        UserError: unsupported task or model, missing model path, bad data path.
    """
    task = _value(args, "task_name")
    if task != "long_term_forecast":
        raise UserError(f"--task_name {task} is not supported: only long_term_forecast")
    model = str(_value(args, "model"))
    member = {"timellm": "timellm", "dlinear": "dlinear"}.get(model.lower())
    if member is None:
        raise UserError(f"--model {model} is not available here: use TimeLLM or DLinear")

    dataset, data_path, missing = _data(args)
    found_elsewhere, refusal = _fallback(args, missing, dataset) if missing else (None, None)
    itr = int(_value(args, "itr"))
    if itr < 1:
        raise UserError("--itr must be >= 1")
    last = int(_value(args, "seed")) + itr - 1  # --itr runs seeds seed .. seed + itr - 1
    if itr > 1 and last >= 2**32:
        raise UserError(f"--seed with --itr {itr} reaches seed {last}; keep it below {2**32}")
    if args.out:
        outs = [args.out] if itr == 1 else [f"{args.out}_itr{i}" for i in range(itr)]
    else:  # run_main.py's folder names: another lookback or size never replaces a run
        comment = _value(args, "model_comment")
        outs = [f"runs/{official_setting(args, i)}-{comment}" for i in range(itr)]
        # run_main.py has one seed (2021); another would replace that seed's run folder
        seed = int(_value(args, "seed"))
        if seed != OFFICIAL_DEFAULTS["seed"]:
            outs = [f"{o}-seed{seed + i}" for i, o in enumerate(outs)]
    out = outs[0]
    cfg: dict[str, Any] = dict(
        dataset=dataset,
        data_path=data_path,
        data_dir=args.data_dir,
        features=str(_value(args, "features")),
        target=str(_value(args, "target")),
        seq_len=int(_value(args, "seq_len")),
        pred_len=int(_value(args, "pred_len")),
        percent=int(_value(args, "percent")),
        members=[member],
        seed=int(_value(args, "seed")),
        out=out,
    )
    lradj = str(_value(args, "lradj"))
    if lradj not in _SCHEDULES:
        raise UserError(f"--lradj {lradj} is not supported: use type1, TST, COS or constant")
    patience = int(_value(args, "patience"))
    common = {
        "batch_size": int(_value(args, "batch_size")),
        "lr": float(_value(args, "learning_rate")),
        "epochs": int(_value(args, "train_epochs")),
        # run_main.py's EarlyStopping stops at the first epoch without a gain when
        # patience is 0 (counter >= 0); ours reads 0 as "never stop early"
        "patience": 1 if patience == 0 else patience,
    }
    if member == "dlinear":
        params = {**common, "kernel": int(_value(args, "moving_avg"))}
    else:
        params = {
            **common,
            "backbone": _backbone(args),
            "llm_layers": int(_value(args, "llm_layers")),
            "d_model": int(_value(args, "d_model")),
            "d_ff": int(_value(args, "d_ff")),
            "n_heads": int(_value(args, "n_heads")),
            "dropout": float(_value(args, "dropout")),
            "patch_len": int(_value(args, "patch_len")),
            "stride": int(_value(args, "stride")),
            "num_prototypes": int(_value(args, "num_tokens")),
            "eval_batch_size": int(_value(args, "eval_batch_size")),
            "schedule": _SCHEDULES[lradj],
            "pct_start": float(_value(args, "pct_start")),
            # the official dataset yields one channel of one window per item, so a batch
            # is batch_size univariate series (not batch_size windows x all channels)
            "sample": "series",
        }
        optional = {
            "llm_dim": args.llm_dim,
            "load_in_4bit": args.load_in_4bit,
            "load_in_8bit": args.load_in_8bit,
            "train_stride": args.train_stride,
            "val_stride": args.val_stride,
            "resume": args.resume,
            "precision": args.precision,
            "device": args.device,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if args.inject is not None:
            params["inject"] = args.inject
        if args.quiet:
            params["progress"] = False
        if getattr(args, "faithful", False):
            params.update(FAITHFUL)
    ignored: list[str] = []
    notes: list[str] = [found_elsewhere] if found_elsewhere else []
    if member == "dlinear":
        for flag in ("train_stride", "val_stride"):
            if getattr(args, flag, None) is not None:  # it would change the numbers
                raise UserError(
                    f"--{flag}: our DLinear trains and validates on every window (as "
                    "run_main.py's does); leave it out with --model DLinear"
                )
    if member == "timellm":
        description, why = _domain_description(args)
        if description is not None:
            params["description"] = description
            path = prompt_bank_file(str(_value(args, "data")))
            notes.append(f"prompt description: {path} ({len(description)} characters)")
        ignored += [why] if why else []
    from_set: set[str] = set()
    for item in args.set or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set prototype_map=full")
        key, val = item.split("=", 1)
        key = key.strip().removeprefix(f"{member}.")  # as `run` writes it: timellm.KEY
        params[key] = _coerce(val.strip())
        from_set.add(key)
    _check_settings(cfg, params, from_set)
    if member == "timellm":
        notes += _lr_notes(params, itr)
    elif args.learning_rate is None and "lr" not in from_set:
        notes += _dlinear_lr_note(dataset or Path(str(data_path)).stem, cfg["pred_len"], params)
    cfg["member_params"] = {member: params}

    ignored += [
        f"--{k} ({why})"
        for k, why in IGNORED.items()
        if getattr(args, k, None) is not None
        and not (k == "moving_avg" and member == "dlinear")
        and not (k == "pct_start" and lradj == "TST" and member == "timellm")
    ]
    if member == "timellm":
        if args.llm_model is not None and (args.llm_model_path or args.backbone):
            ignored.append("--llm_model (the model path decides)")
    else:  # every Time-LLM-only flag given is said, none dropped unnoticed
        ignored += [f"--{k} (DLinear has no LLM)" for k in _NO_LLM if getattr(args, k) is not None]
        ignored += [
            f"--{k} ({why})" for k, why in _NOT_DLINEAR.items() if getattr(args, k) is not None
        ]
        if args.lradj is not None:
            ignored.append(
                "--lradj (our DLinear halves its rate each epoch, as LTSF-Linear: "
                "docs/timellm.md deviation 24)"
            )
    checks = {
        k: getattr(args, k) for k in ("enc_in", "dec_in", "c_out") if getattr(args, k) is not None
    }
    if not args.out and itr == 1:
        older = _older_folder(args, cfg)
        if older is not None:
            cfg["out"] = outs[0] = older
            notes.append(f"run folder: {older} (named before run_main.py's names were used)")
    # run_main.py parses --is_training but never reads it (it always trains); here 0
    # means what its name says: test the trained model, never train one
    train = int(_value(args, "is_training")) != 0
    return OfficialMapping(cfg, member, ignored, checks, itr, notes, outs, train, refusal)


def _older_folder(args: argparse.Namespace, cfg: dict[str, Any]) -> str | None:
    """``runs/<model_id>-<model_comment>``, the default folder before run_main.py's names,
    when it holds a run of exactly this command (so that an interrupted one resumes
    there) and the new name does not exist yet; else None."""
    import yaml

    older = Path(f"runs/{_value(args, 'model_id')}-{_value(args, 'model_comment')}")
    if Path(cfg["out"]).exists() or not (older / "config.yaml").is_file():
        return None
    try:
        held = yaml.safe_load((older / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(held, dict):
        return None
    keys = ("dataset", "features", "seq_len", "pred_len", "seed", "member_params")
    paths = [held.get("data_path"), cfg.get("data_path")]  # the older name kept it relative
    same_file = paths[0] == paths[1] or (
        None not in paths and Path(paths[0]).resolve() == Path(paths[1]).resolve()
    )
    same = same_file and all(held.get(k) == cfg.get(k) for k in keys)
    return str(older) if same else None


def dlinear_authors_settings(dataset: str, pred_len: int) -> tuple[float, int] | None:
    """(learning rate, batch size) of DLinear's authors for a benchmark dataset, from
    LTSF-Linear's scripts/EXP-LongForecasting/Linear/*.sh (lookback 336); None for others."""
    long = pred_len > 192
    table = {
        "etth1": (0.005, 32),
        "etth2": (0.05, 32),
        "ettm1": (1e-4, 8),
        "ettm2": (0.01 if long else 0.001, 32),
        "weather": (1e-4, 16),  # run_longExp.py's default rate
        "exchange_rate": (5e-4, 32 if long else 8),
        "illness": (0.01, 32),
        "national_illness": (0.01, 32),
    }
    return table.get(dataset.lower())


def _dlinear_lr_note(dataset: str, pred_len: int, params: dict[str, Any]) -> list[str]:
    """What DLinear at run_main.py's learning rate (chosen for Time-LLM) is up against."""
    lr = params.get("lr")
    theirs = dlinear_authors_settings(dataset, pred_len)
    head = f"learning rate: --model DLinear trains at run_main.py's default --learning_rate {lr:g}"
    if theirs is None:
        return [
            f"{head}, chosen for Time-LLM; DLinear's authors set it per dataset (0.005 for "
            "ETTh1, 1e-4 for ETTm1): if results.md marks DLinear 'still improving', raise it"
        ]
    if theirs[0] == lr:
        return []
    return [
        f"{head}, chosen for Time-LLM; DLinear's authors train {dataset} at {theirs[0]:g} with "
        f"batch size {theirs[1]} (LTSF-Linear's scripts): pass --learning_rate {theirs[0]:g} "
        f"--batch_size {theirs[1]} for their baseline"
    ]


def _lr_notes(params: dict[str, Any], itr: int = 1) -> list[str]:
    """The learning rates run_main.py actually trains with under type1 and constant
    (`timellm.trainer.official_epoch_lr`): 25 times below --learning_rate, which the
    official code never says. Empty for the other schedules."""
    from timellm.trainer import official_epoch_lr

    schedule = params.get("schedule")
    lr, epochs = params.get("lr"), params.get("epochs")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lr, epochs))
    if schedule not in ("official_type1", "official_constant") or not numbers:
        return []  # a value that is not a number is refused when the member is built
    rates = ", ".join(f"{official_epoch_lr(schedule, lr, e):.3g}" for e in range(min(epochs, 4)))
    more = ", ..." if epochs > 4 else ""
    # only where there are repeats: run_main.py's divide the rate by 25 again each time
    repeats = (
        f" With --itr {itr}, every repeat trains at these rates (run_main.py's repeats "
        "divide the rate by 25 again each time: docs/timellm.md)"
        if itr > 1
        else ""
    )
    return [
        f"learning rate: --learning_rate {lr:g} with --lradj {schedule.split('_', 1)[1]} trains "
        f"at {rates}{more} per epoch, as run_main.py does (its OneCycleLR starts at lr/25 and is "
        "never stepped); with --lradj TST the rate peaks at the one given (OneCycle), with COS it "
        f"starts there.{repeats}"
    ]


# Member settings that must be whole numbers >= 1, with the official flag that sets each
# (0 or a word would fail deep inside the model or the trainer, after minutes of loading).
_POSITIVE = {
    "batch_size": "batch_size",
    "epochs": "train_epochs",
    "eval_batch_size": "eval_batch_size",
    "d_model": "d_model",
    "n_heads": "n_heads",
    "d_ff": "d_ff",
    "patch_len": "patch_len",
    "stride": "stride",
    "num_prototypes": "num_tokens",
    "llm_layers": "llm_layers",
    "llm_dim": "llm_dim",
    "train_stride": "train_stride",
    "val_stride": "val_stride",
}


def _check_settings(cfg: dict[str, Any], params: dict[str, Any], from_set: set[str]) -> None:
    """UserError for a size below 1 or not a whole number (a flag's or a ``--set``'s), a
    patch longer than the lookback, or a device other than cpu / cuda."""
    for key in ("seq_len", "pred_len"):
        if cfg[key] < 1:
            raise UserError(f"--{key} must be at least 1 (got {cfg[key]})")
    for key, flag in _POSITIVE.items():
        v = params.get(key)
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            continue
        if key in from_set:
            raise UserError(f"--set {key}={v}: must be a whole number of at least 1")
        raise UserError(f"--{flag} must be at least 1 (got {v})")
    patch = params.get("patch_len")
    if patch is not None and patch > cfg["seq_len"]:
        given = f"--set patch_len={patch}" if "patch_len" in from_set else f"--patch_len {patch}"
        raise UserError(
            f"{given} is longer than --seq_len {cfg['seq_len']}: give a patch that fits in "
            "the lookback"
        )
    device = params.get("device")
    if device is not None:  # the accelerator takes any other word for "best available"
        given = f"--set device={device}" if "device" in from_set else f"--device {device}"
        if device not in ("cpu", "cuda"):
            raise UserError(f"{given}: use cpu or cuda (or leave it out for the best available)")
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise UserError(f"{given}: no CUDA GPU is visible here; use --device cpu")


def check_channels(mapping: OfficialMapping, n_channels: int, features: str) -> list[str]:
    """--enc_in / --dec_in / --c_out against the loaded data.

    The official TimeLLM never reads them (its data loader yields one channel per item),
    and Time-Series-Library scripts pass ``--c_out`` = all channels with MS, so a
    mismatch is a notice, not an error: the channels come from the data.

    Args:
        mapping: from `map_official`.
        n_channels: channels the data has under ``features``.
        features: M, S or MS (MS forecasts one channel, so c_out is 1).

    Returns:
        One notice per count that differs from the data's.
    """
    expect = {"enc_in": n_channels, "dec_in": n_channels, "c_out": n_channels}
    if features == "MS":
        expect["c_out"] = 1
    return [
        f"--{key} {given} (the data has {expect[key]} "
        f"{'output' if key == 'c_out' else 'input'} channel(s) with --features {features})"
        for key, given in mapping.checks.items()
        if given != expect[key]
    ]


def _coerce(text: str) -> Any:
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_official(argv: list[str]) -> OfficialMapping:
    """Parse an official command line (without the program name) and map it."""
    parser = argparse.ArgumentParser(prog="hybrid-forecast timellm", add_help=False)
    add_official_arguments(parser)
    args = parser.parse_args(argv)
    return map_official(args)
