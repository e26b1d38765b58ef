"""Token-weight schedules for on-policy distillation: specs, weights, exports.

A schedule says how much each response token's OPD advantage A_t = log pi_T(y_t) - log pi_S(y_t)
counts. It is a small, frozen, JSON-serializable spec (``{"kind": "iw_opd", "gamma": 0.5, ...}``,
``"version": 1``) whose ``weights(advantage, mask, *, teacher_logprob=None, step=None,
total_steps=None)`` maps ``(batch, length)`` arrays to weights of the same shape; training multiplies
them into the *detached* advantage::

    from drift import schedules
    s = schedules.load({"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"})
    w = s.weights(advantage_B_L, mask_B_L)  # torch in -> torch out (no grad); numpy in -> numpy out
    loss = -(w * advantage_B_L * logprob_B_L).sum() / mask_B_L.sum()

Kinds (formulas and defaults from PAPER.md §5); L = the row's valid length, t = 0..L-1:

=================  =====================================================================================
``uniform``        w = 1 (plain OPD)
``prefix_mask``    w = 1[t < keep]; ``frac`` (Prefix-30) or annealed start_ratio -> end_ratio
``suffix_mask``    w = 1[t >= L - ceil(frac·L)] (Suffix-30)
``prefix_weight``  w = 1 + (multiplier - 1)·1[t < keep], keep = min(max(ceil(L·ratio), min_tokens), L)
``linear``         w = 1 + gamma·(1 - t/L)
``iw_opd``         w = 1 + gamma·clamp(1 - C_t/total, 0, 1), C_t = sum_{k<t} |A_k| (code | paper)
``teacher_conf``   w = max(exp(-alpha·Q_t), floor), Q_t = top-quantile teacher NLL of the window before t
``ideal_ratio``    w = exp(alpha·S_t), S_t = sum_{k<t} A_k; optional batch normalization and OPD blend
``pwopsd``         w = 0.25 + 0.75·sigmoid(((t + 0.5)/L - 0.3)/0.1)
``fitted``         a :mod:`drift.curves` family over relative or absolute position, normalized per row
``vector``         explicit weights per relative or absolute position bin
``shuffled``       a base schedule's row weights permuted over valid positions (negative control)
=================  =====================================================================================

Conventions: position t counts the *valid* tokens (mask = 1) before a token, so any padding side works;
the weight is **0 at every invalid position** (for every kind), so ``w * advantage`` is exactly the
training signal. The math runs once, in float64 torch; numpy input comes back as float64 numpy, torch
input keeps its dtype and device.

:func:`export` renders a schedule as verl IW-OPD-fork knobs, TRL ``IWOPDConfig`` kwargs, tinker-cookbook
keys or the plain JSON spec, and says plainly when a target has no equivalent; :func:`from_verl`,
:func:`from_trl` and :func:`from_tinker` read them back.
"""

from drift.schedules.base import SPEC_VERSION, Schedule
from drift.schedules.export import (
    STYLES,
    TARGETS,
    ExportResult,
    export,
    format_export,
    from_tinker,
    from_trl,
    from_verl,
)
from drift.schedules.iw import IdealRatio, IwOpd, TeacherConf
from drift.schedules.kinds import KINDS, Fitted, Linear, Pwopsd, Shuffled, Uniform, Vector, from_dict, load
from drift.schedules.masks import (
    PrefixMask,
    PrefixWeight,
    SuffixMask,
    anneal_progress,
    annealed_ratio,
    keep_count,
)

__all__ = [
    "KINDS",
    "SPEC_VERSION",
    "STYLES",
    "TARGETS",
    "ExportResult",
    "Fitted",
    "IdealRatio",
    "IwOpd",
    "Linear",
    "PrefixMask",
    "PrefixWeight",
    "Pwopsd",
    "Schedule",
    "Shuffled",
    "SuffixMask",
    "TeacherConf",
    "Uniform",
    "Vector",
    "anneal_progress",
    "annealed_ratio",
    "export",
    "format_export",
    "from_dict",
    "from_tinker",
    "from_trl",
    "from_verl",
    "keep_count",
    "load",
]
