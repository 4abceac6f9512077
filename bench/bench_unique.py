"""np.unique vs shared.reco.arrays.unique (sort + neighbour comparison) on int64 keys, same run.

    python bench/bench_unique.py [--sizes 1000,100000,8000000]

The keys are what the evaluation's splits build (user code x n_items + item code). Prints both times,
the ratio and the load average; the answers are checked equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared.reco.arrays import unique


def best(f, reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,8000000")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for n in (int(x) for x in args.sizes.split(",")):
        k = rng.integers(0, 1_000_000, n) * 50_001 + rng.integers(0, 50_000, n)
        if not np.array_equal(unique(k), np.unique(k)):
            raise SystemExit("different answers")
        reps = 3 if n >= 1_000_000 else 20
        a, b = best(lambda k=k: np.unique(k), reps), best(lambda k=k: unique(k), reps)
        print(f"{n:>10,} int64 keys: np.unique {a * 1e3:9.2f} ms   arrays.unique {b * 1e3:8.2f} ms   {a / b:6.1f}x")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
