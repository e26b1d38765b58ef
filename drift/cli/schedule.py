"""``drift schedule``: look at, export and write token-weight schedule specs.

    drift schedule show schedule.json --format verl       # formula, weight shape, verl knobs
    drift schedule show '{"kind": "iw_opd", "gamma": 0.5}' --format trl
    drift schedule make --kind prefix_mask --frac 0.3 --out prefix30.json
    drift schedule make --kind iw_opd --gamma 0.5 --denominator paper --out iw_paper.json

Each action is one ``_add_<action>(sub)`` function that adds its parser and sets ``func``; a new action
(``recommend`` is planned) is one more such function, called in :func:`register`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from drift.cli import HELP
from drift.errors import ConfigError, DriftError
from drift.schedules import KINDS, STYLES, TARGETS, Schedule, export, format_export, load
from drift.schedules.preview import (
    SYNTHETIC_ADVANTAGE,
    SYNTHETIC_LENGTH,
    SYNTHETIC_TEACHER_LOGPROB,
    decile_weights,
    weight_profile,
)

__all__ = ["register", "weight_table"]

_FRAC_ALIAS_KINDS = ("prefix_mask", "prefix_weight")  # accept frac as start_ratio = end_ratio = frac


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``drift schedule`` and its actions to the top-level parser."""
    parser = subparsers.add_parser(
        "schedule",
        help=HELP["schedule"],
        description="Token-weight schedules multiply the detached OPD advantage A_t = log pi_T(y_t) - "
                    "log pi_S(y_t) per response token. A schedule is a small JSON spec: `show` prints "
                    "its formula, its shape and its knobs for verl / TRL / tinker; `make` writes one "
                    "from flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_kinds_epilog(),
    )
    sub = parser.add_subparsers(dest="schedule_action", metavar="ACTION")
    _add_show(sub)
    _add_make(sub)
    _add_recommend(sub)

    def no_action(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(func=no_action)


def _kinds_epilog() -> str:
    width = max(len(k) for k in KINDS)
    lines = ["kinds (L = the sequence's valid length, t = 0..L-1 the token position, A_t the advantage):"]
    for kind, cls in KINDS.items():
        # Break between "; "-separated clauses, never inside a formula.
        rows = [""]
        for clause in cls.summary.split("; "):
            if rows[-1] and len(rows[-1]) + len(clause) > 84:
                rows.append("")
            rows[-1] += ("; " if rows[-1] else "") + clause
        lines.append(f"  {kind:<{width}}  {rows[0]}")
        lines += [" " * (width + 4) + r for r in rows[1:]]
    lines += [
        "",
        "Weights are 0 at padding; formulas and defaults follow PAPER.md §5. Export targets: verl",
        "(IW-OPD fork knobs), trl (IWOPDConfig kwargs), tinker (tinker-cookbook keys), json (the drift",
        "spec, for a custom loss that calls drift.schedules.load(spec).weights(...)).",
        "",
        "examples:",
        "  drift schedule make --kind iw_opd --gamma 0.5 --out iw.json",
        "  drift schedule make --kind prefix_weight --start-ratio 0.3 --end-ratio 1.0 --out pw.json",
        "  drift schedule show iw.json --format verl",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- show

def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show", help="print a schedule's formula, weight shape and export",
        description=f"Print the formula, the mean weight per relative-position decile on a synthetic "
                    f"rollout ({SYNTHETIC_LENGTH} tokens, A_t = {SYNTHETIC_ADVANTAGE:g}, teacher "
                    f"log-prob {SYNTHETIC_TEACHER_LOGPROB:g}), and the schedule exported to --format "
                    "with its notes. Exits with code 2 and a plain sentence when the target has no "
                    "equivalent.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_kinds_epilog())
    p.add_argument("spec", metavar="SPEC", help="schedule spec: a JSON file or inline JSON text")
    p.add_argument("--format", dest="target", choices=TARGETS, default="json",
                   help="export target (default: json)")
    p.add_argument("--style", choices=STYLES, default=None,
                   help="rendering: yaml, overrides (key=value; verl gets its Hydra prefix), kwargs, json "
                        "(default: overrides for verl and tinker, kwargs for trl, json for json)")
    p.add_argument("--approximate", action="store_true",
                   help="export the closest setting when the target has only an approximate equivalent")
    p.add_argument("--total-steps", type=int, default=100,
                   help="run length used to show annealed schedules at the first, middle and last step "
                        "(default: 100)")
    p.set_defaults(func=_run_show)


def weight_table(schedule: Schedule, *, length: int = SYNTHETIC_LENGTH, total_steps: int = 100) -> list[str]:
    """Mean weight per relative-position decile on a synthetic constant-advantage rollout, as lines."""
    if schedule.needs_step:
        steps = sorted({1, (total_steps + 1) // 2, total_steps})
        cols: dict[str, dict[str, int]] = {f"step {s}": {"step": s, "total_steps": total_steps} for s in steps}
    else:
        cols = {"weight": {}}
    deciles = {name: decile_weights(schedule, length=length, **kw) for name, kw in cols.items()}
    means = {name: weight_profile(schedule, length=length, **kw).mean() for name, kw in cols.items()}
    lines = ["position  " + "".join(f"{name:>11}" for name in cols)]
    for i in range(10):
        cells = "".join(f"{deciles[name][i]:>11.4g}" for name in cols)
        lines.append(f"{f'{10 * i}-{10 * (i + 1)}%':<10}{cells}")
    lines.append("mean      " + "".join(f"{means[name]:>11.4g}" for name in cols))
    return lines


def _run_show(args: argparse.Namespace) -> int:
    schedule = load(args.spec)
    print(schedule.describe())
    print()
    print(f"weights by relative position (synthetic rollout: {SYNTHETIC_LENGTH} tokens, "
          f"A_t = {SYNTHETIC_ADVANTAGE:g}, teacher log-prob {SYNTHETIC_TEACHER_LOGPROB:g}):")
    for line in weight_table(schedule, total_steps=args.total_steps):
        print("  " + line)
    print()
    result = export(schedule, args.target, allow_approximate=args.approximate)
    print(f"export to {args.target} ({'exact' if result.exact else 'APPROXIMATE'}):")
    print(format_export(result, args.style))
    if result.notes:
        print()
        print("notes:")
        for note in result.notes:
            print(f"  - {note}")
    return 0


# -------------------------------------------------------------------------------------------------- make

def _param_fields() -> dict[str, list[tuple[str, Any, str]]]:
    """Parameter name -> [(kind, type, help)] over every kind; the make flags are their union."""
    out: dict[str, list[tuple[str, Any, str]]] = {}
    for kind, cls in KINDS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            out.setdefault(f.name, []).append((kind, hints[f.name], f.metadata.get("help", "")))
    return out


def _add_make(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make", help="write a schedule spec (JSON) from flags",
        description="Build a schedule spec from --kind and that kind's parameters, validate it and write "
                    "it as JSON (to --out, or stdout). Parameters left out take the kind's defaults; a "
                    "parameter of another kind is an error. Lists take commas (--values 1.5,1.2,1.0), "
                    "objects JSON (--params '{\"a\": 0.5, \"b\": -1.0}').",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_kinds_epilog())
    p.add_argument("--kind", required=True, choices=list(KINDS), help="schedule kind (listed below)")
    group = p.add_argument_group("parameters (the kinds each one applies to are in brackets)")
    for name, uses in _param_fields().items():
        kinds = [k for k, _, _ in uses]
        helps = {h for _, _, h in uses}
        if len(helps) == 1:
            text = f"{helps.pop()} [{', '.join(kinds)}]"
        else:
            text = "; ".join(f"{k}: {h}" for k, _, h in uses)
        if name == "frac":
            text += " [prefix_mask, prefix_weight: shorthand for start_ratio = end_ratio = frac]"
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                           metavar="VALUE", help=text.replace("%", "%%"))
    p.add_argument("--out", type=Path, default=None, help="write the spec here (default: print it)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_run_make)


def _coerce(name: str, text: str, tp: Any) -> Any:
    """Turn a flag's text into the parameter's type (bool, int, float, str, float list, JSON object)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = type(None) in typing.get_args(tp) and len(args) == 1
    inner = args[0] if optional else tp
    low = text.strip().lower()
    if optional and low in ("none", "null", ""):
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
        if origin in (tuple, list):
            if text.strip().startswith("["):
                return json.loads(text)
            return [float(x) for x in text.split(",") if x.strip()]
        if origin is dict or inner is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError("schedule make flags", [f"--{name.replace('_', '-')} {text!r}: {exc}"]) from None
    return text


def _run_make(args: argparse.Namespace) -> int:
    cls = KINDS[args.kind]
    hints = typing.get_type_hints(cls)
    accepted = set(cls.param_names()) | ({"frac"} if args.kind in _FRAC_ALIAS_KINDS else set())
    given = {name: getattr(args, name) for name in _param_fields() if hasattr(args, name)}
    wrong = sorted(set(given) - accepted)
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        valid = ", ".join("--" + a.replace("_", "-") for a in sorted(accepted)) or "none"
        raise ConfigError("schedule make flags",
                          [f"{flags} does not apply to kind {args.kind!r}; its parameters: {valid}"])
    params = {name: _coerce(name, text, hints.get(name, float)) for name, text in given.items()}
    schedule = load({"kind": args.kind, **params})
    if args.out is None:
        print(schedule.to_json())
        return 0
    if args.out.exists() and not args.force:
        raise ConfigError("schedule make flags", [f"--out {args.out} exists; pass --force to overwrite it"])
    schedule.save(args.out)
    print(schedule.describe())
    print(f"wrote {args.out}")
    return 0


RECOMMEND_HELP = """\
Derive a schedule from measured drift and print why. Evidence of supervision quality is taken from, in order: a
continuation probe (DATASET/probe or --probe, from `drift probe`), the oracle world's labels, or nothing (then the
paper's IW-OPD is recommended as the default, and the rationale says so). Every interval resamples --cluster units
(default prompt); fewer than --min-clusters (default 10) give 'insufficient' and the default, never a fitted curve.
With enough evidence drift compares IW-OPD's own signal -C_t/C_T with position (-t/T, or +t/T when quality rises)
over pairs from different rollouts of the same prompt (pooled when too few prompts have such pairs), by a paired
cluster-bootstrap interval of the AUROC difference: above 0 -> IW-OPD; a flat verdict of the equivalence test ->
uniform; below 0 (with a rising or falling direction) -> the fitted position curve; otherwise (inconclusive) the
default, IW-OPD (uniform when quality rises). It prints the fitted curve, where quality halves, and the weights per
decile.

examples:
  drift schedule recommend runs/toy --out schedule.json
  drift schedule recommend runs/x --probe runs/x/probe --gamma 0.5 --out runs/x/schedule.json
  drift schedule show runs/x/schedule.json --format verl
"""


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    from drift.config import add_config_arguments
    from drift.schedules.recommend import RecommendConfig

    p = sub.add_parser("recommend", help="recommend a schedule from a dataset (and its probe), with a rationale",
                       description=RECOMMEND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="a drift dataset folder")
    add_config_arguments(p, RecommendConfig, exclude=("dataset",))
    p.set_defaults(func=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    from drift.config import config_from_namespace
    from drift.schedules.recommend import RecommendConfig, recommend_from_config

    cfg = config_from_namespace(RecommendConfig, args)
    rec, out, sidecar = recommend_from_config(cfg)
    print(rec.report())
    print()
    for target in ("verl", "trl", "tinker"):
        try:
            result = export(rec.schedule, target)
            print(f"{target}: exports exactly" if result.exact else f"{target}: approximate export")
        except DriftError as exc:
            print(f"{target}: no equivalent ({str(exc).splitlines()[0]})")
    print(f"\nwrote {out} and {sidecar}")
    return 0
