"""The fused recurrence against the XLA recurrence at a benchmark's real
shapes, on whatever device this is (on a GPU: the Triton kernels, which the
CPU test suite cannot reach). Outputs, final carries and gradients of one
layer over one window, per cell, compute dtype, kernel warps and forward
kernel's pipelining stages (a shape that falls back is a row too), and of
the kernels' algorithm in an XLA scan (``recurrence="xla_vjp"``, a row per
cell and dtype, at any shape); exits non-zero when one is off by more than
the tolerance (1e-5 float32, 3e-2 bfloat16, relative to the largest
magnitude). Each row also times the forward and backward pass of K trials
(median of --repeats, fenced with block_until_ready) against the XLA
recurrence's: a first look at the speed before a whole training program.

  python benchmarks/fused_check.py                      # S shapes
  python benchmarks/fused_check.py --num_warps=auto,4,16 --forward_stages=1,3
  python benchmarks/fused_check.py --batch=128 --hidden=512 --dtypes=bfloat16 --k=16   # L's layer
  python benchmarks/fused_check.py --batch=4 --hidden=8 --window=6   # a CPU check
"""

import itertools
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from rnnsweep import bench
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
_NUM_WARPS = flags.DEFINE_list(
    "num_warps", ["auto"], "The kernel programs' warps on a GPU: auto "
    "(fused.num_warps, from the step's gate accumulators) and/or numbers.")
_FORWARD_STAGES = flags.DEFINE_list(
    "forward_stages", [str(fused.NUM_STAGES)],
    "The forward kernel's software-pipelining stages on a GPU (the "
    "backward kernel keeps fused.NUM_STAGES: at more it does not fit in "
    "shared memory at S shapes); each value is a row.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per row.",
                                lower_bound=1)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where fused_check.json "
                               "goes (the rows and the device).")


def _warps(value: str) -> int | None:
  """``auto`` (``None``) or a power of two from 1 to 32."""
  try:
    return fused.warps_setting(value)
  except ValueError as e:
    raise flags.ValidationError(f"--num_warps: {e}") from None


def _check_warps(values: list[str]) -> bool:
  for value in values:
    _warps(value)
  return True


flags.register_validator("num_warps", _check_warps)
flags.register_validator(
    "forward_stages", lambda v: all(x.isdigit() and 1 <= int(x) <= 8
                                    for x in v),
    "--forward_stages: each value is an integer from 1 to 8")

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


def _worst(got, want) -> float:
  """The largest difference of any leaf, relative to ``want``'s largest
  magnitude."""
  worst = 0.0
  for a, b in zip(jax.tree_util.tree_leaves(got),
                  jax.tree_util.tree_leaves(want)):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    worst = max(worst, float(np.max(np.abs(a - b))) /
                max(float(np.max(np.abs(b))), 1e-6))
  return worst


def run(cell: str, dtype: str, warps: list[int | None],
        forward_stages: list[int], fallback: str | None) -> list[dict]:
  """The XLA scan with the kernels' backward (``xla_vjp``), then per warps
  value and forward kernel's stages the kernel (one row saying why, where
  it falls back): the largest relative difference of K vmapped trials'
  outputs, carries and gradients from the XLA recurrence's, and both
  one's forward-and-backward time."""
  compute = jnp.bfloat16 if dtype == "bfloat16" else None

  def loss(params, carry, x, mask, layer):
    new, ys = layer(params, carry, x, mask)
    total = jnp.sum(jnp.sin(ys.astype(jnp.float32))) + sum(
        jnp.sum(jnp.cos(c)) for c in jax.tree_util.tree_leaves(new))
    return total, (new, ys)

  def both(layer):
    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    return jax.jit(jax.vmap(lambda *a: grad(*a, layer)))

  batched = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs),
                                   *[_inputs(cell, s) for s in range(_K.value)])
  xla = both(lambda p, c, x, m: models.layer_scan(
      cell, p, c, x, m, dtype=compute, recurrence="xla", hoist_input=True))
  want = xla(*batched)
  xla_s = bench.median_seconds(lambda: xla(*batched), _REPEATS.value)
  vjp = both(lambda p, c, x, m: models.layer_scan(
      cell, p, c, x, m, dtype=compute, recurrence="xla_vjp"))
  worst = _worst(vjp(*batched), want)
  rows = [{"cell": cell, "dtype": dtype, "recurrence": "xla_vjp",
           "xla_s": xla_s, "max_relative_difference": worst,
           "ok": worst <= TOLERANCE[dtype],
           "xla_vjp_s": bench.median_seconds(lambda: vjp(*batched),
                                             _REPEATS.value)}]
  if fallback:
    # Not a failure: the engine runs the XLA recurrence here too.
    return rows + [{"cell": cell, "dtype": dtype, "fallback": fallback}]
  for w, stages in itertools.product(warps, forward_stages):
    row = {"cell": cell, "dtype": dtype, "recurrence": "pallas",
           "warps": w or fused.num_warps(cell, _BATCH.value, _HIDDEN.value),
           "auto": w is None, "forward_stages": stages, "xla_s": xla_s}
    fused_fn = both(lambda p, c, x, m, w=w, s=stages: fused.layer(
        cell, p, c, x, m, dtype=compute, warps=w,
        stages=(s, fused.NUM_STAGES)))
    try:
      got = fused_fn(*batched)
    except Exception as e:  # pylint: disable=broad-except
      # One setting that does not compile (Triton's resources) is a row.
      rows.append(dict(row, ok=False, error=str(e).strip().splitlines()[0]))
      continue
    worst = _worst(got, want)
    rows.append(dict(row, max_relative_difference=worst,
                     ok=worst <= TOLERANCE[dtype],
                     fused_s=bench.median_seconds(
                         lambda: fused_fn(*batched), _REPEATS.value)))
  return rows


def _save(header: str, rows: list[dict]) -> None:
  if _OUT_DIR.value:
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, "fused_check.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump({"header": header, "rows": rows}, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  # Compare the maths, not TF32 rounding (XLA's GPU default for float32).
  jax.config.update("jax_default_matmul_precision", "highest")
  backend = jax.default_backend()
  header = (f"fused recurrence vs XLA on {backend} "
            f"({jax.devices()[0].device_kind}), jax {jax.__version__}, "
            f"K={_K.value} B={_BATCH.value} H={_HIDDEN.value} "
            f"D={_INPUT.value} T={_WINDOW.value}"
            + ("" if backend == "gpu" else "; Pallas interpret mode"))
  print(header)
  warps = [_warps(w) for w in _NUM_WARPS.value]
  forward_stages = [int(s) for s in _FORWARD_STAGES.value]
  rows, failed = [], []
  for cell in _CELLS.value:
    for dtype in _DTYPES.value:
      why = fused.unsupported(cell, _BATCH.value, _HIDDEN.value, dtype=dtype)
      for row in run(cell, dtype, warps, forward_stages, why):
        rows.append(row)
        if "fallback" in row:
          print(f"  {cell:<7} {dtype:<9} falls back to XLA: {why}",
                flush=True)
          continue
        if row["recurrence"] == "xla_vjp":
          failed += [] if row["ok"] else [f"{cell}/{dtype}/xla_vjp"]
          print(f"  {cell:<7} {dtype:<9} xla_vjp              max relative "
                f"difference {row['max_relative_difference']:.2e} "
                f"(tolerance {TOLERANCE[dtype]:.0e}) "
                f"{'ok' if row['ok'] else 'FAILED'}; forward+backward "
                f"{row['xla_vjp_s'] * 1e3:.2f} ms, XLA "
                f"{row['xla_s'] * 1e3:.2f} ms "
                f"({row['xla_s'] / row['xla_vjp_s']:.2f}x)", flush=True)
          continue
        setting = f"{row['warps']} warps" + (
            "" if row["forward_stages"] == fused.NUM_STAGES else
            f", {row['forward_stages']} forward stages")
        failed += [] if row["ok"] else [f"{cell}/{dtype}/{setting}"]
        what = (f"  {cell:<7} {dtype:<9} {row['warps']:>2} warps"
                f"{' (auto)' if row['auto'] else '       '}"
                f" {row['forward_stages']} fwd stage"
                f"{'s' if row['forward_stages'] > 1 else ' '}")
        if "error" in row:
          print(f"{what} FAILED: {row['error']}", flush=True)
          continue
        print(f"{what} max relative difference "
              f"{row['max_relative_difference']:.2e} (tolerance "
              f"{TOLERANCE[dtype]:.0e}) {'ok' if row['ok'] else 'FAILED'}; "
              f"forward+backward {row['fused_s'] * 1e3:.2f} ms, XLA "
              f"{row['xla_s'] * 1e3:.2f} ms "
              f"({row['xla_s'] / row['fused_s']:.2f}x)", flush=True)
      _save(header, rows)  # so far: a run stopped by a time limit keeps it
  if failed:
    sys.exit(f"fused_check.py: error: {', '.join(failed)}: not the XLA "
             f"recurrence's numbers")


if __name__ == "__main__":
  app.run(main)
