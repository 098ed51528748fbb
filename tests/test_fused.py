"""The fused recurrence kernel (``recurrence="pallas"``, Pallas interpret
mode on this CPU) against the independent reference, against the XLA
recurrence inside the engine's vmapped TBPTT training, and its fallback;
its Triton IR as lowered for a GPU, and the rules that decide the
fallback and the warps, against what Triton compiled for sm_90.
(Its bfloat16 compute is checked in test_models.py with the XLA path's.)"""

import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import models
from rnnsweep.groups import StaticConfig
from rnnsweep.models import fused
import reference
from conftest import ROOT, TINY, subprocess_env
from test_models import B, CELLS, D, H, RATES, T, _case, _close, _loss_and_grads


@pytest.mark.parametrize("cell", CELLS)
def test_fused_model_equals_independent_reference(cell, layers=2,
                                                  tokens=True):
  """Outputs, final carries and gradients (every parameter and the
  starting carry, so the backward kernel's every path) equal the
  reference's to 1e-5, with each dropout alone, all together, and naive
  per-step recurrent masks."""
  model, params, carry, x, _ = _case(cell, layers, tokens, RATES["all"],
                                     recurrence="pallas")
  ours = jax.jit(lambda p, c, m: _loss_and_grads(
      lambda p, c: model.apply({"params": p}, c, x, models.DropoutMasks(*m)),
      p, c))
  ref = jax.jit(lambda p, c, m: _loss_and_grads(
      lambda p, c: reference.forward(cell, p, c, x, m), p, c))
  cases = {name: reference.bernoulli_masks(np.random.default_rng(len(name)),
                                           rates, B, D, H, layers)
           for name, rates in RATES.items()}
  cases["per step"] = reference.bernoulli_masks(
      np.random.default_rng(9), RATES["all"], B, D, H, layers, steps=T)
  for name, masks in cases.items():
    c1, y1, g1 = ours(params, carry, masks)
    c2, y2, g2 = ref(params, carry, masks)
    _close(y1, y2, 1e-5, name)
    jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, name), c1, c2)
    jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, name), g1, g2)
    assert all(float(jnp.max(jnp.abs(g))) > 0
               for g in jax.tree_util.tree_leaves(g1)), name


@pytest.mark.parametrize("recurrence", ["pallas", "xla_vjp"])
def test_fused_group_training_equals_the_xla_recurrence(
    tiny_lm, recurrence, cell="lstm", dropout="variational"):
  """Three trials trained together (vmap over the kernel's trial grid,
  TBPTT windows with carries handed on, dropout, Adam) follow the XLA
  recurrence's curves to 1e-5, with the fused kernel and with its
  algorithm in an XLA scan (``xla_vjp``)."""
  configs = [dict(TINY, cell=cell, learning_rate=lr, recurrent_dropout=d,
                  output_dropout=d, recurrent_dropout_mode=dropout)
             for lr, d in ((3e-3, 0.0), (1e-2, 0.3), (2e-2, 0.2))]
  curves = {}
  for name in ("xla", recurrence):
    result = rs.run_trials(
        tiny_lm, configs, steps=6, eval_every=3, max_group_size=3,
        options=rs.EngineOptions(recurrence=name))
    curves[name] = [r.curves for r in result.trials]
  for a, b in zip(curves[recurrence], curves["xla"]):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)
  finals = {round(c["val/bits_per_char"][-1], 5) for c in curves[recurrence]}
  assert len(finals) == 3


def test_unsupported_shapes_say_why():
  assert fused.unsupported("lstm", 32, 128, platform="gpu",
                           dtype="bfloat16") is None
  assert fused.unsupported("gru", 3, 5, platform="cpu") is None  # interpret
  assert fused.unsupported("lstm", 24, 128, platform="gpu") == (
      "batch_size 24 is not a power of two >= 16 (Triton's block shapes)")
  assert "hidden_size 8" in fused.unsupported("gru", 32, 8, platform="gpu")
  assert "tpu" in fused.unsupported("lstm", 32, 128, platform="tpu")
  assert fused.unsupported("lstm", 128, 512, platform="cpu") is None


_WITHOUT_TRITON = """
import sys
sys.modules["jax.experimental.pallas.triton"] = None  # import fails
sys.path.insert(0, "tests")
import jax, numpy as np
from rnnsweep import models
from rnnsweep.models import fused
from test_models import RATES, _case
assert fused.pl_triton is None
print(fused.unsupported("lstm", 32, 128, platform="gpu", dtype="bfloat16"))
model, params, carry, x, masks = _case("gru", 1, True, RATES["all"],
                                       recurrence="pallas")
y = model.apply({"params": params}, carry, x, models.DropoutMasks(*masks))[1]
np.save(sys.argv[1], np.asarray(y))
"""


def test_a_jax_without_pallas_triton_still_imports_and_interprets(tmp_path):
  """jax 0.11 deprecates the Pallas Triton backend the kernel is written
  for: a jax without it must still import rnnsweep, fall back on a GPU
  with the reason, and run the kernel in interpret mode elsewhere."""
  out = subprocess.run(
      [sys.executable, "-c", _WITHOUT_TRITON, str(tmp_path / "y.npy")],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == (
      f"jax {jax.__version__} has no Pallas Triton backend "
      "(jax.experimental.pallas.triton), which the kernel is written for")
  model, params, carry, x, masks = _case("gru", 1, True, RATES["all"],
                                         recurrence="pallas")
  y = model.apply({"params": params}, carry, x, models.DropoutMasks(*masks))[1]
  np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.asarray(y))


# Shared memory (KiB, the larger kernel's, at one pipelining stage) that
# Triton 3.9 allocated compiling the kernels for sm_90, read with
# benchmarks/kernel_resources.py on 2026-12-02: a program may use 227 KiB.
COMPILED_SHARED_KIB = {
    ("lstm", 32, 128, "bfloat16"): 137, ("lstm", 32, 128, "float32"): 321,
    ("gru", 32, 128, "bfloat16"): 105, ("gru", 32, 128, "float32"): 209,
    ("simple", 32, 128, "float32"): 81, ("simple", 32, 256, "float32"): 289,
    ("lstm", 32, 256, "bfloat16"): 529, ("lstm", 128, 64, "float32"): 193,
    ("gru", 128, 128, "float32"): 257, ("lstm", 128, 128, "bfloat16"): 193,
}


# What XLA's own Triton asked for compiling the kernels on an H200 (jax
# 0.11.2, benchmarks/fused_check.py, 2026-12-04), where it differed: the S
# GRU in float32 failed with "requested 262144, available: 232448".
XLA_SHARED_KIB = {("gru", 32, 128, "float32"): 256}


def test_the_shared_memory_rule_covers_what_the_compiler_allocated():
  """The kernels stage a trial's recurrent weights in shared memory: a
  shape runs fused on an H100/H200 exactly where the compiled kernels fit
  in 227 KiB under both compilers seen (the triton package's and XLA's),
  and the estimate is never below what either allocated, nor more than
  four [B, H] float32 tiles above it."""
  for (cell, b, h, dtype), kib in COMPILED_SHARED_KIB.items():
    kib = max(kib, XLA_SHARED_KIB.get((cell, b, h, dtype), 0))
    estimate = fused.shared_memory_bytes(cell, b, h, dtype)
    assert kib * 1024 <= estimate <= kib * 1024 + 4 * b * h * 4 + 1024, (
        cell, b, h, dtype)
    why = fused.unsupported(cell, b, h, platform="gpu", dtype=dtype,
                            arch="9.0")
    assert (why is None) == (kib <= 227), (cell, b, h, dtype, why)
  assert fused.unsupported("lstm", 32, 128, platform="gpu", arch="9.0") == (
      "the recurrent weights (4 x 128 x 128 float32) and the step's tiles "
      "need about 321 KiB of shared memory, over the 227 KiB a program may "
      "use on sm_90")
  # An A100 allows 163 KiB, an L4 99: the S GRU in bfloat16 (105) runs
  # fused on the first only.
  assert fused.unsupported("gru", 32, 128, platform="gpu", dtype="bfloat16",
                           arch="8.0") is None
  assert "over the 99 KiB a program may use on sm_89" in fused.unsupported(
      "gru", 32, 128, platform="gpu", dtype="bfloat16", arch="8.9")


def test_kernel_warps_follow_the_gate_accumulators():
  """8 warps (where Triton's default 4 spilled the S LSTM and GRU kernels
  compiled for sm_90), 16 once the step's G x B x H float32 gate
  accumulators pass 64 a thread at 8 (B=128 spilled least at 16)."""
  assert fused.num_warps("lstm", 32, 128) == 8   # 16384 accumulators
  assert fused.num_warps("gru", 32, 128) == 8
  assert fused.num_warps("simple", 32, 64) == 8
  assert fused.num_warps("lstm", 32, 256) == 16  # 32768
  assert fused.num_warps("lstm", 128, 128) == 16
  assert fused.num_warps("gru", 128, 64) == 16   # 24576
  assert fused.num_warps("simple", 128, 128) == 8


def test_the_kernels_lower_for_cuda_with_the_weights_loaded_once():
  """On this CPU, the fused layer's Triton kernels as jax lowers them for
  a GPU: forward and backward, each loading a trial's four recurrent
  weight tiles before its time loop and none inside it (what keeps them on
  chip), with four recurrent dots a step, at the engine's 8 warps and one
  pipelining stage; and each kernel with its own stages when asked."""
  kernels = fused.triton_kernels("lstm", batch=32, hidden=16,
                                 dtype="bfloat16", window=4, input_size=8)
  assert [(k["name"], k["num_warps"], k["num_stages"]) for k in kernels] == [
      ("fused_lstm_forward", 8, 1), ("fused_lstm_backward", 8, 1)]
  assert [k["num_stages"] for k in fused.triton_kernels(
      "gru", 32, 16, "float32", window=2, input_size=8, stages=(3, 2))] == [
          3, 2]
  weight_load = "tensor<16x16x!tt.ptr<bf16>>"  # [H, H]; [B, H] are 32x16
  for kernel in kernels:
    before, loop = kernel["ttir"].split("scf.for", 1)
    assert len([l for l in before.splitlines()
                if "tt.load" in l and weight_load in l]) == 4, kernel["name"]
    assert not [l for l in loop.splitlines()
                if "tt.load" in l and weight_load in l], kernel["name"]
    assert loop.count("tt.dot ") == 4, kernel["name"]


def test_a_call_the_kernel_cannot_take_on_a_gpu_runs_the_xla_scan(
    monkeypatch):
  """A program built for the fused kernel also runs shapes it was not
  checked for: its evaluation's batch (181 validation sequences on
  workload S, which Triton's power-of-two blocks refuse: the H200 failed
  to lower it). Lowered for CUDA on this CPU, as on a GPU, a layer over
  24 sequences runs the XLA scan; one over 32, the Triton kernels."""
  monkeypatch.setattr(fused, "target_platform", lambda: "gpu")
  hidden, steps, inputs = 16, 3, 8
  params = {"w_i": jnp.zeros((inputs, 4 * hidden)),
            "w_h": jnp.zeros((hidden, 4 * hidden)),
            "b": jnp.zeros((4 * hidden,))}

  def triton_calls(batch):
    zeros = jnp.zeros((batch, hidden))

    def loss(p, x):
      _, ys = models.layer_scan("lstm", p, (zeros, zeros), x,
                                jnp.ones((batch, hidden)),
                                dtype=jnp.bfloat16, recurrence="pallas")
      return ys.astype(jnp.float32).sum()

    # The input made before the stand-in GPU's abstract mesh: jax 0.11
    # refuses an eager op under it.
    x = jnp.zeros((batch, steps, inputs))
    with fused._abstract_gpu():  # pylint: disable=protected-access
      text = jax.jit(jax.grad(loss)).trace(params, x).lower(
          lowering_platforms=("cuda",)).as_text()
    return text.count("__gpu$xla.gpu.triton")

  assert triton_calls(32) == 2  # forward and backward kernels
  assert triton_calls(24) == 0


def test_an_unsupported_shape_runs_the_xla_recurrence(monkeypatch, caplog):
  static = StaticConfig(cell="gru", hidden_size=8, num_layers=1,
                        batch_size=4, truncation=4, embed_size=8,
                        optimizer="adam")
  task = rs.Adding(seq_len=8, num_val=8)
  monkeypatch.setattr(
      fused, "unsupported", lambda cell, b, h, platform=None, dtype=None:
      f"batch_size {b} no in {dtype}")
  with caplog.at_level(logging.WARNING, logger="rnnsweep"):
    trial = engine.OneTrial(static, task, rs.EngineOptions(
        recurrence="pallas", compute_dtype="bfloat16"))
  # The compute dtype reaches the check (the weights' size depends on it).
  assert trial.fallback == "batch_size 4 no in bfloat16"
  assert trial.model.recurrence == "xla"
  assert ("recurrence=pallas: batch_size 4 no in bfloat16; gru(h=8x1)"
          in caplog.text)
  assert engine.OneTrial(static, task).fallback is None


def test_recurrence_option_is_checked():
  with pytest.raises(ValueError, match="recurrence must be one of auto, "
                     "xla, xla_vjp, pallas, got 'cuda'"):
    rs.EngineOptions(recurrence="cuda")
