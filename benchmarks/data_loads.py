"""How often a one-round `fit` reads its data set: the loader is wrapped and every call counted
by data config (digits, tiny preset, baselines on, the evaluator trained in a fresh cache).

    PYTHONPATH=src python benchmarks/data_loads.py
"""

from __future__ import annotations

import collections
import tempfile

import semigen
from semigen.data import sources


def main() -> None:
    loads = collections.Counter()
    read = sources._load_source

    def counted(cfg, progress):
        loads[repr(cfg)] += 1
        return read(cfg, progress)

    sources._load_source = counted
    with tempfile.TemporaryDirectory() as work:
        semigen.fit("digits", out=f"{work}/run", preset="tiny", rounds=1,
                    data__cache_dir=f"{work}/cache", run__progress=False)
    print(f"loads: {sum(loads.values())}, data sets: {len(loads)}, "
          f"per data set: {sorted(loads.values())}")


if __name__ == "__main__":
    main()
