"""Which value is better: the one rule for a ``min`` or ``max`` metric.

The engine (keeping each trial's best parameters), the runner (a trial's
best evaluation) and the report (ranking) all ask it here. The helpers work
on Python floats, NumPy and ``jnp`` arrays alike.
"""

from __future__ import annotations

import math
from typing import Any

MODES = ("min", "max")


def lower_is_better(value: Any, mode: str) -> Any:
  """``value`` turned so that lower is always better (negated for
  ``max``)."""
  if mode not in MODES:
    raise ValueError(f"selection mode must be 'min' or 'max', got {mode!r}")
  return value if mode == "min" else -value


def better(a: Any, b: Any, mode: str) -> Any:
  """Whether ``a`` is strictly better than ``b``."""
  return lower_is_better(a, mode) < lower_is_better(b, mode)


def worst(mode: str) -> float:
  """A value every finite value beats."""
  return lower_is_better(math.inf, mode)
