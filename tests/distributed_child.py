"""One process of a sweep run by several (``jax.distributed`` on
127.0.0.1, CPU collectives), for test_distributed.py. Each process has 2
CPU devices (``XLA_FLAGS`` set by the test). Prints one JSON object of
facts on its last line.

Usage: ``distributed_child.py WORKDIR CONFIGS PROCESS_ID NUM_PROCESSES
PORT``; with NUM_PROCESSES 1 the process does not join a job (it
continues a sweep alone). The sweep trains the first CONFIGS of
:data:`devices_child.CONFIGS` with K=3.
"""

import json
import os
import sys

import jax
import numpy as np

import rnnsweep as rs
from devices_child import CONFIGS, STEPS, EVAL_EVERY, task


def main():
  workdir, n, pid, nproc, port = sys.argv[1:6]
  if int(nproc) > 1:
    rs.distributed.initialize(
        "on", coordinator_address=f"127.0.0.1:{port}",
        num_processes=int(nproc), process_id=int(pid),
        heartbeat_timeout_seconds=10)
  result = rs.run_trials(
      task(), CONFIGS[:int(n)], steps=STEPS, eval_every=EVAL_EVERY,
      max_group_size=os.environ.get("CHILD_GROUP_SIZE", "3"),
      workdir=workdir, checkpoint_seconds=0.0,
      log=lambda line: print(line, file=sys.stderr, flush=True))
  facts = {"process": jax.process_index(),
           "processes": jax.process_count(),
           "devices": len(jax.devices()),
           "curves": {str(r.trial_id): r.curves for r in result.trials},
           "groups": sorted({r.group_id for r in result.trials})}
  print(json.dumps(facts, default=lambda x: np.asarray(x).tolist()))


if __name__ == "__main__":
  main()
