"""Early stopping and PBT against plain random search, at equal budgets.

On the LM task, for each seed: random search with N trials to --steps;
random search + ASHA with 4N trials (which spends about N * steps
trial-steps at eta=3 with rungs at steps/9 and steps/3); PBT with a
population of N; and a user's current choice: Optuna's
``SuccessiveHalvingPruner`` (with its ``RandomSampler``) over the same space
and 4N trials, each trial a jitted objective of its own, run one after
another as Optuna runs them. Every method reports the best validation
metric, the trial-steps it actually trained and the wall time. Every
program is compiled before the clocks start (a warm-up run of each kind),
so the times compare training and scheduling, not who compiled first.
Writes JSON and prints a table.

  python benchmarks/schedulers.py --seeds=3 --trials=8 --steps=243 \
      --out=benchmarks/results/cpu-2026-11-29/schedulers.json
"""

import json
import math
import os
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

import rnnsweep as rs
from rnnsweep import engine

_SEEDS = flags.DEFINE_integer("seeds", 3, "Repetitions (sweep seeds).",
                              lower_bound=1)
_TRIALS = flags.DEFINE_integer("trials", 8, "N: random search's trials and "
                               "PBT's population.", lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", 243, "Updates per full trial (a "
                              "multiple of 9 keeps ASHA's rungs whole).",
                              lower_bound=9)
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "Units.", lower_bound=1)
_METHODS = flags.DEFINE_list("methods", ["random", "asha", "pbt", "optuna"],
                             "Which rows to run.")
_OUT = flags.DEFINE_string("out", None, "JSON file for the numbers.")


def space(hidden: int) -> rs.Space:
  return rs.Space({"cell": "lstm", "hidden_size": hidden,
                   "learning_rate": rs.LogUniform(1e-4, 3e-2),
                   "output_dropout": rs.Uniform(0.0, 0.5)})


def run_rnnsweep(task, method: str, seed: int) -> dict:
  n, steps = _TRIALS.value, _STEPS.value
  eval_every = _STEPS.value // 9
  scheduler = {"random": None,
               "asha": rs.SchedulerSettings("asha", min_steps=eval_every,
                                            reduction_factor=3),
               "pbt": rs.SchedulerSettings("pbt", pbt_interval=eval_every)
               }[method]
  num = 4 * n if method == "asha" else n
  start = time.perf_counter()
  result = rs.sweep(task, space(_HIDDEN.value), num_trials=num, steps=steps,
                    eval_every=eval_every, max_group_size=n, seed=seed,
                    scheduler=scheduler)
  wall = time.perf_counter() - start
  used = sum(r.curves["step"][-1] for r in result.trials)
  return {"method": method, "seed": seed, "trials": num,
          "best": result.best.best_value if result.best else math.nan,
          "trial_steps": used, "wall_s": wall,
          "pruned": sum(r.status == "pruned" for r in result.trials)}


_PROGRAMS = {}


def _optuna_programs(task, full, eval_every):
  """One objective's jitted pieces, built once and reused by every trial
  of every seed (and by the warm-up); data and keys are arguments."""
  if not _PROGRAMS:
    static = rs.StaticConfig.from_params(rs.space.resolve_params(
        {k: d.sample(np.random.default_rng(0))
         for k, d in full.params.items()}))
    one = engine.OneTrial(static, task)

    def train_(state, data_train, key):
      def body(_, s):
        return one.update(s, data_train, key)[0]
      return jax.lax.fori_loop(0, eval_every, body, state)

    _PROGRAMS["fns"] = (
        jax.jit(one.init), jax.jit(train_),
        jax.jit(lambda p, val: one.evaluate(p, val)[task.selection_metric]))
  return _PROGRAMS["fns"]


def run_optuna(task, seed: int, steps: int | None = None) -> dict:
  """Optuna's way: one objective per trial, reporting at each evaluation
  and asking the pruner. The objective is written as a careful user
  would: hyperparameters enter the jitted step as arrays, so it compiles
  once per shape, not once per trial."""
  import optuna  # pylint: disable=import-outside-toplevel
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  n, steps = _TRIALS.value, steps or _STEPS.value
  eval_every = _STEPS.value // 9
  full = rs.runner.task_space(task, space(_HIDDEN.value))
  init, train, evaluate = _optuna_programs(task, full, eval_every)
  data = task.data()
  key = engine.data_key(seed)
  used = [0]

  def objective(trial):
    lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
    drop = trial.suggest_float("output_dropout", 0.0, 0.5)
    params = rs.space.resolve_params(
        {**{k: d.sample(np.random.default_rng(0))
            for k, d in full.params.items()},
         "learning_rate": lr, "output_dropout": drop})
    hp = {k: jnp.float32(params[k]) for k in rs.space.VECTOR_NAMES}
    state = init(jnp.int32(trial.number), hp)
    best = math.inf
    for done in range(eval_every, steps + 1, eval_every):
      state = train(state, data.train, key)
      used[0] += eval_every
      value = float(evaluate(state.params, data.val))
      best = min(best, value) if math.isfinite(value) else best
      trial.report(value, done)
      if trial.should_prune():
        raise optuna.TrialPruned()
    return best

  study = optuna.create_study(
      direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed),
      pruner=optuna.pruners.SuccessiveHalvingPruner(
          min_resource=eval_every, reduction_factor=3))
  start = time.perf_counter()
  study.optimize(objective, n_trials=4 * n)
  wall = time.perf_counter() - start
  complete = [t for t in study.trials
              if t.state == optuna.trial.TrialState.COMPLETE]
  return {"method": "optuna-sha", "seed": seed, "trials": 4 * n,
          "best": min(t.value for t in complete) if complete else math.nan,
          "trial_steps": used[0], "wall_s": wall,
          "pruned": sum(t.state == optuna.trial.TrialState.PRUNED
                        for t in study.trials)}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  task = rs.make_task("lm")
  rows = []
  # Warm-up: every program compiled once (a whole run of each kind, so
  # ASHA's shrunk groups are compiled too).
  for method in _METHODS.value:
    if method == "optuna":
      run_optuna(task, 99, steps=_STEPS.value // 9)
    else:
      run_rnnsweep(task, method, 99)
  for seed in range(_SEEDS.value):
    for method in _METHODS.value:
      row = (run_optuna(task, seed) if method == "optuna"
             else run_rnnsweep(task, method, seed))
      rows.append(row)
      print(f"seed {seed} {row['method']:10s} best val "
            f"{task.selection_metric} {row['best']:.4f}  "
            f"{row['trial_steps']:6d} trial-steps  {row['pruned']:3d} pruned"
            f"  {row['wall_s']:7.1f} s", flush=True)
  print("\nmedian over seeds:")
  summary = {}
  for method in sorted({r["method"] for r in rows}):
    mine = [r for r in rows if r["method"] == method]
    summary[method] = {k: statistics.median(r[k] for r in mine)
                       for k in ("best", "trial_steps", "wall_s")}
    s = summary[method]
    print(f"  {method:10s} best {s['best']:.4f}  {s['trial_steps']:8.0f} "
          f"trial-steps  {s['wall_s']:7.1f} s")
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"steps": _STEPS.value, "trials": _TRIALS.value,
                 "hidden_size": _HIDDEN.value, "device":
                 str(jax.devices()[0].device_kind), "jax": jax.__version__,
                 "rows": rows, "median": summary}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
