"""Run by test_devices.py in a child process with 4 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before
JAX starts, hence a separate process). Prints one JSON object of facts.

Usage: ``devices_child.py MODE WORKDIR DEVICES CONFIGS`` with MODE
``check`` (the sharding facts, and a sweep on DEVICES against one device),
``compare`` (the sweep into WORKDIR, which may continue an interrupted one,
against one device) or ``sweep`` (only the sweep); the sweep trains the
first CONFIGS of :data:`CONFIGS` (of :data:`LANE_CONFIGS` for ``check``).
"""

import json
import sys
import time

import jax
import numpy as np

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep.tasks.lm import python_docs_text

TINY = {"hidden_size": 16, "embed_size": 8, "batch_size": 4, "truncation": 8}
# Two static configurations of three trials each: K=3, not a multiple of 4.
CONFIGS = [dict(TINY, cell=cell, learning_rate=lr, output_dropout=d,
                recurrent_dropout=d)
           for cell in ("lstm", "gru")
           for lr, d in ((1e-3, 0.0), (3e-3, 0.3), (1e-2, 0.1))]
# check's sweep: two static configurations of two trials each, which
# train side by side on lanes of 2 devices, a slot per device (on one lane
# of 4 each would pad to 4 slots, one group after the other).
LANE_CONFIGS = CONFIGS[:2] + CONFIGS[3:5]
STEPS, EVAL_EVERY = 12, 4


def task():
  return rs.CharLM(seq_len=16, text=python_docs_text()[:40_000])


def sweep(workdir, devices, configs, group_size=3):
  result = rs.run_trials(task(), configs, steps=STEPS, eval_every=EVAL_EVERY,
                         max_group_size=group_size, workdir=workdir,
                         devices=devices,
                         checkpoint_seconds=0.0, log=lambda line: print(line, file=sys.stderr))
  return {str(r.trial_id): r.curves for r in result.trials}


def shard_facts(state):
  """Per leaf: (devices holding a shard, rows per shard, partition spec)."""
  out = set()
  for leaf in jax.tree_util.tree_leaves(state):
    shards = leaf.addressable_shards
    out.add((len({s.device for s in shards}),
             tuple(sorted({s.data.shape[0] for s in shards})),
             str(leaf.sharding.spec)))
  return sorted(out)


def record_groups():
  """Wraps the runner's run_group: each group's devices and wall-clock
  interval, in the returned list."""
  seen = []
  real = rs.runner.run_group

  def run_group(task_, group, **kwargs):
    start = time.monotonic()
    with engine.count_compiles() as compiles:
      out = real(task_, group, **kwargs)
    devices = kwargs.get("devices") or [jax.devices()[0]]
    seen.append({"group": group.group_id,
                 "devices": sorted(d.id for d in devices),
                 "start": start, "end": time.monotonic(),
                 "compiled": sorted(compiles.names)})
    return out

  rs.runner.run_group = run_group
  return seen


def check(workdir, devices, configs):
  facts = {"devices": len(jax.devices())}
  t = task()
  trials = rs.make_trials(CONFIGS[:3] + CONFIGS[:3] + CONFIGS[:2])  # K=8
  static = rs.StaticConfig.from_params(trials[0].params)
  prog = engine.get_program(static, t, devices=jax.devices())
  state = prog.init(engine.seed_array([x.seed for x in trials]),
                    engine.hparam_arrays([x.params for x in trials]))
  facts["init"] = shard_facts(state)
  data = prog.put_replicated(t.data())
  state, seg = prog.segment(state, data.train,
                            prog.put_replicated(engine.data_key(0)),
                            num_steps=2)
  facts["segment"] = shard_facts(state)
  facts["segment_metrics"] = shard_facts(seg)
  val = prog.evaluate(state, data.val)
  facts["evaluate"] = shard_facts(val)
  # One trial at a time on each device (2 slots each): the same state and
  # metrics, sharded the same way.
  chunked = engine.get_program(static, t, engine.EngineOptions(trial_chunk=1),
                               devices=jax.devices())
  start = chunked.init(engine.seed_array([x.seed for x in trials]),
                       engine.hparam_arrays([x.params for x in trials]))
  cstate, cseg = chunked.segment(start, data.train,
                                 chunked.put_replicated(engine.data_key(0)),
                                 num_steps=2)
  cval = chunked.evaluate(cstate, data.val)
  facts["chunked"] = [shard_facts(cstate), shard_facts(cval)]
  # Largest difference of each leaf relative to its largest value.
  facts["chunk_error"] = max(
      float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))) /
            max(float(np.max(np.abs(np.asarray(b, np.float64)))), 1e-12))
      for a, b in zip(
          jax.tree_util.tree_leaves((cstate.trials.params, cseg, cval)),
          jax.tree_util.tree_leaves((state.trials.params, seg, val))))
  # Compiled at once from shapes, in threads: the same sharded programs,
  # which the calls then use (nothing more compiles), the same numbers.
  once = engine.get_program(static, t,
                            engine.EngineOptions(compile_at_once=True),
                            devices=jax.devices())
  seeds = engine.seed_array([x.seed for x in trials])
  hp = engine.hparam_arrays([x.params for x in trials])
  key = once.put_replicated(engine.data_key(0))
  for compiling in once.prepare(seeds, hp, data, key):
    compiling.result()
  with engine.count_compiles() as compiles:
    ostate, oseg = once.segment(once.init(seeds, hp), data.train, key,
                                num_steps=2)
    oval = once.evaluate(ostate, data.val)
  facts["at_once"] = [shard_facts(ostate), shard_facts(oval),
                      compiles.requests]
  facts["at_once_equal"] = all(
      np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
          jax.tree_util.tree_leaves((ostate, oseg, oval)),
          jax.tree_util.tree_leaves((state, seg, val))))
  # auto sizing compiles the sharded program: K a multiple of the devices.
  sizer = rs.sizing.AutoSizer(t, steps=STEPS, devices=jax.devices())
  facts["auto"] = sizer.choose(static, trials[:6]).k
  groups = record_groups()
  facts["sharded"] = sweep(workdir, devices, configs, group_size="auto")
  facts["groups"] = list(groups)
  facts["one_device"] = sweep(None, 1, configs)
  store = rs.Store(workdir)
  facts["stored_trials"] = sorted(r.trial_id for r in store.results())
  with open(f"{workdir}/results.csv", encoding="utf-8") as f:
    facts["csv_rows"] = len(f.read().strip().splitlines()) - 1
  return facts


def main():
  mode, workdir, devices, n = sys.argv[1:5]
  configs = (LANE_CONFIGS if mode == "check" else CONFIGS)[:int(n)]
  if mode == "check":
    facts = check(workdir, devices, configs)
  else:
    facts = {"sharded": sweep(workdir, devices, configs)}
    if mode == "compare":
      facts["one_device"] = sweep(None, 1, configs)
  print(json.dumps(facts, default=lambda x: np.asarray(x).tolist()))


if __name__ == "__main__":
  main()
