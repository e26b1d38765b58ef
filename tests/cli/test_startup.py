"""CLI start-up: the parser loads only the named subcommand, imports neither torch nor transformers, and keeps
every flag.

The import checks run in fresh subprocesses (this test process has torch loaded by conftest). The flag checks
compare the parser :func:`drift.cli.main` builds for one command with the parser registering every command (what
``drift`` built before start-up was made lazy) and with the fields of the command's config dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import typing

import pytest

from drift import __version__
from drift.cli import COMMANDS, HELP, build_parser, command_in, main

HEAVY = ("torch", "transformers")

_PROBE = """\
import contextlib, io, json, sys
from drift.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:
        rc = exc.code
text = out.getvalue()
loaded = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"rc": rc, "head": text[:300], "out": text[-2000:], "loaded": loaded}))
""".replace("HEAVY", repr(HEAVY))


def _run_cli(*argv: str) -> dict[str, typing.Any]:
    """Run ``drift ARGV`` in a fresh interpreter: its exit code, output head and tail, the heavy modules loaded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


START_UP = [
    ("--version",), ("--help",), ("fit", "--help"), ("schedule", "--help"), ("schedule", "show", "--help"),
    ("schedule", "make", "--help"), ("schedule", "recommend", "--help"), ("report", "--help"),
    ("collect", "--help"), ("score", "--help"), ("import", "--help"), ("probe", "--help"), ("onset", "--help"),
    ("train", "--help"),
]


@pytest.mark.parametrize("argv", START_UP, ids=" ".join)
def test_start_up_imports_neither_torch_nor_transformers(argv):
    result = _run_cli(*argv)
    assert result["rc"] == 0, result["out"]
    assert result["loaded"] == [], f"`drift {' '.join(argv)}` imported {result['loaded']}"
    expected = f"drift {__version__}" if argv == ("--version",) else f"usage: drift {' '.join(argv[:-1])}".rstrip()
    assert result["head"].startswith(expected), result["head"]


def test_fit_and_schedule_make_run_without_torch(tmp_path):
    from drift.synthetic import synthetic_tokens, write_synthetic_dataset

    df = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3}, n_rollouts=40, length_range=(20, 60),
                          seed=1, metric="kl_reverse")
    write_synthetic_dataset(tmp_path / "ds", df, rollouts_per_part=20)
    fit = _run_cli("fit", str(tmp_path / "ds"), "--metric", "kl_reverse", "--bins", "8", "--n-boot", "50",
                   "--out", str(tmp_path / "fit"))
    assert fit["rc"] == 0, fit["out"]
    assert (tmp_path / "fit" / "fits.json").exists()
    assert fit["loaded"] == [], f"`drift fit` imported {fit['loaded']}"
    make = _run_cli("schedule", "make", "--kind", "iw_opd", "--gamma", "0.5")
    assert make["rc"] == 0 and '"iw_opd"' in make["out"], make["out"]
    assert make["loaded"] == [], f"`drift schedule make` imported {make['loaded']}"


def test_python_dash_m_drift():
    proc = subprocess.run([sys.executable, "-m", "drift", "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"drift {__version__}"


# ------------------------------------------------------------------------------------------ the same flags


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _parsers(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)parser under ``parser``, by its command path."""
    out = {path: parser}
    for name, sub in _subparsers(parser).items():
        out.update(_parsers(sub, (*path, name)))
    return out


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


@pytest.fixture(scope="module")
def full_parser() -> argparse.ArgumentParser:
    return build_parser()  # every command registered, as `drift` did before start-up was made lazy


def test_every_command_is_registered_and_helps_as_the_table_says(full_parser):
    assert tuple(HELP) == COMMANDS
    subs = next(a for a in full_parser._actions if isinstance(a, argparse._SubParsersAction))
    assert [c.dest for c in subs._choices_actions] == list(COMMANDS)
    assert {c.dest: c.help for c in subs._choices_actions} == HELP
    assert build_parser(()).format_help() == full_parser.format_help()  # `drift --help` lists the same


@pytest.mark.parametrize("command", COMMANDS)
def test_one_command_parser_equals_the_full_one(full_parser, command):
    lazy = _parsers(build_parser((command,)))
    full = {path: p for path, p in _parsers(full_parser).items() if path[:1] == (command,)}
    assert {path for path in lazy if path[:1] == (command,)} == set(full)
    for path, parser in full.items():
        assert _flags(lazy[path]) == _flags(parser), path
        assert lazy[path].format_help() == parser.format_help(), path
    # the other commands are bare entries: listed, never loaded
    for other, stub in _subparsers(build_parser((command,))).items():
        if other != command:
            assert _flags(stub) == set()


def _config_flags(cls: type) -> set[str]:
    """The flags ``add_config_arguments`` must make for ``cls``: one per CLI field, nested blocks flattened."""
    hints = typing.get_type_hints(cls)
    flags: set[str] = set()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 and type(None) in typing.get_args(tp) else tp
        if dataclasses.is_dataclass(tp):
            flags |= _config_flags(tp)
        elif f.metadata.get("cli", True):
            flags.add(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))
    return flags


def _configs() -> dict[tuple[str, ...], tuple[type, set[str], set[str]]]:
    """Command path -> (config, flags the command leaves out on purpose, flags it adds by hand)."""
    from drift.collect.config import CollectConfig, ScoreConfig
    from drift.ingest.config import ImportConfig
    from drift.onset.config import OnsetConfig
    from drift.probe.config import ProbeConfig
    from drift.report.build import ReportConfig
    from drift.schedules.recommend import RecommendConfig
    from drift.stats.pipeline import FitConfig
    from drift.train.config import TrainConfig

    scoring_only = {"--chunk-size", "--max-batch-tokens", "--topk", "--score-temperature", "--self-check"}
    return {
        ("collect",): (CollectConfig, set(), set()),
        ("score",): (ScoreConfig, set(), set()),
        ("import",): (ImportConfig, set(), set()),
        ("fit",): (FitConfig, set(), {"--metric"}),  # metric: a repeatable flag taking commas
        ("probe",): (ProbeConfig, {"--dataset"} | scoring_only, set()),  # dataset: the positional DATASET
        ("onset",): (OnsetConfig, {"--dataset"}, set()),  # dataset: the positional DATASET
        ("train",): (TrainConfig, set(), set()),
        ("report",): (ReportConfig, set(), set()),
        ("schedule", "recommend"): (RecommendConfig, {"--dataset"}, set()),
    }


@pytest.mark.parametrize("path", list(_configs()), ids=" ".join)
def test_flags_are_the_config_fields(path):
    cls, left_out, by_hand = _configs()[path]
    parser = _parsers(build_parser((path[0],)))[path]
    expected = (_config_flags(cls) - left_out) | by_hand | {"-h", "--help"}
    have = _flags(parser)
    assert have == expected, f"missing {sorted(expected - have)}, unexpected {sorted(have - expected)}"


# ------------------------------------------------------------------------------------- finding the command


@pytest.mark.parametrize(("argv", "command"), [
    ([], None), (["--version"], None), (["-h"], None), (["-v", "fit", "runs/x"], "fit"),
    (["-vv", "--", "report", "x"], "report"), (["import", "slime", "d"], "import"), (["fitt"], None),
    (["schedule", "show", "fit"], "schedule"),
])
def test_command_in(argv, command):
    assert command_in(argv) == command


def test_unknown_command_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fitt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fitt'" in err and all(repr(c) in err for c in COMMANDS)


def test_no_command_prints_the_listing(capsys):
    assert main([]) == 1
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    assert all(f" {c} {HELP[c]}" in out for c in COMMANDS)
