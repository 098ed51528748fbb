"""Reading results: ranking trials and the printed leaderboard."""

from __future__ import annotations

import math
from typing import Sequence

from rnnsweep.store import TrialResult


def _key(mode: str):
  def key(r: TrialResult):
    v = r.best_value
    if v is None or not math.isfinite(v):
      return (1, 0.0, r.trial_id)
    return (0, v if mode == "min" else -v, r.trial_id)
  return key


def rank(results: Sequence[TrialResult], mode: str = "min"
         ) -> list[TrialResult]:
  """Completed trials, best first (ties broken by trial id)."""
  done = [r for r in results if r.status == "completed"
          and r.best_value is not None and math.isfinite(r.best_value)]
  return sorted(done, key=_key(mode))


def best(results: Sequence[TrialResult], mode: str = "min"
         ) -> TrialResult | None:
  ranked = rank(results, mode)
  return ranked[0] if ranked else None


def _fmt(v) -> str:
  if isinstance(v, float):
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
      return f"{v:.3e}"
    return f"{v:.4g}"
  return str(v)


def leaderboard(results: Sequence[TrialResult], *, mode: str = "min",
                columns: Sequence[str] = (), top: int = 10) -> str:
  """A plain-text table of the ``top`` completed trials.

  Args:
    results: every trial.
    mode: ``min`` or ``max`` for the selection metric.
    columns: parameter names to show (typically the tuned ones).
    top: rows.
  """
  ranked = rank(results, mode)[:top]
  metric = results[0].metric if results else "metric"
  counts: dict[str, int] = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
  header = ["rank", "trial", f"val {metric}", "step"] + list(columns)
  rows = [[str(i + 1), str(r.trial_id), _fmt(r.best_value), str(r.best_step)]
          + [_fmt(r.params.get(c, "")) for c in columns]
          for i, r in enumerate(ranked)]
  widths = [max(len(h), *(len(row[j]) for row in rows)) if rows else len(h)
            for j, h in enumerate(header)]
  lines = [f"Top {len(ranked)} of {len(results)} trials ({summary}); "
           f"{'lower' if mode == 'min' else 'higher'} is better",
           "  ".join(h.rjust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
  if not rows:
    lines.append("(no completed trial)")
  return "\n".join(lines)
