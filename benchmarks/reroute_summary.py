"""Per dataset and horizon, mean ± std over seeds of a ``reroute.py`` CSV (Markdown).

python benchmarks/reroute_summary.py grid_reroute.csv
"""

from __future__ import annotations

import argparse

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="rows written by benchmarks/reroute.py")
    d = pd.read_csv(ap.parse_args().csv)
    cols = [
        c
        for c in ("mean", "median", "stacked_pooled", "stacked", "learned", "best_member")
        if c in d
    ]
    print("| dataset | H | " + " | ".join(cols) + " | learned < mean | learned < best | chosen |")
    print("|---|---|" + "---|" * (len(cols) + 3))
    for (ds, h), x in d.groupby(["dataset", "H"]):
        cells = [f"{x[c].mean():.3f} ± {x[c].std(ddof=1):.3f}" for c in cols]
        print(
            f"| {ds} | {h} | " + " | ".join(cells) + f" | {(x.learned < x['mean']).sum()}/{len(x)}"
            f" | {(x.learned < x.best_member).sum()}/{len(x)} | {', '.join(x.chosen)} |"
        )
    print(
        f"\nlearned below the mean in {(d.learned < d['mean']).sum()} of {len(d)} rows, below "
        f"the best member in {(d.learned < d.best_member).sum()}; a challenger chosen in "
        f"{(d.chosen != 'stacked').sum()}"
    )


if __name__ == "__main__":
    main()
