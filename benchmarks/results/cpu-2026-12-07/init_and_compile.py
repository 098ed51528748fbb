"""Init of 256 workload-S trials and the training segment's compile, alone and
started together in one process (CPU; RESULTS.md 2026-12-07)."""
import time, jax, numpy as np
import rnnsweep as rs
from rnnsweep import bench, engine
from rnnsweep.groups import plan_groups
from rnnsweep.samplers import make_trials
w = bench.WORKLOADS["S"]; n = 256
task = bench.workload_task(w)
trials = make_trials(bench.trial_configs(w, n)); group = plan_groups(trials, n)[0]
prog = engine.get_program(group.static, task, rs.EngineOptions())
hp = engine.hparam_arrays([t.params for t in trials], horizon=50); seeds = engine.seed_array([t.seed for t in trials])
data = task.data(); key = engine.data_key(0)
prog.compiled_init(seeds, hp)
t = time.perf_counter(); st = prog.init(seeds, hp); t1 = time.perf_counter(); jax.block_until_ready(st); t2 = time.perf_counter()
print(f"init dispatch {t1-t:.3f} s, until ready {t2-t:.3f} s")
t = time.perf_counter(); st = prog.init(seeds, hp); t1 = time.perf_counter()
c = prog.compiled_segment(st, data.train, key); t2 = time.perf_counter(); jax.block_until_ready(st); t3 = time.perf_counter()
print(f"init dispatch {t1-t:.3f}, segment compile done at {t2-t:.3f}, init ready at {t3-t:.3f}")
prog2 = engine.Program(group.static, task, rs.EngineOptions())
t = time.perf_counter(); c = prog2.compiled_segment(st, data.train, key); print(f"segment compile alone {time.perf_counter()-t:.3f}")
