"""Benchmark: how fast ``drift`` starts, against ``python -c "import pandas"`` measured in the same run.

    python -m benchmarks.bench_cli                  # 15 rounds
    python -m benchmarks.bench_cli --repeats 31 --markdown

Each round runs every variant once, as a fresh process, in a rotated order (the machine is noisy, so variants
alternate rather than run back to back); the table gives each variant's median and best wall time over the rounds
and their ratios to the pandas baseline's median and best. Variants:

- ``python -c pass``: the interpreter alone (the floor of any command);
- ``import pandas``: the baseline of the target (``drift --version`` <= 2x it);
- ``drift --version``, ``drift --help``, ``drift fit --help``, ``drift schedule --help``, ``drift report --help``:
  the console script next to this interpreter (``python -m drift`` where there is none);
- ``build_parser()``: the parser with every subcommand registered, which is what every ``drift`` command paid
  before only the named subcommand was loaded (the state before start-up was made lazy);
- with ``--before DIR`` (a checkout of an older drift, e.g. ``git archive HEAD | tar -x -C DIR``): ``before:
  drift --version`` and ``before: drift fit --help``, the same commands run against that code (``PYTHONPATH=DIR``),
  in the same rounds.

After the timings each drift variant is run once more with ``-X importtime`` to say whether it imported torch or
transformers; the run exits 1 when ``drift --version`` is above 2x the baseline or a start-up imports either.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 2.0  # drift --version <= TARGET x import pandas
HEAVY = ("torch", "transformers")
# Every command runs in an empty folder: `python -c` puts the working directory first on sys.path, which would
# otherwise shadow the PYTHONPATH of the --before variants with the checkout the benchmark is started from.
NEUTRAL = tempfile.mkdtemp(prefix="bench_cli_")
atexit.register(shutil.rmtree, NEUTRAL, True)


def drift_command() -> list[str]:
    """The ``drift`` console script of this interpreter's environment, else ``python -m drift``."""
    script = Path(sys.executable).with_name("drift")
    return [str(script)] if script.exists() else [sys.executable, "-m", "drift"]


def variants(before: str | None = None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Variant name -> (the command line it runs, environment variables it adds)."""
    py, drift = sys.executable, drift_command()
    out: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([py, "-c", "pass"], {}),
        "import pandas": ([py, "-c", "import pandas"], {}),
        "drift --version": ([*drift, "--version"], {}),
        "drift --help": ([*drift, "--help"], {}),
        "drift fit --help": ([*drift, "fit", "--help"], {}),
        "drift schedule --help": ([*drift, "schedule", "--help"], {}),
        "drift report --help": ([*drift, "report", "--help"], {}),
        "build_parser() (all commands)": ([py, "-c", "from drift.cli import build_parser; build_parser()"], {}),
    }
    if before:
        old = {"PYTHONPATH": str(Path(before).resolve())}
        # an older drift may have no drift/__main__.py: call its entry point the way the console script does
        entry = [py, "-c", "import sys; from drift.cli import main; sys.exit(main())"]
        out["before: drift --version"] = ([*entry, "--version"], old)
        out["before: drift fit --help"] = ([*entry, "fit", "--help"], old)
    return out


def time_once(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``cmd`` (output discarded); a failing command fails the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False, cwd=NEUTRAL)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return wall


def heavy_imports(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Which of :data:`HEAVY` the command imports (from ``-X importtime``, run through this interpreter)."""
    args = cmd[1:] if cmd[0] == sys.executable else ["-c", "import sys; from drift.cli import main; sys.exit(main())",
                                                     *cmd[1:]]
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, check=False, text=True, cwd=NEUTRAL)
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="rounds (each runs every variant once)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--before", metavar="DIR", default=None,
                        help="also time `drift --version` and `drift fit --help` of the drift checkout in DIR")
    args = parser.parse_args(argv)

    base_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = variants(args.before)
    names = list(runs)
    envs = {n: {**base_env, **extra} for n, (_, extra) in runs.items()}
    for n, (cmd, _) in runs.items():  # warm the file cache (and the bytecode) once, untimed
        time_once(cmd, envs[n])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            times[n].append(time_once(runs[n][0], envs[n]))
    med = {n: statistics.median(v) for n, v in times.items()}
    best = {n: min(v) for n, v in times.items()}
    base = "import pandas"
    loaded = {n: heavy_imports(cmd, envs[n]) for n, (cmd, _) in runs.items()
              if n.startswith(("drift", "build_parser", "before"))}

    header = ["variant", "median s", "best s", "median / pandas", "best / pandas", "imports"]
    rows = [[n, f"{med[n]:.3f}", f"{best[n]:.3f}", f"{med[n] / med[base]:.2f}", f"{best[n] / best[base]:.2f}",
             ", ".join(loaded.get(n, [])) or ("-" if n in loaded else "")] for n in names]
    print(f"drift start-up, {args.repeats} rounds, python {sys.version.split()[0]}, {os.cpu_count()} cpus "
          f"(command: {' '.join(drift_command())})")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))

    ratio = med["drift --version"] / med[base]
    ok_ratio = ratio <= TARGET
    offenders = [n for n in ("drift --version", "drift --help", "drift fit --help", "drift schedule --help",
                             "drift report --help") if loaded[n]]
    print(f"\ntarget drift --version <= {TARGET:g}x import pandas: {ratio:.2f}x ({'met' if ok_ratio else 'MISSED'})")
    print(f"target no torch/transformers at start-up: {'met' if not offenders else 'MISSED: ' + ', '.join(offenders)}")
    return 0 if ok_ratio and not offenders else 1


if __name__ == "__main__":
    sys.exit(main())
