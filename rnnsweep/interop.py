"""Export a sweep to Optuna storage and to TensorBoard logs.

Both read the workdir's database, so they work on a finished sweep and on
one still running (unfinished trials are exported as running / waiting).
Each needs an optional extra: ``pip install 'rnnsweep[optuna]'`` or
``'rnnsweep[tensorboard]'``; the core never imports them.

- :func:`export_optuna` writes a study to any Optuna RDB storage URL (e.g.
  ``sqlite:///study.db``), so ``optuna-dashboard`` and ``optuna.visualization``
  work on an rnnsweep sweep: tuned parameters with their distributions, the
  best validation value as the trial's value, every validation point as an
  intermediate value, the rest as user attributes.
- :func:`export_tensorboard` writes one run per trial (training loss and
  validation metrics per step) plus an HParams summary, with tensorboardX
  (``flax.metrics.tensorboard`` needs TensorFlow).
"""

from __future__ import annotations

import math
import os
from typing import Any

from rnnsweep import space as space_lib
from rnnsweep.report import axes_for
from rnnsweep.store import Store, TrialResult

_STATE_OF = {"completed": "COMPLETE", "diverged": "FAIL", "pruned": "PRUNED",
             "failed": "FAIL", "running": "RUNNING", "pending": "WAITING"}


def _need(module: str, extra: str):
  try:
    return __import__(module)
  except ImportError:
    raise ValueError(f"this export needs the optional package {module!r}: "
                     f"pip install 'rnnsweep[{extra}]'") from None


def _open(workdir: str) -> Store:
  store = Store(workdir)
  if not store.exists():
    raise ValueError(f"workdir {workdir!r} holds no sweep ({store.db_path} "
                     f"does not exist)")
  return store


def _distributions(optuna, results, unfinished, space_json):
  """Optuna distributions for the tuned parameters."""
  space = space_lib.space_from_json(space_json) if space_json else None
  out = {}
  for axis in axes_for([r.params for r in results] + unfinished,
                       space_json):
    dist = space.params.get(axis.name) if space is not None else None
    if axis.categories is not None:
      out[axis.name] = optuna.distributions.CategoricalDistribution(
          list(axis.categories))
    elif isinstance(dist, space_lib.IntUniform):
      out[axis.name] = optuna.distributions.IntDistribution(
          dist.lo, dist.hi, log=dist.log)
    elif isinstance(dist, space_lib.Choice):
      out[axis.name] = optuna.distributions.CategoricalDistribution(
          list(dist.values))
    else:
      lo, hi = axis.bounds
      out[axis.name] = optuna.distributions.FloatDistribution(
          lo, hi, log=axis.log)
  return out


def export_optuna(workdir: str, storage: str, study_name: str | None = None,
                  replace: bool = True):
  """Writes the sweep as an Optuna study; returns the study.

  Args:
    workdir: the sweep's workdir.
    storage: an Optuna storage URL, e.g. ``sqlite:///optuna.db``.
    study_name: default ``rnnsweep-<workdir folder name>``.
    replace: replace a study of that name (exports are derived data, so
      exporting a running sweep again refreshes it); ``False`` makes an
      existing study an error.
  """
  optuna = _need("optuna", "optuna")
  store = _open(workdir)
  settings = store.settings()
  results = store.results()
  unfinished = store.unfinished_trials()
  name = study_name or "rnnsweep-" + os.path.basename(
      os.path.normpath(workdir))
  try:
    existing = optuna.study.get_all_study_names(storage)
  except Exception as e:  # pylint: disable=broad-except
    # Optuna raises its storage backend's own errors (SQLAlchemy's for a
    # URL it cannot parse or reach).
    raise ValueError(f"Optuna storage {storage!r} cannot be opened: "
                     f"{str(e).splitlines()[0]}") from None
  if name in existing:
    if not replace:
      raise ValueError(f"Optuna storage already has a study {name!r}")
    optuna.delete_study(study_name=name, storage=storage)
  metric = settings.get("selection_metric", "metric")
  direction = ("minimize" if settings.get("selection_mode", "min") == "min"
               else "maximize")
  study = optuna.create_study(study_name=name, storage=storage,
                              direction=direction)
  study.set_user_attr("rnnsweep_workdir", os.path.abspath(workdir))
  study.set_user_attr("selection_metric", metric)
  dists = _distributions(optuna, results, [p for _, p, _ in unfinished],
                         settings.get("space"))
  rows = [(r.trial_id, r) for r in results] + [
      (tid, (params, status)) for tid, params, status in unfinished]
  for tid, item in sorted(rows, key=lambda x: x[0]):
    if isinstance(item, TrialResult):
      params, status = item.params, item.status
    else:
      (params, status), item = item, None
    state = getattr(optuna.trial.TrialState, _STATE_OF[status])
    value = None
    if state == optuna.trial.TrialState.COMPLETE:
      value = item.best_value
    inter = {}
    attrs: dict[str, Any] = {"rnnsweep_trial_id": tid,
                             "rnnsweep_status": status,
                             "seed": params.get("seed")}
    if item is not None:
      key = f"val/{metric}"
      inter = {int(s): float(v) for s, v in zip(item.curves["step"],
                                                item.curves.get(key, []))
               if math.isfinite(v)}
      attrs.update(best_step=item.best_step,
                   final_metrics={k: v for k, v in item.final_metrics.items()
                                  if math.isfinite(v)},
                   group_id=item.group_id, diverged_step=item.diverged_step,
                   stopped_step=item.stopped_step)
      if item.lineage:
        attrs["pbt_lineage"] = [
            {"step": e["step"], "parent": e["parent"], "hp": e["hp"]}
            for e in item.lineage]
    attrs["fixed_params"] = {k: v for k, v in params.items()
                             if k not in dists}
    study.add_trial(optuna.trial.create_trial(
        state=state, value=value,
        params={k: params[k] for k in dists},
        distributions=dists, user_attrs=attrs, intermediate_values=inter))
  return study


def export_tensorboard(workdir: str, logdir: str | None = None) -> str:
  """Writes TensorBoard event files; returns the log directory.

  One run per finished trial, ``trial_00042``, with ``train_loss`` and
  ``val/<metric>`` scalars per step, and an HParams summary of the tuned
  parameters against every final validation metric.
  """
  tbx = _need("tensorboardX", "tensorboard")
  store = _open(workdir)
  settings = store.settings()
  results = store.results()
  logdir = logdir or os.path.join(workdir, "tensorboard")
  tuned = [a.name for a in axes_for([r.params for r in results],
                                    settings.get("space"))]
  for r in results:
    run = os.path.join(logdir, f"trial_{r.trial_id:05d}")
    with tbx.SummaryWriter(run) as w:
      for name, values in r.curves.items():
        if name == "step":
          continue
        for step, v in zip(r.curves["step"], values):
          if math.isfinite(v):
            w.add_scalar(name, v, step)
      hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                 for k, v in r.params.items() if k in tuned or k == "seed"}
      metrics = {f"hparam/{k}": v for k, v in r.final_metrics.items()
                 if math.isfinite(v)}
      if r.best_value is not None:
        metrics[f"hparam/best_{r.metric}"] = r.best_value
      w.add_hparams(hparams, metrics, name="hparams")
  return logdir
