"""A fused recurrence: one layer's whole TBPTT window in one Pallas kernel.

XLA runs a ``lax.scan`` recurrence as a loop of small kernels per time step
(the recurrent matmul, the gate elementwise ops, the carry selects), each a
launch, with the recurrent weights read from device memory at every step.
Here the window's time loop runs *inside* one kernel for one trial (vmap
adds the trial axis as the kernel's grid), in the style of persistent RNNs
(Diamos et al. 2016) and FlashRNN (2024): the recurrent kernel is loaded
once and kept on chip across the time steps, and the gates are fused.

The input projection ``a = x W_i + b`` of the whole window is one XLA matmul
before the kernel (as ``hoist_input``); the kernel takes it and computes the
equations of :mod:`rnnsweep.models.rnn`, with the same parameters. Its
gradient is a second, reverse-time kernel (``jax.custom_vjp``) that writes
the gradient of every step's gate pre-activations; the recurrent kernel's
gradient is then one XLA matmul over the whole window,
``dW_h = sum_t (m_t h_{t-1})^T du_t``, instead of one per step.

Layouts inside the kernels are time-major and gate-split (``a [T, G, B,
H]``, ``w_h [G, H, H]``) so that every block the kernel loads is ``[B, H]``
or ``[H, H]``: Triton needs power-of-two block dimensions, which ``3H`` (a
GRU's gates) is not. The maths runs in float32; with bfloat16 compute the
matmul operands are rounded to bfloat16 (accumulated in float32) and the
outputs returned in bfloat16.

On a GPU the kernels lower through Triton; elsewhere (a CPU) they run in
Pallas interpret mode — slow, for tests and debugging — so the option
works everywhere. On a GPU the resident weights are values of one kernel
program, so they live in one SM's registers: a trial's ``G x H x H``
recurrent weights must fit in its register file (an LSTM up to H=128),
and the program gets enough warps to spread them (:func:`num_warps`).
:func:`unsupported` says when a shape cannot run fused.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

Array = jax.Array
F32 = jnp.float32
#: Gates per cell, in the fused kernels' order (as :data:`rnn.GATES`).
_GATES = {"simple": 1, "lstm": 4, "gru": 3}
#: Saved activations per step for the backward kernel: LSTM ``i, f, g, o``;
#: GRU ``r, z, n`` and ``u_n + b_hn``; simple: none (``h`` suffices).
_SAVED = {"simple": 0, "lstm": 4, "gru": 4}
#: Triton's smallest dot dimension.
_MIN_GPU_DIM = 16
#: One streaming multiprocessor's register file (64K 32-bit registers on
#: every NVIDIA GPU from Volta to Blackwell): a kernel program runs on one
#: SM, and this kernel keeps a trial's recurrent weights there as values.
SM_REGISTER_BYTES = 256 * 1024
#: The 32-bit registers per thread the resident weights may take; the
#: rest of a thread's (at most 255) is for the step's activations.
_WEIGHT_REGISTERS_PER_THREAD = 64


def _weight_bytes(cell: str, hidden_size: int, dtype: Any) -> int:
  """Bytes of one layer's recurrent weights ``[G, H, H]`` in ``dtype``."""
  return (_GATES[cell] * hidden_size * hidden_size *
          jnp.dtype(dtype or F32).itemsize)


def num_warps(cell: str, hidden_size: int, dtype: Any = None) -> int:
  """Warps of one kernel program on a GPU: enough threads that the
  resident recurrent weights take at most 64 registers each, from
  Triton's default of 4 up to 16 (512 threads). A starting point from the
  register arithmetic; ``benchmarks/fused_check.py --num_warps`` measures
  the others."""
  registers = _weight_bytes(cell, hidden_size, dtype) // 4
  warps = 4
  while warps < 16 and registers > warps * 32 * _WEIGHT_REGISTERS_PER_THREAD:
    warps *= 2
  return warps


def unsupported(cell: str, batch_size: int, hidden_size: int,
                platform: str | None = None,
                dtype: Any = None) -> str | None:
  """Why the fused kernel cannot run this layer here, or ``None``.

  Args:
    cell: ``simple`` | ``lstm`` | ``gru``.
    batch_size, hidden_size: the layer's ``B`` and ``H``.
    platform: the backend (default: JAX's default backend).
    dtype: the compute dtype (default float32), in which the kernel holds
      the recurrent weights.
  """
  platform = platform or jax.default_backend()
  if cell not in _GATES:
    return f"cell {cell!r} has no fused kernel"
  if platform == "gpu":
    for name, n in (("batch_size", batch_size), ("hidden_size", hidden_size)):
      if n < _MIN_GPU_DIM or n & (n - 1):
        return (f"{name} {n} is not a power of two >= {_MIN_GPU_DIM} "
                f"(Triton's block shapes)")
    size = _weight_bytes(cell, hidden_size, dtype)
    if size > SM_REGISTER_BYTES:
      return (f"the recurrent weights ({_GATES[cell]} x {hidden_size} x "
              f"{hidden_size} {jnp.dtype(dtype or F32).name}, {size // 1024} "
              f"KiB) do not fit in one SM's {SM_REGISTER_BYTES // 1024} KiB "
              f"register file, where the fused kernel keeps them")
    return None
  if platform != "cpu":
    return f"no fused kernel lowering for {platform} (Triton is GPU only)"
  return None


def _interpret() -> bool:
  return jax.default_backend() != "gpu"


def _call(kernel, name: str, out_shape, warps: int):
  """``pallas_call`` of a kernel without a grid (vmap adds the trials')."""
  return pl.pallas_call(
      kernel, interpret=_interpret(), name=name, out_shape=out_shape,
      compiler_params=pl_triton.CompilerParams(num_warps=warps))


def _dot(x: Array, w: Array, compute: Any) -> Array:
  """``x @ w`` with operands in the compute dtype, accumulated in f32."""
  return jnp.dot(x.astype(compute), w.astype(compute),
                 preferred_element_type=F32)


def _dot_t(x: Array, w: Array, compute: Any) -> Array:
  """``x @ w.T`` (operands in the compute dtype, f32 accumulation)."""
  return jax.lax.dot_general(x.astype(compute), w.astype(compute),
                             (((1,), (1,)), ((), ())),
                             preferred_element_type=F32)


def _mask_at(m_ref, t, naive: bool) -> Array:
  return m_ref[t] if naive else m_ref[...]


# -- forward kernel ------------------------------------------------------------


def _forward_kernel(cell: str, steps: int, naive: bool, compute: Any,
                    a_ref, w_ref, bhn_ref, h0_ref, c0_ref, m_ref,
                    hs_ref, cs_ref, saved_ref, h_out_ref, c_out_ref):
  """Refs (one trial): ``a [T, G, B, H]``, ``w [G, H, H]``, ``bhn [1, H]``,
  ``h0, c0 [B, H]``, ``m [B, H]`` or ``[T, B, H]``; out ``hs, cs [T, B,
  H]``, ``saved [T, S, B, H]``, ``h_out, c_out [B, H]``."""
  gates = _GATES[cell]
  # Loaded once: the recurrent weights stay on chip for the whole window.
  w = [w_ref[j] for j in range(gates)]
  bhn = bhn_ref[...]

  def step(t, carry):
    h, c = carry
    hm = h * _mask_at(m_ref, t, naive)
    u = [_dot(hm, w[j], compute) for j in range(gates)]
    a = [a_ref[t, j].astype(F32) for j in range(gates)]
    pre = [a[j] + u[j] for j in range(gates)]
    if cell == "lstm":
      i, f = jax.nn.sigmoid(pre[0]), jax.nn.sigmoid(pre[1])
      g, o = jnp.tanh(pre[2]), jax.nn.sigmoid(pre[3])
      c = f * c + i * g
      h = o * jnp.tanh(c)
      for j, v in enumerate((i, f, g, o)):
        saved_ref[t, j] = v
      cs_ref[t] = c
    elif cell == "gru":
      r = jax.nn.sigmoid(pre[0])
      z = jax.nn.sigmoid(pre[1])
      un = u[2] + bhn
      n = jnp.tanh(a[2] + r * un)
      h = (1.0 - z) * n + z * h
      for j, v in enumerate((r, z, n, un)):
        saved_ref[t, j] = v
    else:
      h = jnp.tanh(pre[0])
    hs_ref[t] = h
    return h, c

  h, c = jax.lax.fori_loop(0, steps, step, (h0_ref[...], c0_ref[...]))
  h_out_ref[...] = h
  c_out_ref[...] = c


def _forward_call(cell, naive, compute, warps, a, w, bhn, h0, c0, m):
  steps, _, b, h = a.shape
  shape = lambda *s: jax.ShapeDtypeStruct(s, F32)
  kernel = functools.partial(_forward_kernel, cell, steps, naive, compute)
  return _call(kernel, f"fused_{cell}_forward", (
      shape(steps, b, h), shape(steps if cell == "lstm" else 1, b, h),
      shape(steps, max(_SAVED[cell], 1), b, h), shape(b, h), shape(b, h)),
               warps)(a, w, bhn, h0, c0, m)


# -- backward kernel -----------------------------------------------------------


def _backward_kernel(cell: str, steps: int, naive: bool, compute: Any,
                     w_ref, h0_ref, c0_ref, m_ref, hs_ref, cs_ref, saved_ref,
                     dys_ref, dh_out_ref, dc_out_ref,
                     da_ref, dun_ref, dh0_ref, dc0_ref):
  """Reverse time: the gradient of every step's gate pre-activations
  (``da [T, G, B, H]``; GRU also ``r * dn`` at ``dun [T, B, H]``, the
  gradient of ``u_n``) and of the initial carry (``dh0, dc0``)."""
  gates = _GATES[cell]
  w = [w_ref[j] for j in range(gates)]

  def step(k, carry):
    dh, dc = carry
    t = steps - 1 - k
    first = t == 0
    prev = jnp.maximum(t - 1, 0)
    h_prev = jnp.where(first, h0_ref[...], hs_ref[prev])
    m = _mask_at(m_ref, t, naive)
    dh = dh + dys_ref[t]
    if cell == "lstm":
      i, f, g, o = (saved_ref[t, j] for j in range(4))
      c_prev = jnp.where(first, c0_ref[...], cs_ref[prev])
      tc = jnp.tanh(cs_ref[t])
      dc = dc + dh * o * (1.0 - tc * tc)
      du = [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
            dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)]
      da = du
      dc = dc * f
      dh = m * sum(_dot_t(du[j], w[j], compute) for j in range(4))
    elif cell == "gru":
      r, z, n, un = (saved_ref[t, j] for j in range(4))
      dn = dh * (1.0 - z) * (1.0 - n * n)
      dr = dn * un * r * (1.0 - r)
      dz = dh * (h_prev - n) * z * (1.0 - z)
      da = [dr, dz, dn]
      du = [dr, dz, dn * r]
      dun_ref[t] = du[2]
      dh = dh * z + m * sum(_dot_t(du[j], w[j], compute) for j in range(3))
    else:
      h_t = hs_ref[t]
      da = du = [dh * (1.0 - h_t * h_t)]
      dh = m * _dot_t(du[0], w[0], compute)
    for j in range(gates):
      da_ref[t, j] = da[j]
    return dh, dc

  dh, dc = jax.lax.fori_loop(0, steps, step,
                             (dh_out_ref[...], dc_out_ref[...]))
  dh0_ref[...] = dh
  dc0_ref[...] = dc


def _backward_call(cell, naive, compute, warps, w, h0, c0, m, hs, cs, saved,
                   dys, dh_out, dc_out):
  steps, b, h = hs.shape
  shape = lambda *s: jax.ShapeDtypeStruct(s, F32)
  kernel = functools.partial(_backward_kernel, cell, steps, naive, compute)
  return _call(kernel, f"fused_{cell}_backward", (
      shape(steps, _GATES[cell], b, h),
      shape(steps if cell == "gru" else 1, b, h), shape(b, h), shape(b, h)),
               warps)(w, h0, c0, m, hs, cs, saved, dys, dh_out, dc_out)


# -- the differentiable recurrence ---------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _recurrence(cell, naive, compute, warps, a, w, bhn, h0, c0, m):
  hs, _, _, h, c = _forward_call(cell, naive, compute, warps, a, w, bhn, h0,
                                 c0, m)
  return hs, h, c


def _recurrence_fwd(cell, naive, compute, warps, a, w, bhn, h0, c0, m):
  hs, cs, saved, h, c = _forward_call(cell, naive, compute, warps, a, w, bhn,
                                      h0, c0, m)
  return (hs, h, c), (a, w, bhn, h0, c0, m, hs, cs, saved)


def _recurrence_bwd(cell, naive, compute, warps, residuals, cotangents):
  a, w, bhn, h0, c0, m, hs, cs, saved = residuals
  dys, dh_out, dc_out = cotangents
  da, dun, dh0, dc0 = _backward_call(
      cell, naive, compute, warps, w, h0, c0, m, hs, cs, saved,
      dys.astype(F32), dh_out.astype(F32), dc_out.astype(F32))
  # The recurrent kernel's gradient: one matmul over the whole window.
  h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
  hm = (h_prev * m if naive else h_prev * m[None]).astype(compute)
  du = da.at[:, 2].set(dun) if cell == "gru" else da
  dw = jnp.einsum("tbh,tgbk->ghk", hm, du.astype(compute),
                  preferred_element_type=F32).astype(w.dtype)
  dbhn = (jnp.sum(dun, axis=(0, 1))[None].astype(bhn.dtype)
          if cell == "gru" else jnp.zeros_like(bhn))
  return (da.astype(a.dtype), dw, dbhn, dh0, dc0, jnp.zeros_like(m))


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def layer(cell: str, params: Any, carry: Any, x: Array, recurrent_mask: Array,
          *, dtype: Any = None,
          warps: int | None = None) -> tuple[Any, Array]:
  """One recurrent layer over a window, fused: the same contract as
  :func:`rnnsweep.models.rnn.layer_scan` (``carry`` float32 ``(c, h)`` or
  ``h`` ``[B, H]``; ``x [B, T, D]`` masked already; ``recurrent_mask``
  ``[B, H]`` or ``[B, T, H]``), returning ``(new_carry, outputs [B, T,
  H])`` with outputs in the compute dtype. ``warps``: the GPU kernel
  programs' warps (default :func:`num_warps`; no effect on a CPU)."""
  compute = dtype or F32
  gates = _GATES[cell]
  b, steps, _ = x.shape
  hidden = params["w_h"].shape[0]
  a = (jnp.dot(x.astype(compute), params["w_i"].astype(compute)) +
       params["b"].astype(compute))
  # [B, T, G*H] -> [T, G, B, H]; w_h [H, G*H] -> [G, H, H].
  a = jnp.transpose(a.reshape(b, steps, gates, hidden), (1, 2, 0, 3))
  # In the compute dtype: what stays on chip is half as big in bfloat16.
  w = jnp.transpose(params["w_h"].reshape(hidden, gates, hidden),
                    (1, 0, 2)).astype(compute)
  bhn = params.get("b_hn", jnp.zeros((hidden,), F32)).reshape(1, hidden)
  naive = recurrent_mask.ndim == 3
  m = (jnp.swapaxes(recurrent_mask, 0, 1) if naive
       else recurrent_mask).astype(F32)
  if cell == "lstm":
    c0, h0 = carry
  else:
    h0, c0 = carry, jnp.zeros_like(carry)
  warps = warps or num_warps(cell, hidden, compute)
  hs, h, c = _recurrence(cell, naive, compute, warps, a, w, bhn.astype(F32),
                         h0.astype(F32), c0.astype(F32), m)
  new_carry = (c, h) if cell == "lstm" else h
  return new_carry, jnp.swapaxes(hs, 0, 1).astype(compute)
