"""The periods each registered dataset's runs are built with, as a Markdown table.

For every dataset, the analyser's overall ranking of the train rows (what
``hybrid-forecast periods`` prints) with each period's F_S and the cycles it was measured
on, and the seasonal periods ``run.detect_periods`` hands to the members (at most three).

    python benchmarks/detected_periods.py                       # features M
    python benchmarks/detected_periods.py --features S --datasets ETTm1,ETTm2

It also runs against an older tree (``PYTHONPATH=/tmp/old python benchmarks/...``) from
before candidates knew their cycles; there a period is seasonal at F_S > 0.3 and the
cycles show as "?".
"""

from __future__ import annotations

import argparse
import time

from ensemble.data import load_dataset, make_splits
from periodicity import analyse

DATASETS = ["ETTh1", "ETTh2", "ETTm1", "ETTm2", "weather", "illness", "exchange_rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--features", default="M", choices=["M", "S"])
    args = ap.parse_args()
    print(
        "| dataset | ranked periods: F_S on cycles (bold: seasonal) | a run's periods | seconds |"
    )
    print("|---|---|---|---|")
    for name in args.datasets.split(","):
        ds = load_dataset(name, features=args.features)
        # the train rows a run analyses do not depend on L or H; these only have to fit
        splits = make_splits(ds, 104 if name == "illness" else 512, 24 if name == "illness" else 96)
        t = time.perf_counter()
        report = analyse(splits.train.data, freq=ds.freq)
        secs = time.perf_counter() - t
        cells = []
        for c in report.overall:
            seasonal = getattr(c, "seasonal", c.strength > 0.3)  # older trees: a fixed 0.3
            cycles = getattr(c, "cycles", None)
            on = "?" if cycles is None else f"{cycles:.0f}"
            cells.append(
                (f"**{c.period}**" if seasonal else str(c.period)) + f" {c.strength:.2f} on {on}"
            )
        used = report.top_periods(3, seasonal_only=True)
        print(f"| {name} | {', '.join(cells) or 'none'} | {used or 'none'} | {secs:.1f} |")


if __name__ == "__main__":
    main()
