"""Run by test_devices.py in a child process with 4 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before
JAX starts, hence a separate process). Prints one JSON object of facts.

Usage: ``devices_child.py MODE WORKDIR DEVICES`` with MODE ``check`` (the
sharding facts, and a sweep on DEVICES against one device), ``compare``
(the sweep into WORKDIR, which may continue an interrupted one, against
one device) or ``sweep`` (only the sweep).
"""

import json
import sys

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
STEPS, EVAL_EVERY = 12, 4


def task():
  return rs.CharLM(seq_len=16, text=python_docs_text()[:40_000])


def sweep(workdir, devices):
  result = rs.run_trials(task(), CONFIGS, steps=STEPS, eval_every=EVAL_EVERY,
                         max_group_size=3, workdir=workdir, devices=devices,
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


def check(workdir, devices):
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
  facts["evaluate"] = shard_facts(prog.evaluate(state, data.val))
  facts["sharded"] = sweep(workdir, devices)
  facts["one_device"] = sweep(None, 1)
  store = rs.Store(workdir)
  facts["stored_trials"] = sorted(r.trial_id for r in store.results())
  with open(f"{workdir}/results.csv", encoding="utf-8") as f:
    facts["csv_rows"] = len(f.read().strip().splitlines()) - 1
  return facts


def main():
  mode, workdir, devices = sys.argv[1:4]
  if mode == "check":
    facts = check(workdir, devices)
  else:
    facts = {"sharded": sweep(workdir, devices)}
    if mode == "compare":
      facts["one_device"] = sweep(None, 1)
  print(json.dumps(facts, default=lambda x: np.asarray(x).tolist()))


if __name__ == "__main__":
  main()
