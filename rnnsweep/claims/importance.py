"""Which hyperparameters matter, per task, from one large random sweep each.

Two measures over the completed trials (diverged ones left out, and
counted):

- **fANOVA** (Hutter et al. 2014) through Optuna's
  ``FanovaImportanceEvaluator`` on the sweep exported as a study
  (:func:`rnnsweep.interop.export_optuna`): the share of the metric's
  variance a random forest attributes to each parameter alone. Needs the
  ``optuna`` extra.
- **eta squared** (the correlation ratio), written here with no model: the
  variance of the metric's mean across :data:`BINS` equal-count bins of the
  parameter (each value of a choice its own bin) over the metric's total
  variance. A first-order, model-free cross-check.

Writes ``importance.csv`` (task, parameter, fanova, eta_squared) and
``importance.png`` (one panel per task).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from rnnsweep import interop
from rnnsweep import runner
from rnnsweep import space as space_lib
from rnnsweep.claims import common
from rnnsweep.tasks import make_task

BINS = 4
COLUMNS = ("task", "parameter", "fanova", "eta_squared", "trials",
           "diverged")


def search_space(quick: bool, hidden_size: int | None = None
                 ) -> space_lib.Space:
  shapes = (common.QUICK_SHAPES if quick
            else {"hidden_size": hidden_size or 64})
  return space_lib.Space({
      **shapes,
      "cell": space_lib.Choice(["lstm", "gru"]),
      "learning_rate": space_lib.LogUniform(1e-4, 1e-1),
      "output_dropout": space_lib.Uniform(0.0, 0.5),
      "recurrent_dropout": space_lib.Uniform(0.0, 0.5),
      "grad_clip": space_lib.Uniform(0.1, 5.0),
      "beta1": space_lib.Uniform(0.5, 0.99),
      "weight_decay": space_lib.Uniform(0.0, 1e-3)})


def tasks(quick: bool) -> dict[str, Callable[[], Any]]:
  """The tasks measured, as factories (built only when chosen): quick:
  the tiny LM and a short adding problem; full: LM, adding, classify
  (digits) and forecast (sunspots)."""
  if quick:
    return {"lm": lambda: common.lm_task(True),
            "adding": lambda: make_task("adding", seq_len=12, num_val=64)}
  return {"lm": lambda: common.lm_task(False),
          "adding": lambda: make_task("adding"),
          "classify": lambda: make_task("classify"),
          "forecast": lambda: make_task("forecast")}


def eta_squared(values: Sequence[Any], metric: Sequence[float]) -> float:
  """The correlation ratio of ``metric`` on ``values`` (see the module
  docstring); 0 when the metric does not vary."""
  y = np.asarray(metric, np.float64)
  total = float(np.var(y))
  if len(y) < 2 or total == 0.0:
    return 0.0
  numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in values)
  if numeric and len(set(values)) > BINS:
    order = np.argsort(np.asarray(values, np.float64), kind="stable")
    labels = np.empty(len(y), np.int64)
    for b, idx in enumerate(np.array_split(order, BINS)):
      labels[idx] = b
  else:
    keys = {v: i for i, v in enumerate(dict.fromkeys(values))}
    labels = np.asarray([keys[v] for v in values])
  between = sum(np.sum(labels == b) * (y[labels == b].mean() - y.mean()) ** 2
                for b in np.unique(labels)) / len(y)
  return float(between / total)


def run(workdir: str, *, quick: bool = False, num_trials: int | None = None,
        steps: int | None = None, hidden_size: int | None = None,
        task_names: Sequence[str] | None = None,
        max_group_size: int | str = "auto",
        seed: int = 0, log: Callable[[str], None] | None = None
        ) -> list[dict[str, Any]]:
  """A random sweep per task (continuing any in ``workdir``), then both
  importance measures; writes the table and figure, returns the rows."""
  num_trials = num_trials or (16 if quick else 128)
  steps = steps or (8 if quick else 300)
  chosen = tasks(quick)
  names = common.chosen_tasks(task_names, list(chosen))
  os.makedirs(workdir, exist_ok=True)
  rows = []
  for name in names:
    task = chosen[name]()
    sub = os.path.join(workdir, name)
    if log is not None:
      log(f"importance: {num_trials} random trials on {name}")
    result = runner.sweep(
        task, search_space(quick, hidden_size), num_trials=num_trials,
        steps=steps,
        eval_every=max(1, steps // 4), max_group_size=max_group_size,
        seed=seed, workdir=sub)
    done = [r for r in result.trials if r.status == "completed"
            and r.best_value is not None]
    diverged = sum(r.status == "diverged" for r in result.trials)
    fanova = _fanova(sub)
    for param in result.tuned:
      rows.append({"task": name, "parameter": param,
                   "fanova": fanova.get(param),
                   "eta_squared": eta_squared([r.params[param] for r in done],
                                              [r.best_value for r in done]),
                   "trials": len(done), "diverged": diverged})
  common.write_table(os.path.join(workdir, "importance.csv"), rows, COLUMNS)
  plot(os.path.join(workdir, "importance.png"), rows)
  return rows


def _fanova(workdir: str) -> dict[str, float]:
  """fANOVA importances of a finished sweep (empty without Optuna)."""
  try:
    import optuna  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}
  study = interop.export_optuna(
      workdir, "sqlite:///" + os.path.abspath(os.path.join(workdir,
                                                           "importance.db")))
  return dict(optuna.importance.get_param_importances(
      study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))


def plot(path: str, rows) -> None:
  names = list(dict.fromkeys(r["task"] for r in rows))
  fig = common.figure(4.2 * len(names), 4.2)
  for i, task in enumerate(names):
    ax = fig.add_subplot(1, len(names), i + 1)
    mine = sorted((r for r in rows if r["task"] == task),
                  key=lambda r: -(r["fanova"] or r["eta_squared"] or 0))
    y = np.arange(len(mine))
    ax.barh(y - 0.2, [r["fanova"] or 0 for r in mine], height=0.4,
            label="fANOVA")
    ax.barh(y + 0.2, [r["eta_squared"] for r in mine], height=0.4,
            label="eta squared")
    ax.set_yticks(y)
    ax.set_yticklabels([r["parameter"] for r in mine], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of variance")
    ax.set_title(f"{task} ({mine[0]['trials'] if mine else 0} trials)",
                 fontsize=10)
    if i == 0:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
