"""Speed levers keep the numbers: unroll, donation, bfloat16 compute, and
the persistent compilation cache."""

import dataclasses
import logging
import subprocess
import sys

import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep.groups import StaticConfig
from rnnsweep.models import fused
from conftest import TINY, subprocess_env

# The simple cell's carry dtype needs a cast under bfloat16 (the gated
# cells' carries stay float32 by promotion): cover one of each.
CONFIGS = [dict(TINY, cell=c, learning_rate=lr, output_dropout=0.1,
                recurrent_dropout=0.1)
           for c in ("simple", "lstm") for lr in (1e-3, 5e-3)]


@pytest.fixture(scope="module")
def baseline(tiny_lm):
  return rs.run_trials(tiny_lm, CONFIGS, steps=24, eval_every=8,
                       max_group_size=2)


def _compare(a, b, rtol):
  for ra, rb in zip(a.trials, b.trials):
    assert ra.status == rb.status
    for k in ra.curves:
      np.testing.assert_allclose(rb.curves[k], ra.curves[k], rtol=rtol,
                                 atol=0, err_msg=f"{ra.trial_id} {k}")


@pytest.mark.parametrize("options, rtol", [
    (rs.EngineOptions(unroll=4), 1e-5),
    (rs.EngineOptions(donate=True), 0.0),  # the same program: bit for bit
    # bfloat16 keeps ~3 significant digits in matmuls; parameters,
    # optimizer state, carries and losses stay float32.
    (rs.EngineOptions(compute_dtype="bfloat16"), 2e-2),
])
def test_lever_keeps_the_numbers(tiny_lm, baseline, options, rtol):
  r = rs.run_trials(tiny_lm, CONFIGS, steps=24, eval_every=8,
                    max_group_size=2, options=options)
  _compare(baseline, r, rtol)


def test_hoisted_input_projection_keeps_the_numbers(tiny_lm, baseline):
  # The same function with the input matmul moved out of the time loop
  # (every cell is checked against the scan in test_models; here the
  # engine's training and evaluation paths, on the LSTM half).
  lstm = rs.make_trials([{**tiny_lm.base_params(), **c}
                         for c in CONFIGS])[2:]  # ids and seeds 2, 3 kept
  assert {t.params["cell"] for t in lstm} == {"lstm"}
  settings = rs.SweepSettings.make(
      tiny_lm, sampler="explicit", space=None, num_trials=2, steps=24,
      eval_every=8, max_group_size=2, seed=0,
      options=rs.EngineOptions(hoist_input=True))
  r = rs.execute(tiny_lm, lstm, settings)
  assert [t.trial_id for t in r.trials] == [2, 3]
  _compare(dataclasses.replace(baseline, trials=baseline.trials[2:]), r, 1e-5)


def test_bfloat16_group_equals_alone(tiny_lm):
  bf16 = rs.EngineOptions(compute_dtype="bfloat16")
  together = rs.run_trials(tiny_lm, CONFIGS[2:4], steps=16, eval_every=8,
                           max_group_size=2, options=bf16)
  alone = rs.run_trials(tiny_lm, CONFIGS[2:4], steps=16, eval_every=8,
                        max_group_size=1, options=bf16)
  _compare(together, alone, 1e-2)


def test_bad_options():
  with pytest.raises(ValueError, match="compute_dtype"):
    rs.EngineOptions(compute_dtype="float16")
  for bad in (0, 1.5, True, "8"):
    with pytest.raises(ValueError, match="unroll must be 'auto' or a "
                       "positive integer"):
      rs.EngineOptions(unroll=bad)
  assert engine.parse_unroll("8") == 8
  assert engine.parse_unroll(" auto") == "auto"
  with pytest.raises(ValueError, match="--unroll must be 'auto' or a "
                     "positive integer, got '0'"):
    engine.parse_unroll("0", "--unroll")


# -- auto: the measured best combination by device ---------------------------

# (platform, compute capability) -> (compute dtype, unroll, recurrence as
# recorded), as the options' docs state it: bfloat16 and unroll 8 from
# Ampere (8.0), the fused kernel chosen per group from Hopper (9.0), and
# the float32 defaults everywhere else.
AUTO_CHOICES = [
    ("cpu", None, ("float32", 1, "xla")),
    ("tpu", None, ("float32", 1, "xla")),
    ("gpu", None, ("float32", 1, "xla")),  # a GPU with no CUDA capability
    ("gpu", "7.5", ("float32", 1, "xla")),
    ("gpu", "8.0", ("bfloat16", 8, "xla")),
    ("gpu", "8.9", ("bfloat16", 8, "xla")),
    ("gpu", "9.0", ("bfloat16", 8, "auto")),
    ("gpu", "10.0", ("bfloat16", 8, "auto")),
]


@pytest.mark.parametrize("platform, arch, chosen", AUTO_CHOICES)
def test_auto_options_are_chosen_by_device(platform, arch, chosen,
                                           monkeypatch):
  monkeypatch.setattr(fused, "cuda_arch", lambda: arch)
  done = rs.EngineOptions().resolved(platform)
  assert (done.compute_dtype, done.unroll, done.recurrence) == chosen
  assert done.resolved(platform) == done  # nothing left to choose twice
  # What was set by name stays, and steers what auto picks beside it.
  named = rs.EngineOptions(compute_dtype="float32", unroll=2,
                           recurrence="pallas").resolved(platform)
  assert (named.compute_dtype, named.unroll, named.recurrence) == (
      "float32", 2, "pallas")
  assert rs.EngineOptions(compute_dtype="float32").resolved(
      platform).recurrence == "xla"
  line = rs.EngineOptions().auto_line(platform)
  assert line.startswith(f"engine options on {platform}")
  assert f"{chosen[0]} compute, unroll {chosen[1]}, the " in line
  assert ("fused recurrence where" in line) == (chosen[2] == "auto")
  assert rs.EngineOptions(compute_dtype="float32", unroll=1,
                          recurrence="xla").auto_line(platform) is None


def test_auto_recurrence_is_the_kernel_where_a_group_fits_it(monkeypatch,
                                                             caplog):
  """On a (stood-in) Hopper GPU each group takes the fused kernel if its
  shapes fit, else the XLA scan with the reason, said quietly: auto is no
  request for the kernel."""
  monkeypatch.setattr(fused, "cuda_arch", lambda: "9.0")
  monkeypatch.setattr(fused, "target_platform", lambda: "gpu")
  task = rs.Adding(seq_len=8, num_val=8)

  def trial(hidden, **options):
    static = StaticConfig(cell="lstm", hidden_size=hidden, num_layers=1,
                          batch_size=32, truncation=8, embed_size=8,
                          optimizer="adam")
    return engine.OneTrial(static, task, rs.EngineOptions(**options),
                           platform="gpu")

  with caplog.at_level(logging.INFO, logger="rnnsweep"):
    fits, too_big = trial(128), trial(512)
  assert fits.recurrence == fits.model.recurrence == "pallas"
  assert fits.fallback is None
  assert (fits.options.compute_dtype, fits.options.unroll) == ("bfloat16", 8)
  assert too_big.recurrence == too_big.model.recurrence == "xla"
  assert "shared memory" in too_big.fallback
  assert [r.levelname for r in caplog.records] == ["INFO"]
  assert "recurrence=auto: the recurrent weights" in caplog.text
  # float32 compute: auto keeps the XLA scan (no reason to give).
  f32 = trial(128, compute_dtype="float32")
  assert (f32.recurrence, f32.fallback) == ("xla", None)
  # Off the GPU the same options build the XLA scan.
  monkeypatch.setattr(fused, "target_platform", lambda: "cpu")
  static = StaticConfig(cell="lstm", hidden_size=128, num_layers=1,
                        batch_size=32, truncation=8, embed_size=8,
                        optimizer="adam")
  cpu = engine.OneTrial(static, task)
  assert (cpu.recurrence, cpu.options.compute_dtype, cpu.options.unroll) == (
      "xla", "float32", 1)


def test_a_sweep_records_what_auto_chose(tiny_lm, baseline, tmp_path):
  """A sweep with the defaults says what auto chose, records the chosen
  values (so it is named, compared and continued as one that spelt them
  out: a workdir of an older version, which knew no auto, continues), and
  trains as they do."""
  trials = rs.make_trials([{**tiny_lm.base_params(), **c} for c in CONFIGS])

  def settings(options):
    return rs.SweepSettings.make(
        tiny_lm, sampler="explicit", space=None, num_trials=len(trials),
        steps=24, eval_every=8, max_group_size=2, seed=0, options=options)

  spelt = settings(rs.EngineOptions(compute_dtype="float32", unroll=1,
                                    recurrence="xla"))
  auto = settings(None)
  assert auto.engine.compute_dtype == "auto"
  assert auto.resolved("cpu") == spelt
  assert auto.resolved("cpu").digest() == spelt.digest()
  lines = []
  rs.execute(tiny_lm, trials, spelt, workdir=str(tmp_path))
  r = rs.execute(tiny_lm, trials, auto, workdir=str(tmp_path),
                 log=lines.append)
  assert lines[0] == ("engine options on cpu, auto: float32 compute, unroll "
                      "1, the XLA recurrence (set --precision, --unroll, "
                      "--recurrence to choose)")
  assert "continuing the sweep" in lines[1]  # nothing left to train
  assert rs.Store(str(tmp_path)).settings()["engine"] == spelt.engine.record()
  _compare(baseline, r, 0.0)


_CACHED_RUN = """
import sys
import rnnsweep as rs
from rnnsweep import engine
engine.enable_compilation_cache(sys.argv[1])
with engine.count_compiles() as compiles:
    r = rs.run_trials(rs.Adding(seq_len=6, num_val=8),
                      [dict(hidden_size=4, batch_size=2, learning_rate=lr)
                       for lr in (1e-3, 1e-2)], steps=4, eval_every=2)
print(compiles.count, r.trials[1].curves["val/mse"][-1])
"""


def test_persistent_cache_compiles_once_across_processes(tmp_path):
  runs = [subprocess.run([sys.executable, "-c", _CACHED_RUN,
                          str(tmp_path / "xla")], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300,
                         check=False) for _ in range(2)]
  for r in runs:
    assert r.returncode == 0, r.stderr[-2000:]
  (first_count, first_mse), (second_count, second_mse) = (
      r.stdout.split() for r in runs)
  assert int(first_count) > 0
  assert int(second_count) == 0  # every program came from the cache
  assert first_mse == second_mse
