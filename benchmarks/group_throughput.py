"""Training throughput of one group versus its size K.

For each K, builds a group of K trials (log-spaced learning rates, dropout
0..0.5) on the character LM, times the first segment (compile + run)
separately from repeated steady-state segments (median, fenced with
``block_until_ready``), and reports trial-steps/s, tokens/s and achieved
TFLOP/s counted analytically: training ~ 3x forward = 6*G*H*(I+H) per layer
per token plus 6*H*V for the head (G = 4 LSTM, 3 GRU, 1 simple). Prints the
device and versions with the table and writes JSON.

  python benchmarks/group_throughput.py --ks=1,4,16 --steps=20
"""

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

import jax
import numpy as np

import rnnsweep as rs
from rnnsweep import engine

_CELL = flags.DEFINE_enum("cell", "lstm", ["simple", "lstm", "gru"], "Cell.")
_HIDDEN = flags.DEFINE_integer("hidden", 128, "Hidden size.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")
_WINDOW = flags.DEFINE_integer("window", 32, "TBPTT window.")
_KS = flags.DEFINE_list("ks", "1,2,4,8,16,32", "Group sizes to measure.")
_STEPS = flags.DEFINE_integer("steps", 50, "Updates per timed segment.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed segments per K.")
_OUT = flags.DEFINE_string("out", None, "JSON output path (optional).")

GATES = {"simple": 1, "lstm": 4, "gru": 3}


def train_flops_per_token(cell: str, hidden: int, embed: int,
                          vocab: int) -> float:
  return 6 * GATES[cell] * hidden * (embed + hidden) + 6 * hidden * vocab


def measure(task, k: int) -> dict:
  lrs = np.logspace(-4, -2, k) if k > 1 else [1e-3]
  configs = [dict(cell=_CELL.value, hidden_size=_HIDDEN.value,
                  batch_size=_BATCH.value, truncation=_WINDOW.value,
                  learning_rate=float(lr), output_dropout=0.5 * i / max(k, 2))
             for i, lr in enumerate(lrs)]
  trials = rs.make_trials(configs)
  group = rs.plan_groups(trials, k)[0]
  prog = engine.get_program(group.static, task)
  hp = engine.hparam_arrays([t.params for t in trials])
  seeds = engine.seed_array([t.seed for t in trials])
  data = task.data()
  key = jax.random.PRNGKey(0)
  with engine.count_compiles() as compiles:
    t0 = time.perf_counter()
    state = prog.init(seeds, hp)
    state, m = prog.segment(state, hp, data.train, key, num_steps=_STEPS.value)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    state, m = prog.segment(state, hp, data.train, key,
                            num_steps=_STEPS.value)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  trial_steps = k * _STEPS.value / sec
  tokens = trial_steps * _BATCH.value * _WINDOW.value
  flops = tokens * train_flops_per_token(_CELL.value, _HIDDEN.value, 64,
                                         task.vocab_size)
  return {"k": k, "compile_s": compiles.seconds, "first_segment_s": first,
          "segment_s": sec, "trial_steps_per_s": trial_steps,
          "tokens_per_s": tokens, "tflops": flops / 1e12}


def main(argv):
  del argv
  task = rs.make_task("lm", seq_len=_WINDOW.value * 4)
  dev = jax.devices()[0]
  header = (f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}; "
            f"jax {jax.__version__}; matmul precision "
            f"{jax.config.jax_default_matmul_precision or 'default'}; "
            f"{_CELL.value}({_HIDDEN.value}) batch {_BATCH.value} window "
            f"{_WINDOW.value}, vocab {task.vocab_size}, {_STEPS.value} "
            f"updates/segment")
  print(header)
  print(f"{'K':>6} {'compile s':>10} {'trial-steps/s':>14} {'tokens/s':>12} "
        f"{'TFLOP/s':>8} {'vs K=1':>7}")
  rows = []
  for k in [int(x) for x in _KS.value]:
    r = measure(task, k)
    rows.append(r)
    base = rows[0]["trial_steps_per_s"]
    print(f"{k:>6} {r['compile_s']:>10.2f} {r['trial_steps_per_s']:>14.1f} "
          f"{r['tokens_per_s']:>12.0f} {r['tflops']:>8.3f} "
          f"{r['trial_steps_per_s'] / base:>7.2f}", flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  sys.exit(app.run(main))
