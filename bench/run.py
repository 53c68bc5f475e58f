"""Run the benchmarks in bench/ and save the run to bench/results/latest.json.

Each benchmark is a module ``bench/<name>.py`` with ``run() -> Iterable[dict]``;
each dict is one figure ``{"bench", "metric", "value", "unit", "goal"}``.  Figures are
printed as JSON lines as they come, so a long run shows progress.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("bench", "metric", "value", "unit", "goal")


def discover() -> list[str]:
    """Every module in bench/ except this runner is a benchmark."""
    return sorted(
        m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name not in {"run"}
        and not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = set(names) - set(discover())
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {discover()}")
    figures: list[dict] = []
    started = time.time()
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            raise SystemExit(f"bench {name}: needs the Python module {exc.name!r}, which is "
                             "not installed: run it with `make bench B=...` (or "
                             "scripts/bench.sh), which installs what the benches "
                             "need") from None
        for fig in module.run():
            missing = [k for k in KEYS if k not in fig]
            if missing:
                raise SystemExit(f"bench {name}: figure lacks {missing}: {fig}")
            figures.append(fig)
            print(json.dumps(fig), flush=True)
    out = HERE / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"started": started, "benches": names, "figures": figures}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
