"""Gated cells and long lags: SimpleRNN vs LSTM vs GRU on the adding problem
and the copy task as the lag grows (Hochreiter & Schmidhuber 1997; Cho et
al. 2014).

Each cell gets the same tuning budget: the same random (learning rate,
gradient clip) points, drawn from the seed, trained with full BPTT (the
tasks' default truncation is the whole sequence). A trial *succeeds* when
its held-out test metric passes the task's threshold (:data:`THRESHOLDS`:
the adding problem's mean squared error below 0.05, against 0.167 for
always answering 1; the copy task's accuracy above 0.9, against 1/8 by
chance). The table has, per task, lag and cell, the share of trials that
succeeded and the test metric of the trial that validation picks.

Writes ``gated_cells.csv`` and ``gated_cells.png`` (success rate vs lag,
one panel per task).
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Callable, Sequence

import numpy as np

from rnnsweep import report
from rnnsweep import runner
from rnnsweep import samplers
from rnnsweep import space as space_lib
from rnnsweep.claims import common
from rnnsweep.tasks import make_task

CELLS = ("simple", "lstm", "gru")
#: task -> (test metric, passes(value) description, passes).
THRESHOLDS = {"adding": ("mse", "mse < 0.05", lambda v: v < 0.05),
              "copy": ("accuracy", "accuracy > 0.9", lambda v: v > 0.9)}
COLUMNS = ("task", "lag", "cell", "trials", "succeeded", "success_rate",
           "selected_test", "selected_learning_rate", "selected_grad_clip")

TUNED = space_lib.Space({"learning_rate": space_lib.LogUniform(1e-4, 3e-2),
                         "grad_clip": space_lib.LogUniform(0.1, 10.0)})


def run(workdir: str, *, quick: bool = False,
        lags: Sequence[int] | None = None, budget: int | None = None,
        seeds: int | None = None, steps: int | None = None,
        hidden_size: int | None = None, max_group_size: int | str = "auto",
        task_names: Sequence[str] | None = None,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Trains every (task, lag) sweep (continuing any in ``workdir``),
  writes the table and figure, returns the rows. ``task_names``: some of
  :data:`THRESHOLDS` (default: both)."""
  names = common.chosen_tasks(task_names, list(THRESHOLDS))
  lags = tuple(lags or ((5, 10) if quick else (10, 50, 100, 200)))
  budget = budget or (3 if quick else 16)
  seeds = seeds or (1 if quick else 3)
  steps = steps or (8 if quick else 1000)
  hidden = hidden_size or (16 if quick else 64)
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for task_name in names:
    for lag in lags:
      task = make_task(task_name, seq_len=lag, num_val=256)
      trials = []
      for seed in range(seeds):
        points = samplers.random(TUNED, budget, seed=seed)
        configs = [{"cell": cell, "hidden_size": hidden, "batch_size": 32,
                    "learning_rate": p.params["learning_rate"],
                    "grad_clip": p.params["grad_clip"],
                    "seed": samplers.derive_seed(seed, i)}
                   for cell in CELLS for i, p in enumerate(points)]
        result = runner.run_trials(
            task, configs, steps=steps, eval_every=max(1, steps // 4),
            max_group_size=max_group_size, seed=seed,
            workdir=os.path.join(workdir, f"{task_name}-lag{lag}-seed{seed}"),
            log=log)
        trials += [(seed, r) for r in result.trials]
      for cell in CELLS:
        rows.append(_summary(task_name, lag, cell,
                             [(s, r) for s, r in trials
                              if r.params["cell"] == cell], task))
  common.write_table(os.path.join(workdir, "gated_cells.csv"), rows, COLUMNS)
  plot(os.path.join(workdir, "gated_cells.png"), rows)
  return rows


def _summary(task_name, lag, cell, trials, task) -> dict[str, Any]:
  metric, _, passes = THRESHOLDS[task_name]
  tests = [r.test_metrics.get(metric) for _, r in trials]
  ok = [t is not None and passes(t) for t in tests]
  # The trial validation picks, per seed; the table shows the median.
  picked = []
  for seed in sorted({s for s, _ in trials}):
    best = report.best([r for s, r in trials if s == seed],
                       task.selection_mode)
    if best is not None:
      picked.append(best)
  chosen = (sorted(picked, key=lambda r: r.test_metrics.get(metric, np.nan))
            [len(picked) // 2] if picked else None)
  return {"task": task_name, "lag": lag, "cell": cell, "trials": len(trials),
          "succeeded": sum(ok),
          "success_rate": sum(ok) / len(trials) if trials else 0.0,
          "selected_test": (statistics.median(
              r.test_metrics[metric] for r in picked
              if metric in r.test_metrics) if picked else None),
          "selected_learning_rate": chosen.params["learning_rate"]
          if chosen else None,
          "selected_grad_clip": chosen.params["grad_clip"] if chosen else None}


def plot(path: str, rows) -> None:
  tasks = [t for t in THRESHOLDS if any(r["task"] == t for r in rows)]
  fig = common.figure(5 * len(tasks), 4.2)
  for i, task_name in enumerate(tasks):
    ax = fig.add_subplot(1, len(tasks), i + 1)
    for cell, color in zip(CELLS, ("tab:red", "tab:blue", "tab:green")):
      mine = sorted((r for r in rows if r["task"] == task_name
                     and r["cell"] == cell), key=lambda r: r["lag"])
      ax.plot([r["lag"] for r in mine], [r["success_rate"] for r in mine],
              "o-", color=color, label=cell)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("lag (time steps)")
    ax.set_ylabel("share of tuning trials that succeed")
    ax.set_title(f"{task_name}: success = test {THRESHOLDS[task_name][1]}",
                 fontsize=10)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
