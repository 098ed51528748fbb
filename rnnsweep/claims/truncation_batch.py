"""Truncation and batch size on the LM task at equal wall time.

Two one-factor-at-a-time axes around window 32, batch 32: the TBPTT window
(time steps per update) and the batch size (sequences per update). Each
setting trains a group of four learning rates (3e-3 to 3e-2, log-spaced)
for the same wall time: its updates per second are measured first (a short
timed run after the group's program is compiled), and it trains as many
updates as fit in ``seconds`` of training (evaluations come on top). The
table gives the measured speed
(updates/s, trial-steps/s for the group, characters/s per trial) and the
best validation bits per character among the four rates.

Speed depends on the machine. The speeds are kept in ``speeds.json``, so a
rerun continues the same sweeps. Writes ``truncation_batch.csv`` and
``truncation_batch.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rnnsweep import engine
from rnnsweep import runner
from rnnsweep import samplers
from rnnsweep.claims import common
from rnnsweep.groups import plan_groups

LEARNING_RATES = tuple(float(f"{v:.3g}") for v in np.geomspace(3e-3, 3e-2, 4))
BASE = {"truncation": 32, "batch_size": 32}
COLUMNS = ("axis", "truncation", "batch_size", "updates_per_s",
           "trial_steps_per_s", "chars_per_s_per_trial", "steps",
           "best_val", "best_learning_rate")
PROBE_STEPS = 16


def run(workdir: str, *, quick: bool = False,
        windows: Sequence[int] | None = None,
        batch_sizes: Sequence[int] | None = None,
        seconds: float | None = None, hidden_size: int | None = None,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """Measures, trains (continuing any sweeps in ``workdir``), writes the
  table and figure, returns the rows."""
  windows = tuple(windows or ((4, 8) if quick else (8, 16, 32, 64, 128)))
  batch_sizes = tuple(batch_sizes or ((2, 4) if quick
                                      else (8, 16, 32, 64, 128)))
  seconds = seconds or (0.5 if quick else 120.0)
  task = common.lm_task(quick)
  base = dict(BASE, truncation=8, batch_size=4) if quick else dict(BASE)
  shapes = ({k: v for k, v in common.QUICK_SHAPES.items()
             if k not in base} if quick
            else {"hidden_size": hidden_size or 64})
  settings = ([("truncation", dict(base, truncation=w)) for w in windows]
              + [("batch_size", dict(base, batch_size=b))
                 for b in batch_sizes])
  os.makedirs(workdir, exist_ok=True)
  # Speeds are measured once and kept: a rerun (or the base setting, which
  # is on both axes) trains the same number of steps, so it continues.
  speeds_path = os.path.join(workdir, "speeds.json")
  speeds = {}
  if os.path.exists(speeds_path):
    with open(speeds_path, encoding="utf-8") as f:
      speeds = json.load(f)
  rows = []
  for axis, static in settings:
    configs = [{**shapes, **static, "cell": "lstm", "learning_rate": lr}
               for lr in LEARNING_RATES]
    name = f"w{static['truncation']}-b{static['batch_size']}"
    if name not in speeds:
      speeds[name] = _updates_per_second(task, configs)
      tmp = f"{speeds_path}.tmp{os.getpid()}"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(speeds, f, indent=1)
      os.replace(tmp, speeds_path)
    rate = speeds[name]
    steps = max(4, int(seconds * rate))
    result = runner.run_trials(
        task, configs, steps=steps, eval_every=max(1, steps // 4),
        max_group_size=len(configs), seed=0,
        workdir=os.path.join(workdir, name), log=log)
    best = min((r for r in result.trials if r.best_value is not None),
               key=lambda r: r.best_value, default=None)
    rows.append({
        "axis": axis, **static, "updates_per_s": rate,
        "trial_steps_per_s": rate * len(configs),
        "chars_per_s_per_trial": rate * static["truncation"]
        * static["batch_size"], "steps": steps,
        "best_val": best.best_value if best else None,
        "best_learning_rate": best.params["learning_rate"] if best else None})
  common.write_table(os.path.join(workdir, "truncation_batch.csv"), rows,
                     COLUMNS)
  plot(os.path.join(workdir, "truncation_batch.png"), rows, seconds)
  return rows


def _updates_per_second(task, configs) -> float:
  """The group's training updates per second: one segment of
  :data:`PROBE_STEPS` compiled and run once, then timed (evaluation,
  checkpoints and store writes are not training, so a sweep's own wall
  time would undercount its speed)."""
  trials = samplers.make_trials([{**task.base_params(), **c}
                                 for c in configs])
  group = plan_groups(trials, len(trials))[0]
  prog = engine.get_program(group.static, task)
  state = prog.init(engine.seed_array([t.seed for t in trials]),
                    engine.hparam_arrays([t.params for t in trials],
                                         horizon=PROBE_STEPS))
  data, key = task.data(), engine.data_key(0)
  warm, _ = prog.segment(state, data.train, key, num_steps=PROBE_STEPS)
  jax.block_until_ready(warm)
  start = time.perf_counter()
  done, _ = prog.segment(state, data.train, key, num_steps=PROBE_STEPS)
  jax.block_until_ready(done)
  return PROBE_STEPS / (time.perf_counter() - start)


def plot(path: str, rows, seconds: float) -> None:
  fig = common.figure(10, 4.2)
  for i, (axis, label) in enumerate((("truncation", "TBPTT window"),
                                     ("batch_size", "batch size"))):
    ax = fig.add_subplot(1, 2, i + 1)
    mine = sorted((r for r in rows if r["axis"] == axis),
                  key=lambda r: r[axis])
    xs = [r[axis] for r in mine]
    ax.plot(xs, [math.nan if r["best_val"] is None else r["best_val"]
                 for r in mine], "o-", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    ax.set_ylabel(f"best val bpc after {seconds:g} s", color="tab:blue")
    speed = ax.twinx()
    speed.plot(xs, [r["chars_per_s_per_trial"] for r in mine], "s--",
               color="tab:orange")
    speed.set_ylabel("characters/s per trial", color="tab:orange")
    ax.set_title(f"{label} at equal wall time", fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
