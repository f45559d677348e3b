"""`hybrid-forecast timellm` and `hybrid-forecast explain timellm`: the official flags.

``hybrid-forecast timellm --task_name long_term_forecast --is_training 1 --root_path
./dataset/ETT-small/ --data_path ETTm1.csv ... --llm_model QWEN --llm_model_path DIR
--load_in_4bit`` runs a user's existing Time-LLM command as it is: the flags are mapped
by `timellm.official_args` onto one run of ours (``hybrid-forecast run --members
timellm --set timellm.KEY=VALUE ...``), which writes a run folder with every window's
test metric after reloading the best-validation checkpoint. ``--model DLinear`` runs our
DLinear member with the same data flags.

``hybrid-forecast explain timellm [same flags]`` prints the data flow with tensor shapes
at each stage, the parameters of each component (trainable / frozen, bytes) and the
measured peak memory and time of one training step on a batch of the command's shape
(random-walk values; the prompt's description and periods are the run's), and an epoch's
estimated duration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Iterator

DESCRIPTION = __doc__
log = logging.getLogger("hybrid_forecast.timellm")


def add_parser(sub) -> None:
    from timellm.official_args import add_official_arguments

    p = sub.add_parser(
        "timellm",
        help="train and test Time-LLM with the official run_main.py flags (unchanged)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_official_arguments(p)
    p.set_defaults(func=handle)

    e = sub.add_parser("explain", help="explain a model: data flow, shapes, parameters, memory")
    esub = e.add_subparsers(dest="explain_model", metavar="MODEL")
    esub.required = True
    et = esub.add_parser(
        "timellm",
        help="Time-LLM's data flow with shapes, parameters per component, peak step memory",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_official_arguments(et)
    et.add_argument("--json", action="store_true", help="machine-readable output")
    et.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GiB",
        help="a GPU's memory (e.g. 6): say whether training fits and the largest "
        "--batch_size that does (an estimate from the activations this step saves)",
    )
    et.set_defaults(func=handle_explain)


def _mapping(args):
    from ensemble.errors import UserError
    from experiments.config import RunConfig
    from timellm.official_args import check_channels, map_official

    mapping = map_official(args)
    if mapping.missing_data:  # before load_dataset's message, which names our folder only
        raise UserError(mapping.missing_data)
    cfg = RunConfig.from_dict(mapping.config)
    dataset = cfg.load_dataset()
    mapping.ignored.extend(check_channels(mapping, dataset.n_channels, cfg.features))
    return mapping, cfg, dataset


def _notice_lines(mapping) -> list[str]:
    """What the mapping took from elsewhere and what it ignored."""
    lines = [*mapping.notes]
    if mapping.ignored:
        lines.append("ignored (no meaning here): " + ", ".join(mapping.ignored))
    return lines


def _notices(mapping) -> None:
    """What the mapping took from elsewhere and what it ignored: notices, not results,
    so on stderr (stdout stays one JSON document with --json)."""
    import sys

    for line in _notice_lines(mapping):
        print(line, file=sys.stderr)


# run's flags in messages shared with `run`, as this command spells them (it has no
# --dataset or --data-path: "pass --dataset ETTh1" sent the user to another command).
# --data-dir stays: this command takes it, and --root_path means another folder (the
# one holding the CSV itself, not ETT-small/...).
_OFFICIAL_WORDS = (
    (re.compile(r"--dataset\b"), "--data"),
    (re.compile(r"--data-path\b"), "--data_path"),
    (re.compile(r"--seq-len\b"), "--seq_len"),
    (re.compile(r"--pred-len\b"), "--pred_len"),
)
# a quoted command (`hybrid-forecast data download ETTh1 --data-dir DIR`) is another
# command's: its flags stay as that command spells them
_QUOTED = re.compile(r"(`[^`]*`)")


def _reworded(text: str) -> str:
    parts = _QUOTED.split(text)
    for i in range(0, len(parts), 2):  # the odd parts are the quoted commands
        for pattern, word in _OFFICIAL_WORDS:
            parts[i] = pattern.sub(word, parts[i])
    return "".join(parts)


@contextlib.contextmanager
def official_words() -> Iterator[None]:
    """Refusals raised inside, reworded with this command's flag names."""
    from ensemble.errors import UserError

    try:
        yield
    except UserError as exc:
        text = _reworded(str(exc))
        if text == str(exc):
            raise
        raise UserError(text) from None


def handle(args) -> int:
    with official_words():
        return _handle(args)


def _say_notices(lines: list[str], console: bool) -> None:
    """The notices, once the run has passed its checks (a refused input is its error line
    alone, not a paragraph on the learning rate before it) and before it fits anything:
    on stderr (stdout stays the results) unless ``console`` is False (--itr: said once),
    and into run.log, so that a run folder tells what it was made from."""
    import sys

    for line in lines:
        if console:
            print(line, file=sys.stderr)
        log.info("%s", line)  # run.log only: the console shows warnings while it is open


def _handle(args) -> int:
    import copy

    from experiments.run import run

    mapping, cfg, _ = _mapping(args)
    lines = _notice_lines(mapping)
    scores = []
    for i, out in enumerate(mapping.outs):
        cfg_i = copy.deepcopy(cfg)
        cfg_i.seed = cfg.seed + i
        cfg_i.out = out
        # --is_training 0 tests the trained model in the run folder and never trains one
        res = run(
            cfg_i,
            progress=not args.quiet,
            train=mapping.train,
            started=lambda first=i == 0: _say_notices(lines, console=first),
        )
        print(
            f"{res['dataset']} L={res['seq_len']} H={res['pred_len']} seed={res['seed']}: "
            f"test windows {res['windows']['test']}"
        )
        s = res["test"][mapping.member]
        print(f"  {mapping.member:<10} test MSE {s['mse']:.4f}  MAE {s['mae']:.4f}")
        print(f"run folder: {cfg_i.out}")
        scores.append((s["mse"], s["mae"]))
    if len(scores) > 1:  # --itr: what the repeats are for
        import numpy as np

        from experiments import shell

        mse, mae = np.array(scores).T
        folders = shell.join(mapping.outs)  # cmd's quoting on Windows, POSIX elsewhere
        print(
            f"{len(scores)} seeds: test MSE {mse.mean():.4f} ± {mse.std(ddof=1):.4f}  "
            f"MAE {mae.mean():.4f} ± {mae.std(ddof=1):.4f} (mean ± sample std); the table: "
            f"hybrid-forecast summary {folders}"
        )
    return 0


def _float32_for_emulated_bf16(member, model) -> bool:
    """Whether a 4-bit backbone computes in float32 only because this CPU emulates bf16."""
    if not (member.load_in_4bit and member.precision == "auto") or model.compute_dtype:
        return False
    llm = getattr(model, "llm", None)
    return llm is not None and next(llm.parameters()).device.type == "cpu"


@contextlib.contextmanager
def _out_of_memory(cfg, member) -> Iterator[None]:
    """An allocation that fails building the model or in its step (sizes no machine
    holds) is one line naming the official flags that shrink it, not a traceback."""
    from ensemble.errors import UserError
    from timellm.explain import allocation_failure

    try:
        yield
    except (MemoryError, RuntimeError) as exc:  # torch's OutOfMemoryError is a RuntimeError
        said = allocation_failure(exc)
        if said is None:
            raise
        sizes = {
            "pred_len": cfg.pred_len,
            "seq_len": cfg.seq_len,
            "num_tokens": member.num_prototypes,
            "batch_size": member.batch_size,
            "d_model": member.d_model,
            "llm_layers": member.llm_layers,
        }
        raise UserError(
            f"explain: {said} building the model or running its step; lower "
            + ", ".join(f"--{k} (now {v})" for k, v in sizes.items())
        ) from None


def handle_explain(args) -> int:
    with official_words():
        return _handle_explain(args)


def _handle_explain(args) -> int:
    import json

    from ensemble.data import make_splits
    from ensemble.errors import UserError
    from experiments.run import detect_periods

    gpu = args.gpu_memory
    if gpu is not None and not (0 < gpu < 1e6):  # before minutes of loading; NaN too
        raise UserError(f"--gpu-memory {gpu:g}: give the GPU's memory in GiB, e.g. 6")
    mapping, cfg, dataset = _mapping(args)
    if mapping.member != "timellm":
        raise UserError("explain timellm needs --model TimeLLM")
    from experiments import registry
    from timellm.explain import epoch_estimate, explain, gpu_budget, render

    splits = make_splits(dataset, cfg.seq_len, cfg.pred_len, percent=cfg.percent)
    params = dict(cfg.member_params["timellm"])
    params.pop("resume", None)  # explain runs one step and changes nothing
    ctx = registry.MemberContext(
        seq_len=cfg.seq_len,
        pred_len=cfg.pred_len,
        n_channels=dataset.n_channels,
        freq=dataset.freq,
        periods=detect_periods(splits),
        seed=cfg.seed,
        dataset=dataset.name,
        params=params,
    )
    member = registry.build("timellm", ctx)
    with _out_of_memory(cfg, member):
        model = member.build()
    # After the build: a bad backbone path is then the only line on stderr. On stderr, so
    # that stdout stays one JSON document with --json.
    _notices(mapping)
    emulated_bf16 = _float32_for_emulated_bf16(member, model)
    if emulated_bf16:
        import sys

        print(
            "explain: this CPU has no native bf16 (AVX512-BF16 or AMX), so the 4-bit backbone "
            "computes in float32 here, as training on it would (bf16 is emulated, about 40x "
            "slower); a GPU computes in bf16, with about half of these activations and "
            "embeddings: --precision bf16 measures that here, slowly",
            file=sys.stderr,
        )
    # The step the trainer takes: batch_size univariate series (the official batching,
    # sample=series), or batch_size windows x all channels (sample=windows).
    with _out_of_memory(cfg, member):
        info = explain(
            model,
            member.batch_size,
            cfg.seq_len,
            1 if member.sample == "series" else dataset.n_channels,
            description=member.prompt_description(),
            periods=member.periods[:5],
            prompt=member.prompt,
            backbone_eval=not member.backbone_dropout,
        )
    if emulated_bf16:  # in the JSON too: every figure above is float32's
        info["memory"]["measured_in"] = "float32 (this CPU emulates bf16)"
    # What one epoch of this command costs: its optimiser steps and validation passes.
    steps, val_series = member.epoch_size(splits.train, splits.val)
    series_per_step = member.batch_size * (1 if member.sample == "series" else dataset.n_channels)
    info["epoch"] = epoch_estimate(info["timing"], series_per_step, steps, val_series)
    if args.gpu_memory is not None:
        info["gpu_budget"] = gpu_budget(
            info["memory"], member.batch_size, series_per_step // member.batch_size, args.gpu_memory
        )
    print(json.dumps(info, default=str) if args.json else render(info))
    return 0
