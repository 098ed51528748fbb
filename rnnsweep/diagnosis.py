"""The manual tuning loop's judgement, automated.

A researcher tuning by hand reads the best trials' curves and decides the
next move: an overfitting model gets more dropout or fewer units, an
underfitting one more steps, more units or another learning rate, a
diverged one a smaller learning rate. :func:`diagnose` reads a trial's
training and validation curves and says which case it is (and why, in
numbers); :func:`next_move` turns the verdict into the configuration to
try next, and :func:`around_command` into a ready ``--around`` command,
whose space carries past its edge each range the best trials sat at the
edge of (:func:`widened_ranges`).
:func:`ofat_panels` and :func:`plot_ofat` draw a one-factor-at-a-time
sweep: one panel per parameter, the base point marked.

The rules (each threshold a module constant):

- **diverged**: the trial went non-finite.
- **overfits**: the validation metric got worse by more than
  :data:`WORSENING` (relative) after its best while the training loss kept
  falling; or, where a validation curve in the training loss's units
  exists (``cross_entropy``, ``mse``), validation ends more than
  :data:`GAP` (relative) above training.
- **underfits**: still improving at the end: the best evaluation is the
  last one and the last third of the run improved the validation metric by
  more than :data:`STILL_FALLING` (relative), training loss falling too.
- **fits**: none of these (validation flattened near its best; or still
  improving while training loss rose: no clear trend, said so).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from typing import Any, Mapping, Sequence

from rnnsweep import samplers
from rnnsweep import selection
from rnnsweep import space as space_lib
from rnnsweep.store import TrialResult

WORSENING = 0.05
GAP = 0.25
STILL_FALLING = 0.02
#: Validation curves measured in the same units as the training loss.
LOSS_CURVES = ("val/cross_entropy", "val/mse")
MAX_DROPOUT = 0.5


@dataclasses.dataclass(frozen=True)
class Diagnosis:
  """What a trial's curves say.

  Attributes:
    trial_id: the trial.
    kind: ``diverged``, ``overfits``, ``underfits`` or ``fits``.
    reason: the numbers behind the verdict, one line.
  """

  trial_id: int
  kind: str
  reason: str


def _finite(xs: Sequence[Any]) -> list[float]:
  return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def _rel(a: float, b: float) -> float:
  """How much ``a`` exceeds ``b``, relative to ``|b|``."""
  return (a - b) / max(abs(b), 1e-12)


def diagnose(result: TrialResult, mode: str) -> Diagnosis:
  """Reads one trial's curves (see the module docstring for the rules)."""
  tid = result.trial_id
  if result.status == "diverged":
    return Diagnosis(tid, "diverged",
                     f"non-finite loss or parameters at step "
                     f"{result.diverged_step}")
  steps = list(result.curves.get("step", []))
  val = list(result.curves.get(f"val/{result.metric}", []))
  train = list(result.curves.get("train_loss", []))
  if len(steps) < 2 or len(_finite(val)) < 2:
    return Diagnosis(tid, "fits", "too few evaluations to judge")
  # Lower is better from here on.
  low = [selection.lower_is_better(float(v), mode) for v in val]
  best_i = min(range(len(low)), key=lambda i: low[i])
  last = len(low) - 1
  train_falling = len(train) >= 2 and train[-1] < train[best_i]
  worse = _rel(low[-1], low[best_i])
  if best_i < last and worse > WORSENING and train_falling:
    return Diagnosis(
        tid, "overfits",
        f"validation {result.metric} worsened {worse:.0%} after its best at "
        f"step {steps[best_i]} while training loss fell from "
        f"{train[best_i]:.4g} to {train[-1]:.4g}")
  for key in LOSS_CURVES:
    vloss = result.curves.get(key)
    if vloss and train and vloss[-1] is not None and train[-1] > 0:
      gap = _rel(float(vloss[-1]), float(train[-1]))
      if gap > GAP:
        return Diagnosis(
            tid, "overfits",
            f"validation {key[4:]} {vloss[-1]:.4g} is {gap:.0%} above "
            f"training loss {train[-1]:.4g} at the end")
  third = max(0, last - max(1, len(low) // 3))
  gain = -_rel(low[-1], low[third])
  if best_i == last and gain > STILL_FALLING and (
      len(train) < 2 or train[-1] <= train[third]):
    return Diagnosis(
        tid, "underfits",
        f"still improving at the end: validation {result.metric} "
        f"{gain:.1%} better over steps {steps[third]}-{steps[-1]}")
  if best_i == last and gain > STILL_FALLING:
    # Validation still improving, training loss not falling: no clear
    # trend (noise, or a rate too high to settle) for either verdict.
    return Diagnosis(
        tid, "fits",
        f"no clear trend: validation {result.metric} {gain:.1%} better over "
        f"steps {steps[third]}-{steps[-1]} while training loss rose from "
        f"{train[third]:.4g} to {train[-1]:.4g}; a longer run would tell")
  if best_i == last:
    return Diagnosis(tid, "fits",
                     f"validation {result.metric} levelling off: "
                     f"{gain:.1%} better over steps "
                     f"{steps[third]}-{steps[-1]}")
  return Diagnosis(tid, "fits",
                   f"validation {result.metric} flattened near its best "
                   f"(step {steps[best_i]})")


def next_move(result: TrialResult, diagnosis: Diagnosis, steps: int
              ) -> tuple[dict[str, Any], int, str]:
  """The seed method's next manual move.

  Returns:
    ``(changes, steps, advice)``: the parameter values to change on the
    trial's configuration, the steps to train next, and one line saying
    what and why.
  """
  p = result.params
  changes: dict[str, Any] = {}
  if diagnosis.kind == "diverged":
    changes["learning_rate"] = float(f"{p['learning_rate'] * 0.3:.3g}")
    if not p.get("grad_clip"):
      changes["grad_clip"] = 1.0
    advice = "lower the learning rate (x0.3)" + (
        " and clip gradients" if "grad_clip" in changes else "")
    return changes, steps, advice
  if diagnosis.kind == "overfits":
    for name, add in (("output_dropout", 0.2), ("recurrent_dropout", 0.1)):
      if p.get(name, 0.0) < MAX_DROPOUT:
        changes[name] = round(min(MAX_DROPOUT, p.get(name, 0.0) + add), 3)
    if not changes:  # dropout spent: a smaller model
      changes["hidden_size"] = max(1, p["hidden_size"] // 2)
      return changes, steps, "fewer units (dropout is at its cap)"
    return changes, steps, ("more dropout (or fewer units: hidden_size "
                            f"{max(1, p['hidden_size'] // 2)})")
  if diagnosis.kind == "underfits":
    changes["hidden_size"] = p["hidden_size"] * 2
    return changes, steps * 2, ("train longer (steps x2) with more units; "
                                "then vary the learning rate around it")
  return changes, steps, ("vary one factor at a time around the best "
                          "trial's values")


def _short(v: Any) -> Any:
  return float(f"{v:.4g}") if isinstance(v, float) else v


def widened_ranges(space_json: Mapping[str, Any] | None,
                   edges: Sequence[tuple[str, str]]
                   ) -> dict[str, space_lib.Distribution]:
  """For each ``(name, side)`` where a sweep's best trials sat at an edge,
  the parameter's range carried past it (:func:`space.widened`); a range
  that cannot move (a rate already at 0) is left out."""
  if not space_json:
    return {}
  dists = space_lib.space_from_json(dict(space_json)).params
  out = {}
  for name, side in edges:
    if name in dists:
      wider = space_lib.widened(name, dists[name], side)
      if wider is not None:
        out[name] = wider
  return out


#: The script's flag for each recorded engine option and the value a
#: command may leave out: the default's, as a sweep records it off a GPU
#: (:meth:`rnnsweep.engine.EngineOptions.record` of the ``resolved``
#: defaults: ``auto`` options are recorded as chosen, so a GPU sweep's
#: bfloat16, unroll and recurrence are spelled out; this module does not
#: import the engine, so a test holds the two together).
ENGINE_FLAGS = {"compute_dtype": ("precision", "float32"),
                "unroll": ("unroll", 1), "donate": ("donate", False),
                "hoist_input": ("hoist_input", False),
                "recurrence": ("recurrence", "xla"),
                "trial_chunk": ("trial_chunk", "auto")}


def sweep_flags(settings: Mapping[str, Any]) -> list[str]:
  """The script's flags for a sweep's task (and its configuration), its
  data stream (``--seed``, where not 0) and how its programs were built
  (each engine option off its default), so a next sweep trains like it."""
  task_config = settings.get("task_config") or {}
  flags = [f"--task={settings.get('task')}"]
  for key in ("seq_len", "dataset", "data_path"):
    if task_config.get(key) is not None:
      flags.append(f"--{key}={shlex.quote(str(task_config[key]))}")
  if settings.get("seed"):
    flags.append(f"--seed={settings['seed']}")
  for key, value in (settings.get("engine") or {}).items():
    flag, default = ENGINE_FLAGS.get(key, (None, value))
    if value != default:
      flags.append((f"--{flag}" if value else f"--no{flag}")
                   if isinstance(value, bool) else f"--{flag}={value}")
  return flags


def seed_check_lines(settings: Mapping[str, Any], results_csv: str,
                     ranked: Sequence[TrialResult], top: int = 3,
                     seeds: int = 3) -> list[str]:
  """Where each configuration ran with one seed: how to tell the top
  trials' order from seed noise, as a ready command that trains them
  again from ``results_csv`` (its rows are a trials file) with
  ``seeds`` seeds each, the first repeating each trial's numbers."""
  best = list(ranked[:top])
  if len(best) < 2 or any(r.lineage for r in ranked):
    return []  # a PBT trial's row holds its starting values only
  ids = " || ".join(f"$1 == {r.trial_id}" for r in best)
  name = f"top{len(best)}.csv"
  command = ["python", "experiments/sweep.py", *sweep_flags(settings),
             f"--trials={name}", f"--seeds={seeds}",
             f"--steps={settings.get('steps')}",
             f"--eval_every={settings.get('eval_every')}"]
  return [f"Seed noise: each configuration ran with one seed, so the top "
          f"trials' order may be luck. To tell, train the best {len(best)} "
          f"again with {seeds} seeds each (each one's first run repeats its "
          f"numbers); the report then ranks them by their mean:",
          f"    awk -F, {shlex.quote(f'NR == 1 || {ids}')} "
          f"{shlex.quote(results_csv)} > {name} && " + " ".join(command)]


def around_command(settings: Mapping[str, Any], base: Mapping[str, Any],
                   steps: int, points_per_axis: int = 5,
                   ranges: Mapping[str, space_lib.Distribution] | None = None
                   ) -> str:
  """A ready ``experiments/sweep.py --around`` command for ``base``: the
  same task and programs (:func:`sweep_flags`) and, as ``--space``, the
  sweep's space (entries at the global defaults left out), so the axes
  are this sweep's ranges, with ``ranges`` in place of their parameters'
  entries."""
  flags = sweep_flags(settings)
  space = {n: e for n, e in (settings.get("space") or {}).items()
           if not (n in space_lib.PARAMS and not isinstance(e, (dict, list))
                   and e == space_lib.PARAMS[n].default)}
  space.update({n: d.to_json() for n, d in (ranges or {}).items()})
  if space:
    flags.append("--space=" + shlex.quote(json.dumps(space)))
  flags += ["--around=" + shlex.quote(json.dumps(
      {k: _short(v) for k, v in base.items()})),
            f"--points_per_axis={points_per_axis}", f"--steps={steps}",
            f"--eval_every={settings.get('eval_every')}"]
  seeds = samplers.seeds_of(settings)
  if seeds > 1:
    flags.append(f"--seeds={seeds}")
  return "python experiments/sweep.py " + " ".join(flags)


def advice_lines(results: Sequence[TrialResult], ranked: Sequence[TrialResult],
                 settings: Mapping[str, Any], tuned: Sequence[str],
                 top: int = 3,
                 edges: Sequence[tuple[str, str]] = ()) -> list[str]:
  """The report's "Diagnosis" section: the top trials' verdicts and the
  next move for the best one as a ready command, whose space carries past
  its edge each range whose best trials sat there (``edges``: ``(name,
  side)`` pairs, from the report's boundary warnings), except a parameter
  the move itself changes."""
  mode = settings.get("selection_mode", "min")
  steps = int(settings.get("steps") or 1)
  if not ranked:
    diverged = [r for r in results if r.status == "diverged"]
    if not diverged:
      return []
    ranked = diverged
  lines = ["Diagnosis (from the training and validation curves):"]
  verdicts = [(r, diagnose(r, mode)) for r in ranked[:top]]
  for r, d in verdicts:
    lines.append(f"  trial {r.trial_id}: {d.kind}: {d.reason}")
  n_div = sum(r.status == "diverged" for r in results)
  if n_div:
    lines.append(f"  {n_div} trial{'s' if n_div > 1 else ''} diverged")
  best, verdict = verdicts[0]
  changes, next_steps, advice = next_move(best, verdict, steps)
  names = [n for n in tuned if n in best.params] or sorted(changes)
  base = {n: best.params[n] for n in names}
  base.update(changes)
  # A parameter the move itself sets (more units for an underfit model)
  # keeps its range: its edge was read off runs the move says to change.
  edges = [(n, side) for n, side in edges if n not in changes]
  ranges = widened_ranges(settings.get("space"), edges)
  for name, side in edges:
    if name in ranges:
      advice += (f"; {name}'s range widened to "
                 f"{_range_text(ranges[name])} (the best trial sat at its "
                 f"{side} edge)")
  lines.append(f"  next: {advice}:")
  lines.append("    " + around_command(settings, base, next_steps,
                                       ranges=ranges))
  return lines


def _range_text(dist: space_lib.Distribution) -> str:
  if isinstance(dist, space_lib.Choice):
    return "{" + ", ".join(f"{_short(v)}" for v in dist.values) + "}"
  return f"[{_short(dist.lo)}, {_short(dist.hi)}]"


# ---------------------------------------------------------------------------
# One factor at a time
# ---------------------------------------------------------------------------


def ofat_panels(results: Sequence[TrialResult], base: Mapping[str, Any],
                names: Sequence[str]
                ) -> dict[str, list[tuple[Any, float | None, bool]]]:
  """Per varied parameter, the points ``(value, best_value, is_base)`` of
  the trials that differ from ``base`` in that parameter alone (and of the
  base trial itself), sorted by value where values are numbers."""
  panels: dict[str, list[tuple[Any, float | None, bool]]] = {}
  for name in names:
    points = []
    for r in results:
      others_equal = all(r.params.get(n) == base.get(n) for n in names
                         if n != name)
      if others_equal:
        points.append((r.params.get(name), r.best_value,
                       r.params.get(name) == base.get(name)))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool)
           for v, _, _ in points):
      points.sort(key=lambda t: t[0])
    panels[name] = points
  return panels


def ofat_means(points: Sequence[tuple[Any, float | None, bool]]
               ) -> list[tuple[Any, float, list[float], bool]]:
  """A panel's points (:func:`ofat_panels`) as one point per value, in
  their order: ``(value, mean, values, is_base)``, the mean over the
  value's seeds (``nan`` where none has a number; a value run with one
  seed is its own mean)."""
  by_value: dict[str, tuple[Any, list[float], bool]] = {}
  for v, y, is_base in points:
    entry = by_value.setdefault(repr(v), (v, [], is_base))
    entry[1].append(math.nan if y is None else y)
  out = []
  for v, ys, is_base in by_value.values():
    known = [y for y in ys if not math.isnan(y)]
    out.append((v, sum(known) / len(known) if known else math.nan, ys,
                is_base))
  return out


def plot_ofat(path: str, results: Sequence[TrialResult],
              base: Mapping[str, Any], names: Sequence[str],
              space: space_lib.Space | None, metric: str) -> None:
  """``ofat.png``: one panel per parameter, the base point starred."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  panels = ofat_panels(results, base, names)
  cols = min(3, max(1, len(panels)))
  rows = math.ceil(len(panels) / cols) or 1
  fig = Figure(figsize=(4.0 * cols, 3.2 * rows), dpi=100)
  for i, (name, points) in enumerate(panels.items()):
    ax = fig.add_subplot(rows, cols, i + 1)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v, _, _ in points)
    means = ofat_means(points)
    labels = [v for v, _, _, _ in means]
    xs = labels if numeric else list(range(len(labels)))
    ys = [y for _, y, _, _ in means]
    seeded = any(len(ys_) > 1 for _, _, ys_, _ in means)
    ax.plot(xs, ys, "o-", color="tab:blue", markersize=4,
            label="mean over seeds" if seeded else None)
    if seeded:
      ax.plot([x for x, m in zip(xs, means) for _ in m[2]],
              [y for m in means for y in m[2]], ".", color="tab:gray",
              markersize=5, label="one seed")
    for x, y, (_, _, _, is_base) in zip(xs, ys, means):
      if is_base:
        ax.plot([x], [y], marker="*", color="red", markersize=14,
                linestyle="none", label="base")
    dist = space.params.get(name) if space is not None else None
    if numeric and dist is not None and dist.log_scale:
      ax.set_xscale("log")
    if not numeric:
      ax.set_xticks(xs)
      ax.set_xticklabels([str(v) for v in labels])
    ax.set_xlabel(name)
    ax.set_ylabel(f"best val {metric}")
    if i == 0:
      ax.legend(loc="best", fontsize=8)
  fig.suptitle("one factor at a time around the base (red star)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
