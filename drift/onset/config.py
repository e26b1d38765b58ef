"""Config of the onset detector: :class:`OnsetConfig` (``drift onset``). Method: :mod:`drift.onset.detect`."""

from __future__ import annotations

from dataclasses import dataclass

from drift.config import Checks, opt
from drift.onset.detect import SIGNALS

__all__ = ["IF_EXISTS", "OnsetConfig"]

IF_EXISTS: tuple[str, ...] = ("fail", "overwrite")


@dataclass(frozen=True)
class OnsetConfig:
    """``drift onset``: per rollout, the first position where it leaves the teacher's support (CUSUM)."""

    dataset: str = opt("", "the drift dataset (a folder written by drift collect / score / import)")
    out: str | None = opt(None, "output folder for onsets.parquet, summary.json, config.json (default: "
                                "DATASET/onset)")
    signal: str = opt("surprisal", "per-token surprise: surprisal = -teacher_logprob (any support with a teacher), "
                                   "rank = log(1 + teacher_rank) (full/topk), excess = surprisal - teacher_entropy "
                                   "(full)", choices=SIGNALS)
    k: float | None = opt(None, "CUSUM reference value in signal units (default: calibrated, "
                                "max(k_min, k_quantile of the in-support tokens))")
    h: float | None = opt(None, "CUSUM threshold in signal units (default: calibrated, max(h_min, the 1 - alpha "
                                "quantile of the null rollouts' max statistic))")
    k_quantile: float = opt(0.95, "quantile of the in-support signal that sets k")
    k_min: float = opt(1.0, "floor of a calibrated k (signal units)")
    h_min: float = opt(4.0, "floor of a calibrated h (signal units; 4 nats = 55:1 evidence)")
    alpha: float = opt(0.05, "target share of alarms among simulated null rollouts (sets a calibrated h)")
    robust_z: float = opt(3.0, "calibration round 0: k = median + robust_z * 1.4826 * MAD of all tokens")
    n_null: int = opt(2000, "null rollouts simulated per calibration round")
    rounds: int = opt(5, "most calibration rounds (the reference is re-estimated from each round's onsets)")
    seed: int = opt(0, "seed of the null simulation (same seed, same thresholds)")
    if_exists: str = opt("fail", "when OUT already holds onset outputs: fail or overwrite", choices=IF_EXISTS)

    def __post_init__(self) -> None:
        c = Checks("OnsetConfig")
        c.check(bool(self.dataset), "dataset is required: the folder written by `drift collect`/`drift score`")
        c.choice("signal", self.signal, SIGNALS)
        c.check(self.k is None or self.k >= 0, f"k must be >= 0 (signal units), got {self.k}")
        c.check(self.h is None or self.h > 0, f"h must be > 0 (signal units), got {self.h}")
        c.check(0.5 <= self.k_quantile < 1, f"k_quantile must be in [0.5, 1), got {self.k_quantile}")
        c.check(self.k_min >= 0, f"k_min must be >= 0, got {self.k_min}")
        c.positive("h_min", self.h_min)
        c.check(0 < self.alpha < 0.5, f"alpha must be in (0, 0.5), got {self.alpha}")
        c.check(self.robust_z >= 0, f"robust_z must be >= 0, got {self.robust_z}")
        c.check(isinstance(self.n_null, int) and self.n_null >= 100,
                f"n_null must be an integer >= 100 (it sets a 1 - alpha quantile), got {self.n_null!r}")
        c.check(isinstance(self.rounds, int) and self.rounds >= 1, f"rounds must be an integer >= 1, got "
                f"{self.rounds!r}")
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.raise_if_any()

    def calibration_kwargs(self) -> dict[str, float | int | None]:
        """The keyword arguments of :func:`drift.onset.detect.calibrate` this config sets."""
        return {"k": self.k, "h": self.h, "k_quantile": self.k_quantile, "k_min": self.k_min, "h_min": self.h_min,
                "alpha": self.alpha, "robust_z": self.robust_z, "n_null": self.n_null, "rounds": self.rounds,
                "seed": self.seed}
