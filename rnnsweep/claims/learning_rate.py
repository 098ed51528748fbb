"""The learning rate: too small converges slowly, too large diverges.

The LM task trained for a fixed number of steps at learning rates spread
evenly in log space over several decades, for Adam and for SGD with
momentum 0.9, each repeated over seeds. Gradient clipping is off (it would
hide divergence). For each optimizer the table gives the validation metric
after the last step (and the best on the way) and two ranges: **stable**
(no seed went non-finite, and none ended more than
:data:`BLOWN_UP_MARGIN` worse than the smallest rate, which barely moves
from the untrained model: a run that ends worse than not training has
blown up even while its numbers stay finite) and
**useful** (median final metric within :data:`USEFUL_MARGIN` of the
optimizer's best).

Writes ``learning_rate.csv`` (one row per optimizer, rate and seed),
``ranges.csv`` (per optimizer) and ``learning_rate.png``.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, Callable, Sequence

import numpy as np

from rnnsweep import runner
from rnnsweep.claims import common

OPTIMIZERS = ({"optimizer": "adam"}, {"optimizer": "sgd", "momentum": 0.9})
USEFUL_MARGIN = 0.05
#: A run ending this much worse than the smallest rate's (relative) has
#: blown up; the margin keeps seed noise at the small end from counting.
BLOWN_UP_MARGIN = 0.05
COLUMNS = ("optimizer", "learning_rate", "seed", "status", "final_val",
           "best_val", "diverged_step")
RANGE_COLUMNS = ("optimizer", "best_learning_rate", "best_final_val",
                 "stable_lo", "stable_hi", "useful_lo", "useful_hi",
                 "unstable_from", "nonfinite_from")


def rates(quick: bool) -> list[float]:
  """Quick: 1e-4 .. 1 (5 values); full: 1e-5 .. 10, four per decade."""
  if quick:
    return [float(v) for v in np.geomspace(1e-4, 1.0, 5)]
  return [float(f"{v:.3g}") for v in np.geomspace(1e-5, 10.0, 25)]


def run(workdir: str, *, quick: bool = False, seeds: int | None = None,
        steps: int | None = None, learning_rates: Sequence[float] | None = None,
        hidden_size: int | None = None, max_group_size: int | str = "auto",
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Trains the sweeps (continuing any in ``workdir``), writes the tables
  and figure, returns the per-optimizer ranges."""
  seeds = seeds or (1 if quick else 3)
  steps = steps or (8 if quick else 300)
  lrs = list(learning_rates or rates(quick))
  task = common.lm_task(quick)
  shapes = (common.QUICK_SHAPES if quick
            else {"hidden_size": hidden_size or 64})
  configs = [{**shapes, "cell": "lstm", "grad_clip": 0.0, **opt,
              "learning_rate": lr} for opt in OPTIMIZERS for lr in lrs]
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for seed in range(seeds):
    result = runner.run_trials(
        task, configs, steps=steps, eval_every=max(1, steps // 4),
        max_group_size=max_group_size, seed=seed,
        workdir=os.path.join(workdir, f"seed{seed}"), log=log)
    for r in result.trials:
      final = r.curves[f"val/{r.metric}"][-1]
      rows.append({
          "optimizer": r.params["optimizer"],
          "learning_rate": r.params["learning_rate"], "seed": seed,
          "status": r.status,
          "final_val": None if r.status == "diverged" or final is None
          or not math.isfinite(final) else final,
          "best_val": r.best_value, "diverged_step": r.diverged_step})
  ranges = [stable_ranges(rows, opt["optimizer"]) for opt in OPTIMIZERS]
  common.write_table(os.path.join(workdir, "learning_rate.csv"), rows,
                     COLUMNS)
  common.write_table(os.path.join(workdir, "ranges.csv"), ranges,
                     RANGE_COLUMNS)
  plot(os.path.join(workdir, "learning_rate.png"), rows, ranges,
       task.selection_metric, steps)
  return ranges


def stable_ranges(rows: Sequence[dict[str, Any]], optimizer: str
                  ) -> dict[str, Any]:
  """The stable and useful learning rate ranges of one optimizer (see the
  module docstring); ``None`` ends where no rate qualifies."""
  mine = [r for r in rows if r["optimizer"] == optimizer]
  lrs = sorted({r["learning_rate"] for r in mine})
  at = {lr: [r for r in mine if r["learning_rate"] == lr] for lr in lrs}
  finite = {lr: [r["final_val"] for r in at[lr] if r["final_val"] is not None]
            for lr in lrs}
  untrained = (statistics.median(finite[lrs[0]])
               if lrs and finite[lrs[0]] else math.inf)
  stable = [lr for lr in lrs
            if len(finite[lr]) == len(at[lr]) and all(
                r["status"] != "diverged" for r in at[lr])
            and max(finite[lr]) <= untrained * (1 + BLOWN_UP_MARGIN)]
  med = {lr: statistics.median(finite[lr]) for lr in stable}
  best_lr = min(med, key=med.get) if med else None
  useful = ([lr for lr in stable
             if med[lr] <= med[best_lr] * (1 + USEFUL_MARGIN)]
            if best_lr is not None else [])
  nonfinite = [lr for lr in lrs if len(finite[lr]) < len(at[lr])]
  above = [lr for lr in lrs if best_lr is not None and lr > best_lr
           and lr not in stable]
  return {"optimizer": optimizer, "best_learning_rate": best_lr,
          "best_final_val": med.get(best_lr),
          "stable_lo": min(stable, default=None),
          "stable_hi": max(stable, default=None),
          "useful_lo": min(useful, default=None),
          "useful_hi": max(useful, default=None),
          "unstable_from": min(above, default=None),
          "nonfinite_from": min(nonfinite, default=None)}


def plot(path: str, rows, ranges, metric: str, steps: int) -> None:
  fig = common.figure(7, 4.8)
  ax = fig.add_subplot()
  finite = [r["final_val"] for r in rows if r["final_val"] is not None]
  smallest = min((r["learning_rate"] for r in rows), default=0.0)
  untrained = [r["final_val"] for r in rows if r["final_val"] is not None
               and r["learning_rate"] == smallest]
  # Blown-up runs would squash the plot: anything above the cap is drawn
  # on it as a triangle.
  cap = (max(untrained) * 1.25 if untrained
         else max(finite) * 1.05 if finite else 1.0)
  for (opt, color), rng in zip(zip([o["optimizer"] for o in OPTIMIZERS],
                                   ("tab:blue", "tab:orange")), ranges):
    mine = [r for r in rows if r["optimizer"] == opt]
    lrs = sorted({r["learning_rate"] for r in mine})
    med = []
    for lr in lrs:
      vals = [r["final_val"] for r in mine if r["learning_rate"] == lr
              and r["final_val"] is not None]
      med.append(statistics.median(vals) if vals else math.nan)
    label = opt + (" (momentum 0.9)" if opt == "sgd" else "")
    ax.plot(lrs, [min(m, cap) for m in med], "o-", color=color, label=label)
    over = [(lr, m) for lr, m in zip(lrs, med) if not m <= cap]
    if over:
      ax.scatter([lr for lr, _ in over], [cap] * len(over), marker="^",
                 color=color, s=60, zorder=3,
                 label=f"{opt}: above {cap:.3g} (or non-finite)")
    if rng["useful_lo"] is not None:
      ax.axvspan(rng["useful_lo"], rng["useful_hi"], color=color, alpha=0.1)
    if rng["unstable_from"] is not None:
      ax.axvline(rng["unstable_from"], color=color, linestyle=":")
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel(f"val {metric} after {steps} steps (median over seeds)")
  ax.set_title("Too small converges slowly, too large blows up\n(shaded: "
               "within 5% of the best; dotted: blows up from here)",
               fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
