"""What every claim experiment shares: the task at quick or full size, the
choice of tasks, the CSV table, and figure setup."""

from __future__ import annotations

import csv
import os
from typing import Any, Mapping, Sequence

from rnnsweep.tasks.lm import CharLM, python_docs_text

#: Quick mode's shapes: the test suite's tiny LM, so a smoke test compiles
#: (almost) nothing the other tests have not.
QUICK_SHAPES = {"hidden_size": 16, "embed_size": 8, "batch_size": 4,
                "truncation": 8}
QUICK_TEXT_CHARS = 40_000


def lm_task(quick: bool) -> CharLM:
  """The LM task: the full Python documentation text with 128-character
  sequences, or (quick) its first 40k characters with 16."""
  if quick:
    return CharLM(seq_len=16, text=python_docs_text()[:QUICK_TEXT_CHARS])
  return CharLM()


def chosen_tasks(task_names: Sequence[str] | None,
                 available: Sequence[str]) -> list[str]:
  """The tasks of ``available`` (in its order) named in ``task_names``, or
  all of them when it is empty.

  Raises:
    ValueError: one line naming the unknown tasks.
  """
  unknown = sorted(set(task_names or ()) - set(available))
  if unknown:
    raise ValueError(f"tasks must be among {sorted(available)}, got "
                     f"{unknown}")
  return [t for t in available if not task_names or t in task_names]


def write_table(path: str, rows: Sequence[Mapping[str, Any]],
                columns: Sequence[str]) -> None:
  """Writes ``rows`` as CSV with exactly ``columns`` (atomically)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(columns))
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c) for c in columns})
  os.replace(tmp, path)


def figure(width: float = 6.0, height: float = 4.5):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height), dpi=100)
