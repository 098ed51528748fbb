"""Tasks: data, loss and metrics. ``make_task(name, **options)`` builds one."""

from __future__ import annotations

import inspect
from typing import Any

from rnnsweep.tasks.adding import Adding
from rnnsweep.tasks.base import Batch, Task, TaskData, eval_batches
from rnnsweep.tasks.copy import Copy
from rnnsweep.tasks.lm import CharLM
from rnnsweep.tasks.sequences import Classify, Forecast

TASKS: dict[str, type[Task]] = {"lm": CharLM, "adding": Adding, "copy": Copy,
                                "forecast": Forecast, "classify": Classify}


def make_task(name: str, **options: Any) -> Task:
  """Builds a registered task by name; unknown names or options are errors."""
  if name not in TASKS:
    raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
  accepted = [p for p in inspect.signature(TASKS[name]).parameters
              if p != "text"]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"task {name!r} has no option {unknown[0]!r}; its "
                     f"options: {', '.join(accepted)}")
  return TASKS[name](**options)


__all__ = ["Adding", "Batch", "CharLM", "Classify", "Copy", "Forecast",
           "TASKS", "Task", "TaskData", "eval_batches", "make_task"]
