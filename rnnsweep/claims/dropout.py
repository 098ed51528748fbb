"""Dropout done right: where dropout goes, and variational against naive
recurrent dropout (Gal & Ghahramani 2016).

A character LSTM trained on a small slice of the Python documentation text
(the first 20,000 characters: 18,000 to train on) overfits within a few
hundred updates: its validation loss turns upward while its training loss
keeps falling. The experiment trains that model with dropout of one kind at
a time (input, recurrent or output) at growing rates, and recurrent dropout
in both modes: **variational** (one mask per sequence, reused at every
step) and **naive** (a new mask every time step).

The training metric is measured the way validation is, without dropout: the
task here (:class:`TrainProbeLM`) replaces the held-out test split with a
probe of the training text (its first stretch, as long as the validation
split), and rnnsweep evaluates each trial's best-validation parameters on
it once. So for every trial the table has the validation metric at its best
(``best_val``), the training text's metric at the same parameters
(``train_probe``), their gap, and how far validation rose after its best by
the last step (``rise_after_best``: the overfitting dropout should stop).
Every configuration of a repetition shares one trial seed (the same initial
weights, and the same input and output masks), so the comparisons are
paired.

``final_train_loss`` is the training loss over the last segment, with
dropout, in the task's loss units (nats for the LM; the other columns are
bits per character).

Writes ``dropout.csv`` (one row per configuration and seed),
``dropout_summary.csv`` (medians per configuration), ``dropout.png``
(validation, training probe and final validation against each kind's rate)
and ``naive_vs_variational.png``.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from typing import Any, Callable, Sequence

from rnnsweep import runner
from rnnsweep import samplers
from rnnsweep.claims import common
from rnnsweep.tasks.base import TaskData
from rnnsweep.tasks.lm import CharLM, python_docs_text

KINDS = ("input", "recurrent", "output")
MODES = ("variational", "naive")
#: Characters of the documentation text the full-size run trains on.
FULL_TEXT_CHARS = 20_000
FULL_SHAPES = {"hidden_size": 128, "embed_size": 32, "batch_size": 32,
               "truncation": 64}
FULL_LEARNING_RATE = 1e-2
COLUMNS = ("kind", "mode", "rate", "seed", "status", "best_val", "best_step",
           "final_val", "train_probe", "gap", "rise_after_best",
           "final_train_loss")
SUMMARY_COLUMNS = ("kind", "mode", "rate", "seeds", "best_val", "train_probe",
                   "gap", "final_val", "rise_after_best")


class TrainProbeLM(CharLM):
  """:class:`~rnnsweep.tasks.lm.CharLM` whose "test" split is a probe of the
  training text (its first ``len(validation)`` characters), so the test
  metrics rnnsweep records at each trial's best-validation parameters are
  the training metric without dropout. Not for model selection: it has no
  held-out test set."""

  name = "lm_train_probe"

  @functools.cached_property
  def _probe_data(self) -> TaskData:
    data = super().data()
    return data._replace(
        test=self._chunks(self.train_ids[:len(self.val_ids)]))

  def data(self) -> TaskData:
    return self._probe_data

  def config(self) -> dict[str, Any]:
    return {**super().config(), "test": "training-text probe"}


def rates(quick: bool) -> list[float]:
  """Dropout rates each kind is tried at (0: the shared baseline)."""
  return [0.0, 0.5] if quick else [0.0, 0.15, 0.3, 0.45, 0.6]


def configurations(rate_values: Sequence[float]) -> list[dict[str, Any]]:
  """``(kind, mode, rate)`` rows: the baseline (rate 0, ``kind`` ``none``),
  each kind alone at every other rate, and naive recurrent dropout at every
  other rate."""
  nonzero = [r for r in rate_values if r > 0]
  out = [{"kind": "none", "mode": "variational", "rate": 0.0}]
  out += [{"kind": k, "mode": "variational", "rate": r}
          for k in KINDS for r in nonzero]
  out += [{"kind": "recurrent", "mode": "naive", "rate": r} for r in nonzero]
  return out


def params_of(c: dict[str, Any]) -> dict[str, Any]:
  """The hyperparameters one configuration sets."""
  out = {"recurrent_dropout_mode": c["mode"]}
  if c["kind"] != "none":
    out[f"{c['kind']}_dropout"] = c["rate"]
  return out


def task_for(quick: bool) -> TrainProbeLM:
  if quick:
    return TrainProbeLM(
        seq_len=16, text=python_docs_text()[:common.QUICK_TEXT_CHARS])
  return TrainProbeLM(seq_len=FULL_SHAPES["truncation"],
                      text=python_docs_text()[:FULL_TEXT_CHARS])


def run(workdir: str, *, quick: bool = False, seeds: int | None = None,
        steps: int | None = None, rate_values: Sequence[float] | None = None,
        hidden_size: int | None = None, max_group_size: int | str = "auto",
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Trains one sweep per seed (continuing any in ``workdir``), writes the
  tables and figures, returns the summary rows."""
  seeds = seeds or (1 if quick else 3)
  steps = steps or (8 if quick else 800)
  rate_values = sorted({0.0, *(rate_values or rates(quick))})
  if any(not 0 <= r < 1 for r in rate_values):
    raise ValueError(f"--rates must be in [0, 1), got {rate_values}")
  task = task_for(quick)
  shapes = dict(common.QUICK_SHAPES if quick else FULL_SHAPES)
  if hidden_size:
    shapes["hidden_size"] = hidden_size
  base = {**shapes, "cell": "lstm", "learning_rate": FULL_LEARNING_RATE}
  configs = configurations(rate_values)
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for seed in range(seeds):
    trial_seed = samplers.derive_seed(seed, 0)
    result = runner.run_trials(
        task, [{**base, **params_of(c), "seed": trial_seed} for c in configs],
        steps=steps, eval_every=max(1, steps // 20),
        max_group_size=max_group_size, seed=seed,
        workdir=os.path.join(workdir, f"seed{seed}"), log=log)
    # Trial ids follow the configurations' order.
    for c, r in zip(configs, sorted(result.trials, key=lambda r: r.trial_id)):
      rows.append(_row(c, seed, r, task.selection_metric))
  summary = summarise(rows)
  common.write_table(os.path.join(workdir, "dropout.csv"), rows, COLUMNS)
  common.write_table(os.path.join(workdir, "dropout_summary.csv"), summary,
                     SUMMARY_COLUMNS)
  plot_kinds(os.path.join(workdir, "dropout.png"), summary,
             task.selection_metric, steps)
  plot_modes(os.path.join(workdir, "naive_vs_variational.png"), rows,
             summary, task.selection_metric)
  return summary


def _finite(v) -> float | None:
  return v if v is not None and math.isfinite(v) else None


def _row(c: dict[str, Any], seed: int, r, metric: str) -> dict[str, Any]:
  vals = [_finite(v) for v in r.curves.get(f"val/{metric}", [])]
  losses = [_finite(v) for v in r.curves.get("train_loss", [])]
  probe = _finite(r.test_metrics.get(metric))
  best = _finite(r.best_value)
  final = vals[-1] if vals else None
  return {**c, "seed": seed, "status": r.status, "best_val": best,
          "best_step": r.best_step, "final_val": final, "train_probe": probe,
          "gap": best - probe if best is not None and probe is not None
          else None,
          "rise_after_best": final - best if final is not None
          and best is not None else None,
          "final_train_loss": losses[-1] if losses else None}


def _median(rows, column):
  vals = [r[column] for r in rows if r[column] is not None]
  return statistics.median(vals) if vals else None


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Medians over seeds per ``(kind, mode, rate)``, in table order."""
  out = []
  keys = list(dict.fromkeys((r["kind"], r["mode"], r["rate"]) for r in rows))
  for kind, mode, rate in keys:
    mine = [r for r in rows
            if (r["kind"], r["mode"], r["rate"]) == (kind, mode, rate)]
    out.append({"kind": kind, "mode": mode, "rate": rate, "seeds": len(mine),
                **{c: _median(mine, c) for c in SUMMARY_COLUMNS[4:]}})
  return out


def curve(summary, kind: str, mode: str = "variational"):
  """One kind's summary rows by rate, the baseline first (rate 0)."""
  base = [r for r in summary if r["kind"] == "none"]
  mine = [r for r in summary if r["kind"] == kind and r["mode"] == mode]
  return base + sorted(mine, key=lambda r: r["rate"])


def plot_kinds(path: str, summary, metric: str, steps: int) -> None:
  fig = common.figure(12, 4.2)
  axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
  for ax, kind in zip(axes, KINDS):
    pts = curve(summary, kind)
    x = [r["rate"] for r in pts]
    for column, style, label in (
        ("best_val", "o-", "validation at its best"),
        ("train_probe", "s:", "training text, same parameters"),
        ("final_val", "^--", f"validation after {steps} steps")):
      ax.plot(x, [r[column] if r[column] is not None else math.nan
                  for r in pts], style, label=label)
    ax.set_xlabel(f"{kind} dropout rate")
    ax.set_title(f"{kind} dropout (variational)", fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f"{metric} (median over seeds)")
  axes[0].legend(fontsize=8)
  fig.suptitle("Dropout against overfitting: the gap between training and "
               "validation, and the rise after the best", fontsize=10)
  fig.tight_layout()
  fig.savefig(path)


def plot_modes(path: str, rows, summary, metric: str) -> None:
  fig = common.figure(10, 4.2)
  left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
  for mode, color in zip(MODES, ("tab:blue", "tab:red")):
    pts = curve(summary, "recurrent", mode)
    x = [r["rate"] for r in pts]
    mine = [r for r in rows if r["kind"] == "none" or (
        r["kind"] == "recurrent" and r["mode"] == mode)]
    left.scatter([r["rate"] for r in mine if r["best_val"] is not None],
                 [r["best_val"] for r in mine if r["best_val"] is not None],
                 color=color, alpha=0.35, s=14)
    left.plot(x, [r["best_val"] if r["best_val"] is not None else math.nan
                  for r in pts], "o-", color=color, label=mode)
    right.plot(x, [r["gap"] if r["gap"] is not None else math.nan
                   for r in pts], "o-", color=color, label=mode)
  left.set_ylabel(f"best validation {metric} (dots: seeds)")
  right.set_ylabel(f"validation - training {metric} at the best")
  for ax in (left, right):
    ax.set_xlabel("recurrent dropout rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle("Recurrent dropout: one mask per sequence (variational) "
               "against a new mask every step (naive)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
