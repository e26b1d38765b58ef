"""The schedule ablation's verdict per paper claim per world, side by side, from finished ablation folders.

    python -m scripts.ablation_verdicts docs/ablation/oracle docs/ablation/plan --out docs/ablation/README.md

Each folder is the output of ``python -m scripts.reproduce_ablation`` (its ``claims.csv``); the table is written to
--out and printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drift.report.ablation import write_verdicts


def main(argv: list[str] | None = None) -> int:
    """Write and print the verdict table; returns the exit status (2 when a folder has no claims.csv)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="ablation folders (each with claims.csv)")
    parser.add_argument("--out", type=Path, default=Path("docs/ablation/README.md"), help="markdown file to write")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not (f / "claims.csv").exists()]
    if missing:
        print(f"error: no claims.csv in {', '.join(missing)}; run python -m scripts.reproduce_ablation there first",
              file=sys.stderr)
        return 2
    path = write_verdicts(list(args.folders), args.out)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
