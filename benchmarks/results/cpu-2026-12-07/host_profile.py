"""cProfile of a 1,024-trial run_trials of a tiny LSTM, its programs compiled
by a first run (RESULTS.md 2026-12-07). Argument: the number of trials."""
import cProfile, pstats, sys, tempfile, time
import rnnsweep as rs
from rnnsweep import bench
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
w = bench.Workload("T", hidden=8, batch=4, window=8, embed=8, vocab=16, updates=50)
task = bench.workload_task(w)
configs = bench.trial_configs(w, n)
opts = rs.EngineOptions(trial_chunk=0)
# warm compile once at this K so the profile shows host work
with tempfile.TemporaryDirectory() as d:
  rs.run_trials(task, configs, steps=50, eval_every=10, max_group_size=n, options=opts, workdir=d)
with tempfile.TemporaryDirectory() as d:
  pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()
  r = rs.run_trials(task, configs, steps=50, eval_every=10, max_group_size=n, options=opts, workdir=d)
  pr.disable(); print("wall", time.perf_counter() - t)
st = pstats.Stats(pr); st.sort_stats("cumulative").print_stats(45)
