"""Random search beats grid search when few parameters matter (Bergstra &
Bengio 2012), checked on the LM task.

Two tuned parameters: the learning rate (log-uniform over three decades;
it matters) and output dropout (0 to 0.3; at these run lengths it matters
little). At each budget ``b`` (a square), grid search spends ``sqrt(b)``
values on each axis, at the cell centres (``grid``) or shifted within the
cells by a random offset per seed (``grid_shifted``: on a new problem the
grid's alignment with the optimum is luck); random and quasi-random search
spend ``b`` distinct values on each. Repeated over seeds (the seed draws
the random points and the shift, the trials' initial weights and the
shared data stream).

One sweep per seed trains everything: random trial *i* depends only on the
seed and *i* (and the trial's seed is carried explicitly), so the first
``b`` of 64 random trials *are* random search with budget ``b``; a trial's
numbers do not depend on the group it trained in, so mixing the methods in
one sweep changes nothing.

Writes ``random_vs_grid.csv`` (one row per seed, method and budget: the
best validation bits per character found) and ``trials.csv`` (every trial),
``best_vs_budget.png`` and ``grid_vs_random.png`` (the classic picture:
the points in the plane of the important and the unimportant parameter,
with each axis' marginal response drawn from the sweep's own trials).
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, Callable, Sequence

import numpy as np

from rnnsweep import runner
from rnnsweep import samplers
from rnnsweep import space as space_lib
from rnnsweep.claims import common

IMPORTANT = "learning_rate"
UNIMPORTANT = "output_dropout"
METHODS = ("grid", "grid_shifted", "random", "quasirandom")
COLUMNS = ("seed", "method", "budget", "best_val", "best_learning_rate",
           "best_output_dropout", "distinct_learning_rates")
TRIAL_COLUMNS = ("seed", "method", "index", "learning_rate",
                 "output_dropout", "status", "best_val")


def search_space(quick: bool, hidden_size: int | None = None
                 ) -> space_lib.Space:
  shapes = (common.QUICK_SHAPES if quick
            else {"hidden_size": hidden_size or 64})
  return space_lib.Space({
      **shapes, "cell": "lstm",
      IMPORTANT: space_lib.LogUniform(1e-4, 1e-1),
      UNIMPORTANT: space_lib.Uniform(0.0, 0.3)})


def grid_configs(space: space_lib.Space, per_axis: int,
                 shift: tuple[float, float] = (0.5, 0.5)
                 ) -> list[dict[str, Any]]:
  """A ``per_axis`` x ``per_axis`` grid of the two tuned axes (log-spaced
  on the log axis), fixed values filled: point ``i`` of an axis sits at
  ``(i + shift) / per_axis`` of its range (0.5: the cell centres)."""
  fixed = {n: d.from_unit(0.0) for n, d in space.params.items()}
  lr, drop = space.params[IMPORTANT], space.params[UNIMPORTANT]
  at = lambda s: [(i + s) / per_axis for i in range(per_axis)]
  return [{**fixed, IMPORTANT: lr.from_unit(u), UNIMPORTANT: drop.from_unit(v)}
          for u in at(shift[0]) for v in at(shift[1])]


def grid_shift(seed: int, budget: int) -> tuple[float, float]:
  """A random offset of the grid within its cells, from (seed, budget): the
  grid's alignment with the unknown optimum is then luck, as it is on a
  new problem (the centred grid's alignment is fixed)."""
  rng = np.random.default_rng([int(seed), int(budget), 0x6A1D])
  return float(rng.uniform()), float(rng.uniform())


def _square_root(b: int) -> int:
  n = math.isqrt(b)
  if n * n != b or n < 2:
    raise ValueError(f"budgets must be squares >= 4 (a grid has sqrt(b) "
                     f"values per axis), got {b}")
  return n


def run(workdir: str, *, quick: bool = False,
        budgets: Sequence[int] | None = None, seeds: int | None = None,
        steps: int | None = None, hidden_size: int | None = None,
        max_group_size: int | str = "auto",
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Trains the sweeps (continuing any in ``workdir``), writes the tables
  and figures, returns the summary rows."""
  budgets = tuple(budgets or ((4, 9) if quick else (9, 16, 25, 64)))
  for b in budgets:
    _square_root(b)
  seeds = seeds or (2 if quick else 5)
  steps = steps or (8 if quick else 200)
  eval_every = max(1, steps // 4)
  task = common.lm_task(quick)
  space = space_lib.Space(runner.task_space(
      task, search_space(quick, hidden_size)).params)
  nmax = max(budgets)
  os.makedirs(workdir, exist_ok=True)
  rows, trial_rows = [], []
  for seed in range(seeds):
    configs, tags = [], []
    for method, draw in (("random", samplers.random),
                         ("quasirandom", samplers.quasirandom)):
      for t in draw(space, nmax, seed=seed):
        configs.append(dict(t.params))
        tags.append((method, None, t.trial_id))
    for b in budgets:
      for method, shift in (("grid", (0.5, 0.5)),
                            ("grid_shifted", grid_shift(seed, b))):
        for i, c in enumerate(grid_configs(space, _square_root(b), shift)):
          configs.append({**c, "seed": samplers.derive_seed(seed, i)})
          tags.append((method, b, i))
    result = runner.run_trials(
        task, configs, steps=steps, eval_every=eval_every,
        max_group_size=max_group_size, seed=seed,
        workdir=os.path.join(workdir, f"seed{seed}"), log=log)
    by_id = {r.trial_id: r for r in result.trials}
    done = [(tag, by_id.get(i)) for i, tag in enumerate(tags)]
    for (method, b, index), r in done:
      if not method.startswith("grid") or b == nmax:
        trial_rows.append({
            "seed": seed, "method": method, "index": index,
            IMPORTANT: r.params[IMPORTANT], UNIMPORTANT: r.params[UNIMPORTANT],
            "status": r.status, "best_val": r.best_value})
    for method in METHODS:
      for b in budgets:
        chosen = [r for (m, bb, index), r in done if m == method and (
            bb == b if method.startswith("grid") else index < b)]
        rows.append(_summary(seed, method, b, chosen))
  common.write_table(os.path.join(workdir, "random_vs_grid.csv"), rows,
                     COLUMNS)
  common.write_table(os.path.join(workdir, "trials.csv"), trial_rows,
                     TRIAL_COLUMNS)
  plot_best_vs_budget(os.path.join(workdir, "best_vs_budget.png"), rows,
                      budgets)
  plot_picture(os.path.join(workdir, "grid_vs_random.png"), trial_rows,
               space)
  return rows


def _summary(seed, method, budget, trials) -> dict[str, Any]:
  scored = [r for r in trials if r.best_value is not None
            and r.status == "completed"]
  best = min(scored, key=lambda r: r.best_value) if scored else None
  return {"seed": seed, "method": method, "budget": budget,
          "best_val": best.best_value if best else None,
          "best_learning_rate": best.params[IMPORTANT] if best else None,
          "best_output_dropout": best.params[UNIMPORTANT] if best else None,
          "distinct_learning_rates": len({r.params[IMPORTANT]
                                          for r in trials})}


def medians(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], float]:
  """Median best value over seeds per (method, budget)."""
  out = {}
  for key in {(r["method"], r["budget"]) for r in rows}:
    vals = [r["best_val"] for r in rows if (r["method"], r["budget"]) == key
            and r["best_val"] is not None]
    if vals:
      out[key] = statistics.median(vals)
  return out


def plot_best_vs_budget(path: str, rows, budgets) -> None:
  fig = common.figure(6.5, 4.5)
  ax = fig.add_subplot()
  med = medians(rows)
  rng = np.random.default_rng(0)
  for k, (method, color) in enumerate(zip(
      METHODS, ("tab:red", "tab:purple", "tab:blue", "tab:green"))):
    xs = [b for b in budgets if (method, b) in med]
    ax.plot(xs, [med[(method, b)] for b in xs], "o-", color=color,
            label=f"{method} (median over seeds)")
    pts = [(r["budget"], r["best_val"]) for r in rows
           if r["method"] == method and r["best_val"] is not None]
    ax.scatter([b * (1 + 0.04 * (k - 1.5)) * math.exp(rng.uniform(-.02, .02))
                for b, _ in pts], [v for _, v in pts], color=color,
               alpha=0.35, s=14)
  from matplotlib import ticker  # pylint: disable=import-outside-toplevel
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xticks(list(budgets))
  ax.set_xticklabels([str(b) for b in budgets])
  ax.set_xlabel("trials (budget)")
  ax.set_ylabel("best val bits per character")
  ax.set_title("Best found vs budget (each dot one seed)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


def plot_picture(path: str, trial_rows, space: space_lib.Space) -> None:
  """Seed 0: grid (largest budget) and random points of the same budget in
  the (learning rate, dropout) plane, and the metric against each axis."""
  first = [r for r in trial_rows if r["seed"] == 0]
  n_grid = sum(r["method"] == "grid" for r in first)
  panels = [("grid", [r for r in first if r["method"] == "grid"]),
            ("random", [r for r in first if r["method"] == "random"
                        and r["index"] < n_grid])]
  fig = common.figure(10, 9)
  finite = [r["best_val"] for r in first if r["best_val"] is not None]
  lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
  lr = space.params[IMPORTANT]
  drop = space.params[UNIMPORTANT]
  for col, (method, pts) in enumerate(panels):
    ok = [r for r in pts if r["best_val"] is not None]
    bad = [r for r in pts if r["best_val"] is None]
    top = fig.add_subplot(3, 2, col + 1)
    plane = fig.add_subplot(3, 2, col + 3)
    side = fig.add_subplot(3, 2, col + 5)
    top.scatter([r[IMPORTANT] for r in ok], [r["best_val"] for r in ok],
                s=18, color="tab:blue")
    top.set_xscale("log")
    top.set_xlim(lr.lo, lr.hi)
    top.set_ylim(lo, hi)
    top.set_ylabel("best val bpc")
    distinct = len({r[IMPORTANT] for r in pts})
    top.set_title(f"{method}: {len(pts)} trials, {distinct} distinct "
                  f"learning rates", fontsize=10)
    sc = plane.scatter([r[IMPORTANT] for r in ok], [r[UNIMPORTANT] for r in ok],
                       c=[r["best_val"] for r in ok], cmap="viridis_r",
                       vmin=lo, vmax=hi, s=40, edgecolors="k",
                       linewidths=0.3)
    if bad:
      plane.scatter([r[IMPORTANT] for r in bad], [r[UNIMPORTANT] for r in bad],
                    marker="x", color="red", label="diverged")
      plane.legend(fontsize=8)
    plane.set_xscale("log")
    plane.set_xlim(lr.lo, lr.hi)
    plane.set_ylim(drop.lo, drop.hi)
    plane.set_xlabel(f"{IMPORTANT} (matters)")
    plane.set_ylabel(f"{UNIMPORTANT} (matters little)")
    fig.colorbar(sc, ax=plane, label="best val bpc")
    side.scatter([r[UNIMPORTANT] for r in ok], [r["best_val"] for r in ok],
                 s=18, color="tab:orange")
    side.set_xlim(drop.lo, drop.hi)
    side.set_ylim(lo, hi)
    side.set_xlabel(UNIMPORTANT)
    side.set_ylabel("best val bpc")
  fig.suptitle("Grid vs random in the plane of an important and an "
               "unimportant parameter (seed 0)", fontsize=11)
  fig.tight_layout()
  fig.savefig(path)
