"""The fused recurrence against the XLA recurrence at a benchmark's real
shapes, on whatever device this is (on a GPU: the Triton kernels, which the
CPU test suite cannot reach). Outputs, final carries and gradients of one
layer over one window, per cell and compute dtype; exits non-zero when one
is off by more than the tolerance (1e-5 float32, 3e-2 bfloat16, relative
to the largest magnitude).

  python benchmarks/fused_check.py                      # S shapes
  python benchmarks/fused_check.py --batch=4 --hidden=8 --window=6   # a CPU check
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rnnsweep import models
from rnnsweep.models import fused

_CELLS = flags.DEFINE_list("cells", ["lstm", "gru", "simple"], "Cells.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                            "Compute dtypes.")
_BATCH = flags.DEFINE_integer("batch", 32, "B.", lower_bound=1)
_HIDDEN = flags.DEFINE_integer("hidden", 128, "H.", lower_bound=1)
_INPUT = flags.DEFINE_integer("input", 64, "Input width D.", lower_bound=1)
_WINDOW = flags.DEFINE_integer("window", 32, "Time steps T.", lower_bound=1)
_K = flags.DEFINE_integer("k", 4, "Trials vmapped together.", lower_bound=1)

TOLERANCE = {"float32": 1e-5, "bfloat16": 3e-2}


def _inputs(cell, seed):
  b, h, d, t = _BATCH.value, _HIDDEN.value, _INPUT.value, _WINDOW.value
  g = models.GATES[cell]
  ks = jax.random.split(jax.random.PRNGKey(seed), 8)
  params = {"w_i": jax.random.normal(ks[0], (d, g * h)) / np.sqrt(d),
            "w_h": jax.random.normal(ks[1], (h, g * h)) / np.sqrt(h),
            "b": 0.1 * jax.random.normal(ks[2], (g * h,))}
  if cell == "gru":
    params["b_hn"] = 0.1 * jax.random.normal(ks[3], (h,))
  h0 = 0.5 * jnp.tanh(jax.random.normal(ks[4], (b, h)))
  carry = (0.5 * jax.random.normal(ks[5], (b, h)), h0) if cell == "lstm" else h0
  x = jax.random.normal(ks[6], (b, t, d))
  mask = jnp.where(jax.random.bernoulli(ks[7], 0.75, (b, h)), 1 / 0.75, 0.0)
  return params, carry, x, mask


def run(cell: str, dtype: str) -> float:
  """The largest relative difference of K vmapped trials' outputs,
  carries and gradients between the two recurrences."""
  compute = jnp.bfloat16 if dtype == "bfloat16" else None

  def loss(params, carry, x, mask, recurrence):
    new, ys = models.layer_scan(cell, params, carry, x, mask, dtype=compute,
                                recurrence=recurrence, hoist_input=True)
    total = jnp.sum(jnp.sin(ys.astype(jnp.float32))) + sum(
        jnp.sum(jnp.cos(c)) for c in jax.tree_util.tree_leaves(new))
    return total, (new, ys)

  def both(recurrence):
    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    return jax.jit(jax.vmap(lambda *a: grad(*a, recurrence)))

  batched = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs),
                                   *[_inputs(cell, s) for s in range(_K.value)])
  out = {r: jax.tree_util.tree_leaves(both(r)(*batched))
         for r in ("xla", "pallas")}
  worst = 0.0
  for a, b in zip(out["pallas"], out["xla"]):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    worst = max(worst, float(np.max(np.abs(a - b))) /
                max(float(np.max(np.abs(b))), 1e-6))
  return worst


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # Compare the maths, not TF32 rounding (XLA's GPU default for float32).
  jax.config.update("jax_default_matmul_precision", "highest")
  backend = jax.default_backend()
  why = fused.unsupported("lstm", _BATCH.value, _HIDDEN.value)
  print(f"fused recurrence vs XLA on {backend} ({jax.devices()[0].device_kind}"
        f"), K={_K.value} B={_BATCH.value} H={_HIDDEN.value} "
        f"D={_INPUT.value} T={_WINDOW.value}"
        + ("" if backend == "gpu" else "; Pallas interpret mode"))
  if why:
    sys.exit(f"fused_check.py: error: these shapes fall back: {why}")
  failed = []
  for cell in _CELLS.value:
    for dtype in _DTYPES.value:
      worst = run(cell, dtype)
      ok = worst <= TOLERANCE[dtype]
      failed += [] if ok else [f"{cell}/{dtype}"]
      print(f"  {cell:<7} {dtype:<9} max relative difference {worst:.2e} "
            f"(tolerance {TOLERANCE[dtype]:.0e}) {'ok' if ok else 'FAILED'}",
            flush=True)
  if failed:
    sys.exit(f"fused_check.py: error: {', '.join(failed)} differ from the "
             f"XLA recurrence")


if __name__ == "__main__":
  app.run(main)
