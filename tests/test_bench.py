"""The benchmark code runs at tiny sizes and measures what it claims.

No wall-clock time is asserted: only counts and shapes."""

import rnnsweep as rs
from rnnsweep import bench
from rnnsweep.models import fused

TINY = bench.Workload("tiny", hidden=8, batch=4, window=4, vocab=64, embed=8,
                      updates=3)


def test_workload_definitions():
  s, l = bench.WORKLOADS["S"], bench.WORKLOADS["L"]
  assert (s.hidden, s.batch, s.window, s.vocab, s.updates) == (128, 32, 32,
                                                               64, 50)
  assert (l.hidden, l.batch) == (512, 128)
  # 6*G*H*(I+H) per token for the LSTM plus 6*H*V for the head.
  assert s.flops_per_trial_step() == (6 * 4 * 128 * (64 + 128) +
                                      6 * 128 * 64) * 32 * 32
  configs = bench.trial_configs(s, 5)
  assert [c["learning_rate"] for c in configs][::4] == [1e-4, 1e-2]
  assert [c["output_dropout"] for c in configs][::4] == [0.0, 0.5]
  assert bench.workload_task(TINY).vocab_size == 64


def test_group_measurement_and_the_naive_loop_compile_as_claimed():
  task = bench.workload_task(TINY)
  r = bench.measure_group(TINY, 2, repeats=1, task=task)
  assert r["k"] == 2 and r["trial_steps_per_s"] > 0
  assert r["compile_s"] > 0 and r["temp_bytes"] is not None
  assert r["recurrence"] == "xla" and r["fallback"] is None
  naive = bench.measure_naive(TINY, 2, task=task)
  # One train program per trial: that is what makes the naive loop slow.
  assert naive["compiles"] >= 2 and naive["trial_steps_per_s"] > 0
  assert rs.engine.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: 1 GiB"))
  assert not rs.engine.is_out_of_memory(ValueError("shape mismatch"))


def test_a_fallen_back_measurement_says_what_ran(monkeypatch):
  """A pallas row on shapes the kernel cannot run is the XLA recurrence's,
  and says so (the same program as above: nothing new compiles)."""
  monkeypatch.setattr(fused, "unsupported",
                      lambda *a, **k: "hidden_size 8 too small")
  r = bench.measure_group(TINY, 2, repeats=1, task=bench.workload_task(TINY),
                          options=rs.EngineOptions(recurrence="pallas"))
  assert r["recurrence"] == "xla"
  assert r["fallback"] == "hidden_size 8 too small"
