"""Reading results: ranking, the leaderboard, and the report with figures.

:func:`write_report` works on a finished workdir and on one whose sweep is
still running (it reads only committed groups). Figures are drawn with
matplotlib's Agg canvas (no display needed):

- ``points.png``: the sampled points in the plane of two parameters,
  coloured by the selection metric (the classic grid-versus-random picture);
- ``curves.png``: validation curves, the top trials bold, all others faint;
- ``pbt_schedules.png`` and ``pbt_lineage.png`` (PBT sweeps): each trial's
  hyperparameter schedule, and who copied whose weights when.
- ``axis_<param>.png``: the metric against each tuned parameter (log axis
  where the space is log-scaled), with a warning in the report when the best
  trials sit at the edge of the search range (Google's tuning playbook);
- ``parallel.png``: parallel coordinates of the top trials;
- ``ofat.png`` (``around`` sweeps): one panel per parameter varied one at a
  time, the base point marked.

The text ends with a diagnosis of the best trials' curves (overfits,
underfits, diverged) and the next manual move as a ready ``--around``
command (:mod:`rnnsweep.diagnosis`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any, Sequence

import numpy as np

from rnnsweep import diagnosis
from rnnsweep import samplers
from rnnsweep import selection
from rnnsweep import space as space_lib
from rnnsweep.store import Store, TrialResult

#: Share of a parameter's range (in log space where log-scaled) that counts
#: as its edge for the boundary warning.
EDGE_FRACTION = 0.1


def _key(mode: str):
  def key(r: TrialResult):
    v = r.best_value
    if v is None or not math.isfinite(v):
      return (1, 0.0, r.trial_id)
    return (0, selection.lower_is_better(v, mode), r.trial_id)
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
                columns: Sequence[str] = (), top: int = 10,
                counts: dict[str, int] | None = None) -> str:
  """A plain-text table of the ``top`` completed trials.

  Args:
    results: every finished trial.
    mode: ``min`` or ``max`` for the selection metric.
    columns: parameter names to show (typically the tuned ones).
    top: rows.
    counts: status counts to show (default: counted from ``results``).
  """
  ranked = rank(results, mode)[:top]
  metric = results[0].metric if results else "metric"
  if counts is None:
    counts = {}
    for r in results:
      counts[r.status] = counts.get(r.status, 0) + 1
  summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
  header = ["rank", "trial", f"val {metric}", "step", f"test {metric}"] + list(
      columns)
  rows = [[str(i + 1), str(r.trial_id), _fmt(r.best_value), str(r.best_step),
           "-" if r.test_value is None else _fmt(r.test_value)]
          + [_fmt(r.params.get(c, "")) for c in columns]
          for i, r in enumerate(ranked)]
  widths = [max(len(h), *(len(row[j]) for row in rows)) if rows else len(h)
            for j, h in enumerate(header)]
  lines = [f"Top {len(ranked)} of {sum(counts.values())} trials ({summary}); "
           f"{'lower' if mode == 'min' else 'higher'} is better",
           "  ".join(h.rjust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
  if not rows:
    lines.append("(no completed trial)")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Parameter axes: how to place a parameter's values on a plot
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Axis:
  """How one tuned parameter is drawn.

  Attributes:
    name: parameter name.
    log: log-scaled axis.
    categories: for non-numeric parameters, the values in order; ``None``
      for numeric ones.
    bounds: the search range ``(lo, hi)`` for numeric parameters.
  """

  name: str
  log: bool
  categories: tuple | None
  bounds: tuple[float, float] | None

  def position(self, value: Any) -> float:
    """A value's coordinate on this axis (category index if categorical)."""
    if self.categories is not None:
      return float(self.categories.index(value))
    return float(value)

  def unit(self, value: Any) -> float:
    """The value mapped to [0, 1] across the range (log where log)."""
    if self.categories is not None:
      n = len(self.categories)
      return self.categories.index(value) / max(n - 1, 1)
    lo, hi = self.bounds
    f = (lambda x: math.log(x)) if self.log else (lambda x: x)
    return (f(float(value)) - f(lo)) / (f(hi) - f(lo)) if hi > lo else 0.5


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def axes_for(params: Sequence[dict[str, Any]], space_json: dict | None,
             names: Sequence[str] | None = None) -> list[Axis]:
  """Axes for the tuned parameters of trials with these ``params``, from the
  stored space when there is one (ranges and log scales as the user wrote
  them), else from the values."""
  space = (space_lib.space_from_json(space_json) if space_json else None)
  if names is None:
    if space is not None:
      # A trial's seed is no hyperparameter: no axis, edge or next move.
      names = [n for n in space.tuned_names() if n != "seed"]
    else:
      names = [n for n in space_lib.PARAMS if n != "seed" and
               len({repr(p.get(n)) for p in params}) > 1]
  axes = []
  for name in names:
    dist = space.params.get(name) if space is not None else None
    values = [p[name] for p in params if name in p]
    if dist is not None:
      candidates = dist.candidate_values()
    else:
      candidates = values
    if not candidates:
      continue
    if all(_is_number(v) for v in candidates):
      lo, hi = float(min(candidates)), float(max(candidates))
      log = (dist.log_scale if dist is not None
             else lo > 0 and hi / lo >= 100)
      axes.append(Axis(name, bool(log), None, (lo, hi)))
    else:
      cats = tuple(dict.fromkeys(list(candidates) + values))
      axes.append(Axis(name, False, cats, None))
  return axes


@dataclasses.dataclass(frozen=True)
class Edge:
  """A numeric parameter whose best trials sit at one edge of its range.

  Attributes:
    name: the parameter.
    side: ``"low"`` or ``"high"``.
    hits: how many of the top trials sit at that edge.
    top: how many top trials were looked at.
    bounds: the range ``(lo, hi)``.
    widens: whether the range can be carried past that edge
      (:func:`rnnsweep.space.widened`); not where the edge is as far as
      the parameter goes (a dropout rate of 0).
    unit: ``"trial"``, or ``"configuration"`` where each configuration
      ran with several seeds and was judged once, by its mean.
  """

  name: str
  side: str
  hits: int
  top: int
  bounds: tuple[float, float]
  widens: bool = True
  unit: str = "trial"

  def warning(self) -> str:
    """The report's line: a warning to widen the range where it can
    widen, else a note that the best lie at the parameter's limit."""
    lo, hi = self.bounds
    mean = (f" by {'their' if self.top > 1 else 'its'} mean over seeds"
            if self.unit == "configuration" else "")
    where = (f"{self.name}: the best {self.unit}{'s' if self.top > 1 else ''}"
             f"{mean} "
             f"({self.hits} of the top {self.top}) sit"
             f"{'' if self.top > 1 else 's'} at the {self.side} edge of the "
             f"range [{_fmt(lo)}, {_fmt(hi)}]")
    if self.widens:
      return (f"warning: {where}; the optimum may lie outside it, widen the "
              f"range")
    return (f"note: {where}, as {self.side} as {self.name} goes: the range "
            f"cannot widen there")


def values_at_best(result: TrialResult) -> TrialResult:
  """``result`` with the values it trained with when it reached its best:
  a PBT trial's starting values updated by each exploit before its best
  step (an exploit at step s follows that step's evaluation); any other
  trial as it is."""
  params = dict(result.params)
  for event in result.lineage:
    if result.best_step is None or event["step"] >= result.best_step:
      break
    params.update({k: v for k, v in event["hp"].items() if k in params})
  return dataclasses.replace(result, params=params)


def pbt_best_line(result: TrialResult) -> str:
  """What a PBT trial (``result.lineage`` not empty) trained with when it
  reached its best, beside the starting values the report lists."""
  at_best = values_at_best(result).params
  before = [e for e in result.lineage
            if result.best_step is not None and e["step"] < result.best_step]
  if not before:
    return (f"(PBT: it reached its best on these, its starting values; its "
            f"first exploit came after, at step {result.lineage[0]['step']})")
  changed = {k: v for k, v in at_best.items()
             if _fmt(v) != _fmt(result.params.get(k))}
  last = before[-1]
  return (f"(PBT: these are its starting values; at its best step, "
          f"{result.best_step}, it ran with " + (", ".join(
              f"{k}={_fmt(v)}" for k, v in changed.items())
              or "the same values") + f", set at step {last['step']} when "
          f"it took trial {last['parent']}'s weights)")


@dataclasses.dataclass(frozen=True)
class Replicated:
  """One configuration trained with several seeds (its tuned values but
  the seed the same).

  Attributes:
    trials: its completed trials, best first.
    mean: the mean of their best validation values.
    std: their sample standard deviation (n - 1).
    test_mean: the mean of their test values (``None`` where one is
      missing).
  """

  trials: tuple[TrialResult, ...]
  mean: float
  std: float
  test_mean: float | None


def config_key(result: TrialResult, names: Sequence[str]) -> str:
  """What identifies a trial's configuration: its values of ``names``,
  the seed left out."""
  return repr([(n, result.params.get(n)) for n in names if n != "seed"])


def replicated(results: Sequence[TrialResult], names: Sequence[str],
               mode: str = "min") -> list[Replicated]:
  """The configurations (values of ``names``, the seed left out) that have
  completed trials with two or more seeds, best mean first by ``mode``. A
  second trial with the same configuration and seed (the same run again)
  is left out."""
  by_config: dict[str, dict[int, TrialResult]] = {}
  for r in rank(results, mode):
    by_config.setdefault(config_key(r, names), {}).setdefault(r.seed, r)
  out = []
  for kept in by_config.values():
    trials = list(kept.values())
    if len(trials) < 2:
      continue
    values = np.array([r.best_value for r in trials], np.float64)
    tests = [r.test_value for r in trials]
    out.append(Replicated(tuple(trials), float(values.mean()),
                          float(values.std(ddof=1)),
                          None if None in tests else float(np.mean(tests))))
  return sorted(out, key=lambda c: (selection.lower_is_better(c.mean, mode),
                                    c.trials[0].trial_id))


def replicated_table(configs: Sequence[Replicated], names: Sequence[str],
                     metric: str, top: int = 10) -> list[str]:
  """The report's section on configurations trained with several seeds."""
  header = ["rank", "seeds", f"mean val {metric}", "std", f"mean test {metric}",
            "trials"] + [n for n in names if n != "seed"]
  rows = [[str(i + 1), str(len(c.trials)), _fmt(c.mean), _fmt(c.std),
           "-" if c.test_mean is None else _fmt(c.test_mean),
           ",".join(str(r.trial_id) for r in c.trials)]
          + [_fmt(c.trials[0].params.get(n, "")) for n in names if n != "seed"]
          for i, c in enumerate(configs[:top])]
  widths = [max(len(h), *(len(row[j]) for row in rows))
            for j, h in enumerate(header)]
  return ([f"Configurations trained with several seeds ({len(configs)}), "
           f"by their mean (the spread over seeds is noise a single "
           f"trial's rank does not show):",
           "  ".join(h.rjust(w) for h, w in zip(header, widths)),
           "  ".join("-" * w for w in widths)] +
          ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows])


def edges(results: Sequence[TrialResult], axes: Sequence[Axis],
          mode: str, space_json: dict | None = None, *,
          unit: str = "trial") -> list[Edge]:
  """Where the best trials sit at the edge of a numeric range.

  The top ``max(1, 10%)`` completed trials are looked at; a parameter is
  flagged when the best trial lies in the outer :data:`EDGE_FRACTION` of
  its range and so do most of the top trials (the optimum may lie outside
  the range: widen it). With the sweep's ``space_json``, an edge its
  parameter cannot pass (:func:`rnnsweep.space.widened` gives ``None``)
  is marked ``widens=False``. ``unit`` names what ``results`` are in the
  warning (``"configuration"``: one result per configuration, its mean
  over seeds).
  """
  dists = (space_lib.space_from_json(dict(space_json)).params
           if space_json else {})
  ranked = rank(results, mode)
  if len(ranked) < 2:
    return []
  top = ranked[:max(1, math.ceil(0.1 * len(ranked)))]
  out = []
  for axis in axes:
    if axis.categories is not None or axis.bounds[0] == axis.bounds[1]:
      continue
    for side, near in (("low", lambda u: u <= EDGE_FRACTION),
                       ("high", lambda u: u >= 1 - EDGE_FRACTION)):
      hits = [near(axis.unit(r.params[axis.name])) for r in top]
      if hits[0] and sum(hits) * 2 > len(hits):
        widens = (axis.name not in dists or space_lib.widened(
            axis.name, dists[axis.name], side) is not None)
        out.append(Edge(axis.name, side, sum(hits), len(top), axis.bounds,
                        widens, unit))
  return out


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _figure(width=6.0, height=4.5):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height), dpi=100)


def _set_axis(ax, axis: Axis, which: str) -> None:
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  getattr(ax, f"set_{which}label")(axis.name)
  if axis.log:
    getattr(ax, f"set_{which}scale")("log")
    # Minor-tick labels of a short log range collide; decades are enough.
    getattr(ax, f"{which}axis").set_minor_formatter(ticker.NullFormatter())
  if axis.categories is not None:
    getattr(ax, f"set_{which}ticks")(range(len(axis.categories)))
    getattr(ax, f"set_{which}ticklabels")([str(c) for c in axis.categories])


def _cmap(mode: str) -> str:
  # Dark = good in both directions.
  return "viridis_r" if mode == "min" else "viridis"


def plot_points(path: str, results, pending_params, x: Axis, y: Axis, metric,
                mode) -> None:
  fig = _figure()
  ax = fig.add_subplot()
  done = [r for r in results if r.status == "completed"
          and r.best_value is not None]
  if done:
    sc = ax.scatter([x.position(r.params[x.name]) for r in done],
                    [y.position(r.params[y.name]) for r in done],
                    c=[r.best_value for r in done], cmap=_cmap(mode), s=40,
                    edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label=f"val {metric}")
  bad = [r for r in results if r.status != "completed"]
  if bad:
    ax.scatter([x.position(r.params[x.name]) for r in bad],
               [y.position(r.params[y.name]) for r in bad], marker="x",
               c="red", label="diverged")
  if pending_params:
    ax.scatter([x.position(p[x.name]) for p in pending_params],
               [y.position(p[y.name]) for p in pending_params],
               facecolors="none", edgecolors="grey", label="not finished")
  _set_axis(ax, x, "x")
  _set_axis(ax, y, "y")
  if bad or pending_params:
    ax.legend(loc="best", fontsize=8)
  ax.set_title(f"Sampled points: {x.name} vs {y.name}")
  fig.tight_layout()
  fig.savefig(path)


def plot_curves(path: str, results, ranked_top, metric) -> None:
  fig = _figure(7, 4.5)
  ax = fig.add_subplot()
  key = f"val/{metric}"
  top_ids = {r.trial_id for r in ranked_top}
  for r in results:
    if r.trial_id not in top_ids and key in r.curves:
      ax.plot(r.curves["step"], r.curves[key], color="grey", alpha=0.25,
              linewidth=0.8)
  for r in ranked_top:
    ax.plot(r.curves["step"], r.curves[key], linewidth=1.8,
            label=f"trial {r.trial_id}")
  ax.set_xlabel("step")
  ax.set_ylabel(f"val {metric}")
  if ranked_top:
    ax.legend(loc="best", fontsize=8)
  ax.set_title("Validation curves (top trials bold)")
  fig.tight_layout()
  fig.savefig(path)


def plot_axis(path: str, results, axis: Axis, metric, mode,
              warning: str | None) -> None:
  fig = _figure()
  ax = fig.add_subplot()
  done = [r for r in results if r.status == "completed"
          and r.best_value is not None]
  xs = [axis.position(r.params[axis.name]) for r in done]
  if axis.categories is not None:  # spread categories a little
    rng = np.random.default_rng(0)
    xs = [x + rng.uniform(-0.15, 0.15) for x in xs]
  ax.scatter(xs, [r.best_value for r in done], s=25, alpha=0.8)
  top = rank(done, mode)[:max(1, math.ceil(0.1 * len(done)))]
  if top:
    ax.scatter([axis.position(r.params[axis.name]) for r in top],
               [r.best_value for r in top], s=60, facecolors="none",
               edgecolors="red", label="top 10%")
    ax.legend(loc="best", fontsize=8)
  if axis.bounds is not None:
    for b in axis.bounds:
      ax.axvline(b, color="grey", linestyle=":", linewidth=1)
  _set_axis(ax, axis, "x")
  ax.set_ylabel(f"best val {metric}")
  ax.set_title(f"{metric} vs {axis.name}" +
               ("\n" + "best trials at the edge of the range" if warning
                else ""), fontsize=10, color="red" if warning else "black")
  fig.tight_layout()
  fig.savefig(path)


def plot_parallel(path: str, ranked_top, axes: Sequence[Axis], metric,
                  mode) -> None:
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  fig = _figure(max(6.0, 1.3 * (len(axes) + 1)), 4.5)
  ax = fig.add_subplot()
  values = [r.best_value for r in ranked_top]
  lo, hi = (min(values), max(values)) if values else (0, 1)
  cmap = colormaps[_cmap(mode)]
  for r in ranked_top:
    ys = [a.unit(r.params[a.name]) for a in axes]
    ys.append((r.best_value - lo) / (hi - lo) if hi > lo else 0.5)
    ax.plot(range(len(ys)), ys, marker="o",
            color=cmap((r.best_value - lo) / (hi - lo) if hi > lo else 0.5),
            linewidth=1.2, alpha=0.9)
  labels = [a.name + (" (log)" if a.log else "") for a in axes]
  ax.set_xticks(range(len(labels) + 1))
  ax.set_xticklabels(labels + [f"val {metric}"], rotation=20, fontsize=8)
  ax.set_yticks([])
  ends = [((str(a.categories[0]), str(a.categories[-1]))
           if a.categories is not None else
           (_fmt(a.bounds[0]), _fmt(a.bounds[1]))) for a in axes]
  ends.append((_fmt(lo), _fmt(hi)))
  for i, (low, high) in enumerate(ends):  # each axis' range at its ends
    ax.axvline(i, color="grey", linewidth=0.6)
    ax.text(i, -0.06, low, ha="center", va="top", fontsize=7)
    ax.text(i, 1.06, high, ha="center", va="bottom", fontsize=7)
  ax.set_ylim(-0.15, 1.15)
  ax.set_title(f"Parallel coordinates of the top {len(ranked_top)} trials")
  fig.tight_layout()
  fig.savefig(path)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Report:
  """What :func:`write_report` produced.

  Attributes:
    text: the printable report.
    figures: paths of the PNG files written.
    warnings: boundary (and other) warnings, also in ``text``.
    counts: trials per status.
  """

  text: str
  figures: list[str]
  warnings: list[str]
  counts: dict[str, int]


def write_report(workdir: str, *, top: int = 10,
                 pair: Sequence[str] | None = None, plots: bool = True,
                 out_dir: str | None = None) -> Report:
  """Builds the report of a workdir (finished or still running).

  Args:
    workdir: a sweep's workdir.
    top: leaderboard rows and highlighted trials.
    pair: two parameter names for ``points.png`` (default: the first two
      numeric tuned parameters).
    plots: write the PNG figures.
    out_dir: where figures go (default: the workdir).

  Returns:
    A :class:`Report`.
  """
  store = Store(workdir)
  if not store.exists():
    raise ValueError(f"workdir {workdir!r} holds no sweep ({store.db_path} "
                     f"does not exist)")
  settings = store.settings()
  results = store.results()
  counts = store.status_counts()
  pending = [p for _, p, _ in store.unfinished_trials()]
  mode = settings.get("selection_mode", "min")
  metric = settings.get("selection_metric") or (
      results[0].metric if results else "metric")
  axes = axes_for([r.params for r in results] + pending,
                  settings.get("space"))
  if pair is not None:
    names = [a.name for a in axes]
    unknown = [p for p in pair if p not in names]
    if len(pair) != 2 or unknown:
      raise ValueError(f"pair must name two tuned parameters of this sweep "
                       f"({names}), got {list(pair)}")
  ranked = rank(results, mode)
  # A PBT trial's best value speaks for the values it had then, not for
  # its starting ones: the edges and the next move are read from those.
  judged = [values_at_best(r) for r in results]
  space = settings.get("space")
  tuned = [a.name for a in axes]
  seeds = space_lib.space_from_json(space).params.get("seed") if space else None
  if (seeds is not None and len(seeds.candidate_values()) > 1) or (
      samplers.seeds_of(settings) > 1):
    tuned.append("seed")  # shown, though it is no axis
  repeats = replicated(results, tuned, mode)
  many = {config_key(c.trials[0], tuned) for c in repeats}
  by_mean = bool(ranked) and all(config_key(r, tuned) in many
                                 for r in ranked)
  if by_mean and not any(r.lineage for r in results):
    # Every configuration ran with several seeds: its edges are read off
    # the configurations' means, each configuration once.
    at_edges = edges([dataclasses.replace(c.trials[0], best_value=c.mean)
                      for c in repeats], axes, mode, space,
                     unit="configuration")
  else:
    at_edges = edges(judged, axes, mode, space)
  warnings = [e.warning() for e in at_edges if e.widens]
  notes = [e.warning() for e in at_edges if not e.widens]
  lines = [f"Sweep in {workdir}: task {settings.get('task')}, sampler "
           f"{settings.get('sampler')}, scheduler "
           f"{(settings.get('scheduler') or {}).get('name', 'none')}, "
           f"{settings.get('steps')} steps, "
           f"seed {settings.get('seed')}",
           "Trials by status: " + ", ".join(
               f"{s} {n}" for s, n in sorted(counts.items())), "",
           leaderboard(results, mode=mode, columns=tuned, top=top,
                       counts=counts)]
  if repeats:
    lines += [""] + replicated_table(repeats, tuned, metric, top)
  if ranked:
    b = ranked[0]
    test = ("" if b.test_value is None else
            f"; test {metric} {_fmt(b.test_value)} (held out, not used to "
            f"select)")
    lines += ["", f"Best: trial {b.trial_id}, val {metric} "
              f"{_fmt(b.best_value)} at step {b.best_step}{test}",
              "  " + ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items())]
    if b.lineage:
      lines.append("  " + pbt_best_line(b))
  scheduled = scheduler_summary(settings.get("scheduler"), results,
                                store.decisions(), mode)
  if scheduled:
    lines += [""] + scheduled
  if at_edges:
    lines += [""] + warnings + notes
    if any(r.lineage for r in results):
      lines.append("  (PBT: each trial's values at its best step, from its "
                   "last exploit before it)")
  order = rank(judged, mode)
  if by_mean:
    # Every configuration ran with several seeds: the next move starts
    # from the best configuration by its mean, its seeds' trials first.
    first = [r.trial_id for r in repeats[0].trials]
    order = ([r for r in order if r.trial_id in first] +
             [r for r in order if r.trial_id not in first])
  advice = diagnosis.advice_lines(judged, order, settings,
                                  [a.name for a in axes],
                                  edges=[(e.name, e.side) for e in at_edges])
  if advice and by_mean:
    advice.insert(1, f"  (every configuration ran with several seeds: the "
                  f"best by its mean comes first, trials "
                  f"{', '.join(map(str, first))})")
  if advice:
    lines += [""] + advice
  if not repeats:
    check = diagnosis.seed_check_lines(settings, store.csv_path, ranked)
    if check:
      lines += [""] + check
  ofat = None
  if settings.get("sampler") == "around" and results:
    ofat = (settings["sampler_options"]["base"], [a.name for a in axes],
            settings.get("space"))
  figures = []
  if plots:
    out_dir = out_dir or workdir
    try:
      os.makedirs(out_dir, exist_ok=True)
      if not os.access(out_dir, os.W_OK):
        raise PermissionError(13, "not writable")
      figures = _write_figures(out_dir, results, pending, axes, ranked[:top],
                               metric, mode, pair, warnings, ofat)
    except OSError as e:
      # An archived sweep on read-only storage: the report still prints.
      lines += ["", f"Figures not written: {out_dir!r} cannot be written "
                f"({e.strerror or e}); choose a folder with --out_dir "
                f"(Python: out_dir=)"]
    else:
      lines += ["", "Figures: " + ", ".join(os.path.basename(f)
                                            for f in figures)]
  return Report("\n".join(lines), figures, warnings, counts)


def _write_figures(out_dir, results, pending, axes, ranked_top, metric, mode,
                   pair, warnings, ofat=None) -> list[str]:
  figures = []

  def path(name):
    p = os.path.join(out_dir, name)
    figures.append(p)
    return p

  by_name = {a.name: a for a in axes}
  numeric = [a for a in axes if a.categories is None]
  chosen = ([by_name[p] for p in pair] if pair else
            numeric[:2] if len(numeric) >= 2 else axes[:2])
  if len(chosen) == 2:
    plot_points(path("points.png"), results, pending, chosen[0], chosen[1],
                metric, mode)
  if results:
    plot_curves(path("curves.png"), results, ranked_top, metric)
  for axis in axes:
    warn = next((w for w in warnings if w.startswith(f"warning: {axis.name}:")),
                None)
    plot_axis(path(f"axis_{axis.name}.png"), results, axis, metric, mode,
              warn)
  if ranked_top and axes:
    plot_parallel(path("parallel.png"), ranked_top, axes, metric, mode)
  if any(r.lineage for r in results):
    plot_pbt(path("pbt_schedules.png"), path("pbt_lineage.png"), results,
             ranked_top, axes)
  if ofat is not None:
    base, names, space_json = ofat
    diagnosis.plot_ofat(path("ofat.png"), results, base, names,
                        space_lib.space_from_json(space_json)
                        if space_json else None, metric)
  return figures


def scheduler_summary(scheduler: dict | None, results, decisions,
                      mode: str = "min") -> list[str]:
  """What a scheduler did: where trials were pruned, how many slots were
  refilled, PBT's exploits and the lineage of the best trial that has one
  (best by ``mode``, as the leaderboard ranks)."""
  if not scheduler or scheduler.get("name", "none") == "none":
    return []
  name = scheduler["name"]
  relevant = {"asha": ("min_steps", "reduction_factor"),
              "hyperband": ("min_steps", "reduction_factor"),
              "median": ("min_steps",),
              "pbt": ("pbt_interval", "pbt_fraction",
                      "pbt_resample_probability")}.get(name, ())
  options = ", ".join(f"{k}={scheduler[k]}" for k in relevant
                      if scheduler.get(k) is not None)
  lines = [f"Scheduler {name} ({options}):"]
  pruned = [r.stopped_step for r in results if r.status == "pruned"]
  if name != "pbt":
    at = collections.Counter(pruned)
    lines.append(f"  {len(pruned)} trials pruned" + (
        " (at step " + ", ".join(f"{s}: {n}" for s, n in sorted(at.items()))
        + ")" if at else ""))
    starts = collections.Counter(d["group_id"] for d in decisions
                                 if d["kind"] == "start")
    slots = {g: len({d["detail"]["slot"] for d in decisions
                     if d["kind"] == "start" and d["group_id"] == g})
             for g in starts}
    lines.append(f"  {sum(starts[g] - slots[g] for g in starts)} slots "
                 f"refilled with the next trial of their group")
    return lines
  exploits = [d for d in decisions if d["kind"] == "exploit"]
  lines.append(f"  {len(exploits)} exploits (a trial copied a better one's "
               f"weights and perturbed its values)")
  ranked = rank([r for r in results if r.lineage], mode)
  if ranked:
    best_one = ranked[0]
    chain = " <- ".join(f"trial {e['parent']} at step {e['step']}"
                        for e in reversed(best_one.lineage))
    lines.append(f"  e.g. trial {best_one.trial_id}: copied {chain}")
  return lines


def hp_schedule(result: TrialResult, name: str, steps: int
                ) -> tuple[list[int], list[float]]:
  """A PBT trial's value of ``name`` over its steps, as a step function:
  its own value until the first exploit, then each exploit's."""
  xs, ys = [0], [float(result.params[name])]
  for event in result.lineage:
    xs += [event["step"], event["step"]]
    ys += [ys[-1], float(event["hp"][name])]
  xs.append(steps)
  ys.append(ys[-1])
  return xs, ys


def plot_pbt(schedules_path: str, lineage_path: str, results, ranked_top,
             axes: Sequence[Axis]) -> None:
  """PBT's figures: each tuned value's schedule per trial (the top trials
  bold), and the family tree (who copied whom, when)."""
  names = [a.name for a in axes if a.name in space_lib.VECTOR_NAMES] or [
      "learning_rate"]
  steps = max(r.curves["step"][-1] for r in results)
  top_ids = {r.trial_id for r in ranked_top}
  fig = _figure(6.5, 2.6 * len(names))
  for i, name in enumerate(names):
    ax = fig.add_subplot(len(names), 1, i + 1)
    for r in results:
      xs, ys = hp_schedule(r, name, steps)
      bold = r.trial_id in top_ids
      ax.plot(xs, ys, linewidth=1.8 if bold else 0.8,
              alpha=1.0 if bold else 0.35,
              label=f"trial {r.trial_id}" if bold else None)
    axis = next((a for a in axes if a.name == name), None)
    if axis is not None and axis.log:
      ax.set_yscale("log")
    ax.set_ylabel(name)
    if i == 0:
      ax.set_title("PBT hyperparameter schedules (top trials bold)")
      if top_ids:
        ax.legend(loc="best", fontsize=7)
  ax.set_xlabel("step")
  fig.tight_layout()
  fig.savefig(schedules_path)

  fig = _figure(6.5, max(3.0, 0.3 * len(results)))
  ax = fig.add_subplot()
  row = {r.trial_id: j for j, r in enumerate(sorted(results,
                                                    key=lambda r: r.trial_id))}
  seen = collections.Counter()
  for r in results:
    ax.plot([0, r.curves["step"][-1]], [row[r.trial_id]] * 2, color="grey",
            linewidth=0.8)
  for r in results:
    for e in r.lineage:
      if e["parent"] in row:
        # Side by side when several copies happen at one step.
        x = e["step"] + 0.012 * steps * seen[e["step"]]
        seen[e["step"]] += 1
        ax.plot([x], [row[e["parent"]]], "o", color="tab:blue",
                markersize=3)
        ax.annotate("", xy=(x, row[r.trial_id]),
                    xytext=(x, row[e["parent"]]),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue"})
  ax.set_yticks(range(len(row)), [str(t) for t in sorted(row)])
  ax.set_ylabel("trial")
  ax.set_xlabel("step")
  ax.set_title("PBT family tree (arrow: weights copied from -> to)")
  fig.tight_layout()
  fig.savefig(lineage_path)
