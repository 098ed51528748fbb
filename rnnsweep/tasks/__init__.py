"""Tasks: data, loss and metrics. ``make_task(name, **options)`` builds one."""

from __future__ import annotations

from typing import Any

from rnnsweep.tasks.adding import Adding
from rnnsweep.tasks.base import Batch, Task, TaskData, eval_batches
from rnnsweep.tasks.lm import CharLM

TASKS: dict[str, type[Task]] = {"lm": CharLM, "adding": Adding}


def make_task(name: str, **options: Any) -> Task:
  """Builds a registered task by name; unknown names or options are errors."""
  if name not in TASKS:
    raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
  try:
    return TASKS[name](**options)
  except TypeError as e:
    raise ValueError(f"task {name!r}: {e}") from None


__all__ = ["Adding", "Batch", "CharLM", "TASKS", "Task", "TaskData",
           "eval_batches", "make_task"]
