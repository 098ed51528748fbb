import time, numpy as np, jax
from rnnsweep import bench, engine
from rnnsweep.groups import plan_groups
w = bench.WORKLOADS["S"]; task = bench.workload_task(w)
trials = bench.make_trials(bench.trial_configs(w, 8))
group = plan_groups(trials, 8)[0]
prog = engine.get_program(group.static, task, engine.EngineOptions())
hp = engine.hparam_arrays([t.params for t in trials]); seeds = engine.seed_array([t.seed for t in trials])
data = task.data(); key = engine.data_key(0)
st = prog.init(seeds, hp)
print("parts", prog.parts(8), "chunk", prog.chunk(8), "chunk4", prog.chunk(4))
real = engine.Program.parts
for r in range(3):
  for mode in ("parts", "one"):
    engine.Program.parts = real if mode == "parts" else (lambda self, k: 1)
    prog.segment(st, data.train, key, num_steps=1)
    t=time.perf_counter(); out,_=prog.segment(st, data.train, key, num_steps=10); jax.block_until_ready(out); print(mode, round(time.perf_counter()-t,3))
