"""The runtime layer below every stage: loading models and tokenizers, rendering prompts, padding, devices.

collect, score, probe and train all go through these functions, so a fix here (a chat template applied by
default, a context-length check, a pad-id fallback) reaches every stage at once.
"""

from drift.runtime.padding import pad, pad_id_for

__all__ = ["pad", "pad_id_for"]
