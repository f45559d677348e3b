"""`hybrid-forecast data info` and `hybrid-forecast data download`."""

from __future__ import annotations

import json

from ensemble.cliargs import Once
from ensemble.data import DATASETS, add_data_arguments
from ensemble.errors import UserError
from experiments.cli import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset information and downloads")
    dsub = p.add_subparsers(dest="data_command", metavar="{info,download}")
    dsub.required = True
    info = dsub.add_parser(
        "info",
        help="rows, channels, frequency, split borders and window counts",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(info)
    info.add_argument("--seq-len", type=int, default=512, help="lookback L")
    info.add_argument("--pred-len", type=int, default=96, help="horizon H")
    info.add_argument("--json", action="store_true", help="one JSON object for machines")
    info.set_defaults(func=handle_info)
    dl = dsub.add_parser("download", help="fetch standard datasets (sha256-checked)")
    dl.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(DATASETS)} or 'all'")
    dl.add_argument(
        "--data-dir",
        action=Once,
        hint="give one folder",
        help="target folder (default $HYBRID_FORECAST_DATA, else ./dataset)",
    )
    dl.add_argument(
        "--force",
        action="store_true",
        help="replace a file present whose SHA-256 is not the published one (an edited copy)",
    )
    dl.set_defaults(func=handle_download)


def info_dict(args) -> dict:
    from ensemble.data import dataset_from_args, make_splits
    from experiments.logfile import said_after_checks

    with said_after_checks():  # a refused file: its error alone, not its warnings too
        ds = dataset_from_args(args)
        sp = make_splits(ds, args.seq_len, args.pred_len)
    (b1, b2) = sp.borders
    return {
        "dataset": ds.name,
        "path": str(ds.path),
        "rows": ds.n_rows,
        "channels": ds.n_channels,
        "columns": ds.columns,
        "target": ds.target,
        "features": ds.features,
        "freq": ds.freq,
        "start": str(ds.dates[0]),
        "end": str(ds.dates[-1]),
        "seq_len": args.seq_len,
        "pred_len": args.pred_len,
        "split_rule": ds.split_rule,
        "borders": {
            n: [lo, hi] for n, lo, hi in zip(("train", "val", "test"), b1, b2, strict=True)
        },
        "windows": sp.window_counts(),
    }


def handle_info(args) -> int:
    d = info_dict(args)
    if args.json:
        print(json.dumps(d))
        return 0
    print(
        f"{d['dataset']}: {d['rows']} rows x {d['channels']} channels, freq {d['freq']}, {d['start']} .. {d['end']}"
    )
    print(
        f"file: {d['path']}; target {d['target']}; features {d['features']}; split rule {d['split_rule']}"
    )
    print(f"L={d['seq_len']} H={d['pred_len']}")
    for n, (lo, hi) in d["borders"].items():
        print(f"  {n:<5} rows [{lo}, {hi})  windows {d['windows'][n]}")
    return 0


def handle_download(args) -> int:
    from ensemble.data import data_dir_from
    from ensemble.download import check_before_fetching, download

    if "all" in args.names and args.names != ["all"]:
        raise UserError(
            f"'all' already names every dataset; give it alone or list names without it "
            f"(got {' '.join(args.names)})"
        )
    names = list(DATASETS) if args.names == ["all"] else args.names
    root = data_dir_from(args.data_dir)
    # every name and file first: a typo or an edited file stops the command before, not
    # after, the downloads of the names before it
    check_before_fetching(names, root, force=args.force)
    for n in names:
        path, state = download(n, root, force=args.force)
        note = " (its SHA-256 differed from the published file's)" if state == "replaced" else ""
        print(f"{n}: {state} {path}{note}")
    return 0
