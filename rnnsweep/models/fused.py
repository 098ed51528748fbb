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

The same algorithm runs with XLA's time loop too (:func:`scan_layer`,
``recurrence="xla_vjp"``): a forward ``lax.scan`` keeping each step's
gate activations, a reverse one for the gradient, the recurrent kernel's
gradient one matmul over the window. The kernels and the scans share one
step's maths (:func:`_forward_step`, :func:`_backward_step`) and differ
in how they loop and hold the weights.

On a GPU the kernels lower through Triton; elsewhere (a CPU) they run in
Pallas interpret mode — slow, for tests and debugging — so the option
works everywhere. On a GPU, Triton stages a trial's ``G x H x H``
recurrent weights in the SM's shared memory once, before the time loop
(the operand of every step's ``tt.dot``), so they must fit there with the
step's working tiles: :func:`unsupported` says when a shape cannot run
fused, and :func:`shared_memory_bytes` estimates what a kernel needs.
:func:`num_warps` gives a program enough warps for the step's gate
accumulators. Both rules come from compiling the kernels for sm_90 on a
CPU (``benchmarks/kernel_resources.py``, which also checks them against
the compiler).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
try:
  from jax.experimental.pallas import triton as pl_triton
except ImportError:  # deprecated in jax 0.11; a later jax may not have it
  pl_triton = None

Array = jax.Array
F32 = jnp.float32
#: Gates per cell, in the fused kernels' order (as :data:`rnn.GATES`).
_GATES = {"simple": 1, "lstm": 4, "gru": 3}
#: Saved activations per step for the backward kernel: LSTM ``i, f, g, o``;
#: GRU ``r, z, n`` and ``u_n + b_hn``; simple: none (``h`` suffices).
_SAVED = {"simple": 0, "lstm": 4, "gru": 4}
#: Triton's smallest dot dimension.
_MIN_GPU_DIM = 16
#: The most shared memory one program (a CUDA block) may use, by compute
#: capability (CUDA C Programming Guide, "Technical Specifications per
#: Compute Capability"); an unknown GPU is taken as an H100/H200.
MAX_SHARED_BYTES = {
    "7.0": 96 << 10, "7.5": 64 << 10, "8.0": 163 << 10, "8.6": 99 << 10,
    "8.7": 163 << 10, "8.9": 99 << 10, "9.0": 227 << 10, "10.0": 227 << 10,
    "10.3": 227 << 10, "12.0": 99 << 10}
_DEFAULT_ARCH = "9.0"
#: Software-pipelining stages of the kernels' time loops. Triton's default
#: (3) buffers the loop's loads ahead: the S LSTM's backward kernel in
#: bfloat16 then needs 393 KiB of shared memory, which no GPU has; with 1 it
#: needs 137 KiB (sm_90, Triton 3.9; benchmarks/kernel_resources.py).
NUM_STAGES = 1
#: Gate accumulators (32-bit) per thread that :func:`num_warps` aims at.
_ACCUMULATORS_PER_THREAD = 64


def _weight_bytes(cell: str, hidden_size: int, dtype: Any) -> int:
  """Bytes of one layer's recurrent weights ``[G, H, H]`` in ``dtype``."""
  return (_GATES[cell] * hidden_size * hidden_size *
          jnp.dtype(dtype or F32).itemsize)


def shared_memory_bytes(cell: str, batch_size: int, hidden_size: int,
                        dtype: Any = None) -> int:
  """The shared memory one kernel program needs on a GPU, the larger of
  the forward and backward kernels': the staged recurrent weights, plus
  one ``[B, H]`` float32 tile (the step's dot operand), plus in float32
  three more (the backward kernel's), plus the 1 KiB of static shared
  memory Triton's programs declare. Fitted to what Triton 3.9 allocates
  for sm_90 at ``NUM_STAGES`` (``benchmarks/kernel_resources.py`` compiles
  the kernels and checks that this is not below it) and to what XLA's own
  Triton asked for on an H200 (jax 0.11.2): 256 KiB for the S GRU in
  float32, where the triton package had allocated 209 (its LSTM only
  took the three more tiles)."""
  tiles = 4 if jnp.dtype(dtype or F32) == F32 else 1
  return (_weight_bytes(cell, hidden_size, dtype) +
          tiles * batch_size * hidden_size * 4 + 1024)


def num_warps(cell: str, batch_size: int, hidden_size: int) -> int:
  """Warps of one kernel program on a GPU: 8, or 16 where the step's ``G x
  B x H`` float32 gate accumulators would take more than 64 registers a
  thread at 8 (the weights are in shared memory, not registers). Compiled
  for sm_90 (Triton 3.9), 8 warps spill least or not at all for the cells
  that run fused at B=32 (workload S) and H up to 128 (bar a GRU in float32
  at H=128: 24 bytes at 8, 8 at 16), where Triton's default 4 spills for
  LSTM and GRU; at B=128 and H=128, 16 spill least for LSTM and GRU.
  ``benchmarks/fused_check.py --num_warps`` times the others on a GPU."""
  accumulators = _GATES[cell] * batch_size * hidden_size
  warps = 8
  while warps < 16 and accumulators > warps * 32 * _ACCUMULATORS_PER_THREAD:
    warps *= 2
  return warps


def warps_setting(value: str) -> int | None:
  """A warps setting as a benchmark flag gives it: ``auto`` (``None``,
  :func:`num_warps`) or a power of two from 1 to 32, which Triton takes;
  otherwise ``ValueError`` with a one-line message."""
  if value == "auto":
    return None
  if not value.isdigit() or int(value) not in (1, 2, 4, 8, 16, 32):
    raise ValueError(f"{value!r} is not auto or a power of two from 1 to 32")
  return int(value)


def target_platform() -> str:
  """The backend the kernels are built for: JAX's default backend (one
  place, so that a test can stand in a GPU on a CPU)."""
  return jax.default_backend()


def cuda_arch() -> str | None:
  """The default device's compute capability (``"9.0"``; ``None`` for a
  device that is not a CUDA GPU)."""
  return getattr(jax.devices()[0], "compute_capability", None)


def _arch() -> str:
  """:func:`cuda_arch`, also where the device is not a CUDA GPU."""
  return cuda_arch() or _DEFAULT_ARCH


def unsupported(cell: str, batch_size: int, hidden_size: int,
                platform: str | None = None, dtype: Any = None,
                arch: str | None = None) -> str | None:
  """Why the fused kernel cannot run this layer here, or ``None``.

  Args:
    cell: ``simple`` | ``lstm`` | ``gru``.
    batch_size, hidden_size: the layer's ``B`` and ``H``.
    platform: the backend (default: JAX's default backend).
    dtype: the compute dtype (default float32), in which the kernel holds
      the recurrent weights.
    arch: on a GPU, its compute capability (default: the default device's;
      ``"9.0"`` where that is not a CUDA GPU), which sets the shared memory
      a program may use.
  """
  platform = platform or target_platform()
  if cell not in _GATES:
    return f"cell {cell!r} has no fused kernel"
  if platform == "gpu":
    if pl_triton is None:
      return (f"jax {jax.__version__} has no Pallas Triton backend "
              f"(jax.experimental.pallas.triton), which the kernel is "
              f"written for")
    for name, n in (("batch_size", batch_size), ("hidden_size", hidden_size)):
      if n < _MIN_GPU_DIM or n & (n - 1):
        return (f"{name} {n} is not a power of two >= {_MIN_GPU_DIM} "
                f"(Triton's block shapes)")
    arch = arch or _arch()
    limit = MAX_SHARED_BYTES.get(arch, MAX_SHARED_BYTES[_DEFAULT_ARCH])
    need = shared_memory_bytes(cell, batch_size, hidden_size, dtype)
    if need > limit:
      return (f"the recurrent weights ({_GATES[cell]} x {hidden_size} x "
              f"{hidden_size} {jnp.dtype(dtype or F32).name}) and the step's "
              f"tiles need about {need >> 10} KiB of shared memory, over the "
              f"{limit >> 10} KiB a program may use on "
              f"sm_{arch.replace('.', '')}")
    return None
  if platform != "cpu":
    return f"no fused kernel lowering for {platform} (Triton is GPU only)"
  return None


class Launch(NamedTuple):
  """How the kernels are launched: a GPU program's warps, the forward and
  backward kernels' pipelining stages, and whether they run in Pallas
  interpret mode (``None``: where the default backend is not a GPU)."""
  warps: int
  stages: tuple[int, int] = (NUM_STAGES, NUM_STAGES)
  interpret: bool | None = None


def _call(kernel, name: str, out_shape, launch: Launch, stages: int):
  """``pallas_call`` of a kernel without a grid (vmap adds the trials')."""
  interpret = launch.interpret
  if interpret is None:
    interpret = target_platform() != "gpu"
  params = None if pl_triton is None else pl_triton.CompilerParams(
      num_warps=launch.warps, num_stages=stages)
  return pl.pallas_call(
      kernel, interpret=interpret, name=name, out_shape=out_shape,
      compiler_params=params)


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


# -- one time step, forward and backward (the kernels' and the scan's) -------


def _forward_step(cell: str, u: list, a: list, bhn: Array, h: Array,
                  c: Array) -> tuple[Array, Array, tuple]:
  """One step of the equations in :mod:`rnnsweep.models.rnn`, in float32.

  Args:
    u: the step's recurrent products ``(m * h) W_h``, ``G`` float32 ``[B,
      H]`` (gate order).
    a: the step's input projections ``x_t W_i + b``, ``G`` float32 ``[B,
      H]``.
    bhn: the GRU's candidate recurrent bias ``[1, H]``.
    h, c: the carried state (``c``: the LSTM's cell; unused otherwise).

  Returns:
    ``(h, c, saved)``: the new state and what the backward step needs
    (LSTM ``i, f, g, o``; GRU ``r, z, n, u_n + b_hn``; simple: nothing).
  """
  pre = [a[j] + u[j] for j in range(_GATES[cell])]
  if cell == "lstm":
    i, f = jax.nn.sigmoid(pre[0]), jax.nn.sigmoid(pre[1])
    g, o = jnp.tanh(pre[2]), jax.nn.sigmoid(pre[3])
    c = f * c + i * g
    return o * jnp.tanh(c), c, (i, f, g, o)
  if cell == "gru":
    r = jax.nn.sigmoid(pre[0])
    z = jax.nn.sigmoid(pre[1])
    un = u[2] + bhn
    n = jnp.tanh(a[2] + r * un)
    return (1.0 - z) * n + z * h, c, (r, z, n, un)
  return jnp.tanh(pre[0]), c, ()


def _backward_step(cell: str, h_prev: Array, c_prev: Array, h_t: Array,
                   c_t: Array, saved: tuple, dh: Array, dc: Array
                   ) -> tuple[Array | None, Array, list, list]:
  """One step of :func:`_forward_step`'s gradient, in reverse time, but
  for the part through the recurrent products, which the caller adds:
  ``dh_prev = carried + m * (du W_h^T)`` (its own matmuls; after what
  this returns, which a kernel stores first).

  Args:
    h_prev, c_prev: the state the step started from (GRU: ``h_prev``;
      LSTM: ``c_prev``); h_t, c_t: the state it made (simple: ``h_t``;
      LSTM: ``c_t``). The others are not read.
    saved: the forward step's ``saved``.
    dh, dc: the gradient reaching the step's outputs (``dh``: from the
      next step and this step's output, summed).

  Returns:
    ``(carried, dc_prev, da, du)``: the gradient of ``h_prev`` that does
    not pass through the recurrent products (the GRU's ``z * h`` term;
    ``None`` for the others), that of the cell state it started from, and
    of the step's ``G`` gate pre-activations on the input side (``da``)
    and of its recurrent products (``du``; the GRU's candidate differs:
    ``r * dn``).
  """
  if cell == "lstm":
    i, f, g, o = saved
    tc = jnp.tanh(c_t)
    dc = dc + dh * o * (1.0 - tc * tc)
    du = [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
          dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)]
    return None, dc * f, du, du
  if cell == "gru":
    r, z, n, un = saved
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dr = dn * un * r * (1.0 - r)
    dz = dh * (h_prev - n) * z * (1.0 - z)
    du = [dr, dz, dn * r]
    return dh * z, dc, [dr, dz, dn], du
  du = [dh * (1.0 - h_t * h_t)]
  return None, dc, du, du


def _bhn_grad(cell: str, dun: Array, bhn: Array) -> Array:
  """The gradient of the GRU's ``b_hn [1, H]`` from every step's ``u_n``
  gradient (``dun [T, B, H]``); zeros for the other cells."""
  return (jnp.sum(dun, axis=(0, 1))[None].astype(bhn.dtype)
          if cell == "gru" else jnp.zeros_like(bhn))


def _through_time(carried: Array | None, recurrent: Array) -> Array:
  """``dh_prev`` from :func:`_backward_step`'s ``carried`` and the
  gradient through the recurrent products (``m * du W_h^T``)."""
  return recurrent if carried is None else carried + recurrent


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
    h, c, saved = _forward_step(cell, u, a, bhn, h, c)
    for j, v in enumerate(saved):
      saved_ref[t, j] = v
    if cell == "lstm":
      cs_ref[t] = c
    hs_ref[t] = h
    return h, c

  h, c = jax.lax.fori_loop(0, steps, step, (h0_ref[...], c0_ref[...]))
  h_out_ref[...] = h
  c_out_ref[...] = c


def _forward_call(cell, naive, compute, launch, a, w, bhn, h0, c0, m):
  steps, _, b, h = a.shape
  shape = lambda *s: jax.ShapeDtypeStruct(s, F32)
  kernel = functools.partial(_forward_kernel, cell, steps, naive, compute)
  return _call(kernel, f"fused_{cell}_forward", (
      shape(steps, b, h), shape(steps if cell == "lstm" else 1, b, h),
      shape(steps, max(_SAVED[cell], 1), b, h), shape(b, h), shape(b, h)),
               launch, launch.stages[0])(a, w, bhn, h0, c0, m)


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
  recur_t = lambda du: (_dot_t(du[0], w[0], compute) if gates == 1 else
                        sum(_dot_t(du[j], w[j], compute)
                            for j in range(gates)))

  def step(k, carry):
    dh, dc = carry
    t = steps - 1 - k
    first = t == 0
    prev = jnp.maximum(t - 1, 0)
    # Only what the cell's step reads is loaded, in the order the kernel
    # was first written and measured with; the gradient through the
    # recurrent products comes after the step's own, as then (Triton keeps
    # the order: computing those matmuls before the LSTM's ``dc * f`` made
    # its backward kernel spill 72 bytes a thread instead of 48 on sm_90,
    # kernel_resources.py).
    h_prev = (jnp.where(first, h0_ref[...], hs_ref[prev])
              if cell == "gru" else None)
    m = _mask_at(m_ref, t, naive)
    dh = dh + dys_ref[t]
    saved = tuple(saved_ref[t, j] for j in range(_SAVED[cell]))
    c_prev = (jnp.where(first, c0_ref[...], cs_ref[prev])
              if cell == "lstm" else None)
    carried, dc, da, du = _backward_step(
        cell, h_prev, c_prev, hs_ref[t] if cell == "simple" else None,
        cs_ref[t] if cell == "lstm" else None, saved, dh, dc)
    if cell == "gru":
      dun_ref[t] = du[2]
    dh = _through_time(carried, m * recur_t(du))
    for j in range(gates):
      da_ref[t, j] = da[j]
    return dh, dc

  dh, dc = jax.lax.fori_loop(0, steps, step,
                             (dh_out_ref[...], dc_out_ref[...]))
  dh0_ref[...] = dh
  dc0_ref[...] = dc


def _backward_call(cell, naive, compute, launch, w, h0, c0, m, hs, cs, saved,
                   dys, dh_out, dc_out):
  steps, b, h = hs.shape
  shape = lambda *s: jax.ShapeDtypeStruct(s, F32)
  kernel = functools.partial(_backward_kernel, cell, steps, naive, compute)
  return _call(kernel, f"fused_{cell}_backward", (
      shape(steps, _GATES[cell], b, h),
      shape(steps if cell == "gru" else 1, b, h), shape(b, h), shape(b, h)),
               launch, launch.stages[1])(w, h0, c0, m, hs, cs, saved, dys,
                                         dh_out, dc_out)


# -- the differentiable recurrence ---------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _recurrence(cell, naive, compute, launch, a, w, bhn, h0, c0, m):
  hs, _, _, h, c = _forward_call(cell, naive, compute, launch, a, w, bhn, h0,
                                 c0, m)
  return hs, h, c


def _recurrence_fwd(cell, naive, compute, launch, a, w, bhn, h0, c0, m):
  hs, cs, saved, h, c = _forward_call(cell, naive, compute, launch, a, w, bhn,
                                      h0, c0, m)
  return (hs, h, c), (a, w, bhn, h0, c0, m, hs, cs, saved)


def _recurrence_bwd(cell, naive, compute, launch, residuals, cotangents):
  a, w, bhn, h0, c0, m, hs, cs, saved = residuals
  dys, dh_out, dc_out = cotangents
  da, dun, dh0, dc0 = _backward_call(
      cell, naive, compute, launch, w, h0, c0, m, hs, cs, saved,
      dys.astype(F32), dh_out.astype(F32), dc_out.astype(F32))
  # The recurrent kernel's gradient: one matmul over the whole window.
  h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
  hm = (h_prev * m if naive else h_prev * m[None]).astype(compute)
  du = da.at[:, 2].set(dun) if cell == "gru" else da
  dw = jnp.einsum("tbh,tgbk->ghk", hm, du.astype(compute),
                  preferred_element_type=F32).astype(w.dtype)
  dbhn = _bhn_grad(cell, dun, bhn)
  return (da.astype(a.dtype), dw, dbhn, dh0, dc0, jnp.zeros_like(m))


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# -- the same recurrence with an XLA time loop -------------------------------


class _ScanResiduals(NamedTuple):
  """What the forward scan keeps for the backward one, time-major ``[T, B,
  H]`` each (``None`` where the cell's backward step does not read it):
  the state each step started from (``h_prev``: GRU; ``c_prev``: LSTM) and
  made (``hs``: simple; ``cs``: LSTM), the step's gate activations, and
  ``m * h_prev`` in the compute dtype (the recurrent matmuls' input, for
  the recurrent kernel's gradient)."""
  h_prev: Array | None
  c_prev: Array | None
  hs: Array | None
  cs: Array | None
  saved: tuple
  hm: Array


def _scan_forward(cell, naive, compute, unroll, a, w, bhn, h0, c0, m):
  """The window's forward steps as a ``lax.scan``: ``a [T, B, G*H]``, ``w
  [H, G*H]`` (fused gates, the model's layout), ``m [B, H]`` or ``[T, B,
  H]``; returns ``hs [T, B, H]``, the :class:`_ScanResiduals` and the
  final ``h, c``."""
  gates = _GATES[cell]
  lstm, gru = cell == "lstm", cell == "gru"

  def step(carry, xs):
    a_t, m_t = xs
    m_t = m_t if naive else m
    h_prev, c_prev = carry
    hm = (h_prev * m_t).astype(compute)
    h, c, saved = _forward_step(
        cell, jnp.split(_dot(hm, w, compute), gates, axis=-1),
        jnp.split(a_t.astype(F32), gates, axis=-1), bhn, h_prev, c_prev)
    return (h, c), (h, _ScanResiduals(
        h_prev if gru else None, c_prev if lstm else None, None,
        c if lstm else None, saved, hm))

  (h, c), (hs, res) = jax.lax.scan(
      step, (h0, c0), (a, m if naive else None), unroll=unroll)
  return hs, res._replace(hs=hs if cell == "simple" else None), h, c


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_recurrence(cell, naive, compute, unroll, a, w, bhn, h0, c0, m):
  hs, _, h, c = _scan_forward(cell, naive, compute, unroll, a, w, bhn, h0,
                              c0, m)
  return hs, h, c


def _scan_recurrence_fwd(cell, naive, compute, unroll, a, w, bhn, h0, c0, m):
  hs, res, h, c = _scan_forward(cell, naive, compute, unroll, a, w, bhn, h0,
                                c0, m)
  return (hs, h, c), (w, bhn, m, res)


def _scan_recurrence_bwd(cell, naive, compute, unroll, residuals,
                         cotangents):
  w, bhn, m, res = residuals
  dys, dh_out, dc_out = cotangents
  hidden = w.shape[0]
  recur_t = lambda du: _dot_t(jnp.concatenate(du, axis=-1), w, compute)

  def step(carry, xs):
    r, dy, m_t = xs
    carried, dc, da, du = _backward_step(cell, r.h_prev, r.c_prev, r.hs,
                                         r.cs, r.saved, carry[0] + dy,
                                         carry[1])
    dh = _through_time(carried, (m_t if naive else m) * recur_t(du))
    return (dh, dc), (jnp.concatenate(da, axis=-1),
                      du[2] if cell == "gru" else None)

  (dh0, dc0), (da, dun) = jax.lax.scan(
      step, (dh_out.astype(F32), dc_out.astype(F32)),
      (res._replace(hm=None), dys.astype(F32), m if naive else None),
      reverse=True, unroll=unroll)
  # The recurrent kernel's gradient: one matmul over the whole window.
  du = (jnp.concatenate([da[..., :2 * hidden], dun], axis=-1)
        if cell == "gru" else da)
  steps, b, gh = du.shape
  # As one [H, T*B] x [T*B, G*H] product (a two-axis contraction ran 1.3x
  # slower on a CPU at H=512).
  dw = jax.lax.dot_general(
      res.hm.reshape(steps * b, hidden),
      du.astype(compute).reshape(steps * b, gh),
      (((0,), (0,)), ((), ())), preferred_element_type=F32).astype(w.dtype)
  dbhn = _bhn_grad(cell, dun, bhn)
  return (da, dw, dbhn, dh0, dc0, jnp.zeros_like(m))


_scan_recurrence.defvjp(_scan_recurrence_fwd, _scan_recurrence_bwd)


# -- one layer ---------------------------------------------------------------


def _layer_inputs(cell: str, params: Any, carry: Any, x: Array,
                  recurrent_mask: Array, compute: Any, out: Any):
  """What both recurrences take of a layer's call: the window's input
  projection ``a [B, T, G*H]`` (one matmul, operands in the ``compute``
  dtype, the bias added in the ``out`` dtype), ``b_hn [1, H]``, whether
  the masks are per step, the masks (time-major when they are), and the
  float32 starting ``h0, c0`` (``c0`` zeros but for an LSTM)."""
  hidden = params["w_h"].shape[0]
  a = (jnp.dot(x.astype(compute), params["w_i"].astype(compute),
               preferred_element_type=out) + params["b"].astype(out))
  bhn = params.get("b_hn", jnp.zeros((hidden,), F32)).reshape(1, hidden)
  naive = recurrent_mask.ndim == 3
  m = (jnp.swapaxes(recurrent_mask, 0, 1) if naive
       else recurrent_mask).astype(F32)
  if cell == "lstm":
    c0, h0 = carry
  else:
    h0, c0 = carry, jnp.zeros_like(carry)
  return a, bhn.astype(F32), naive, m, h0.astype(F32), c0.astype(F32)


def _layer_outputs(cell: str, hs: Array, h: Array, c: Array, compute: Any
                   ) -> tuple[Any, Array]:
  """``(new_carry, outputs [B, T, H])`` from time-major ``hs``."""
  new_carry = (c, h) if cell == "lstm" else h
  return new_carry, jnp.swapaxes(hs, 0, 1).astype(compute)


def scan_layer(cell: str, params: Any, carry: Any, x: Array,
               recurrent_mask: Array, *, dtype: Any = None,
               unroll: int = 1) -> tuple[Any, Array]:
  """One recurrent layer over a window with the fused kernels' algorithm
  and XLA's time loop (``recurrence="xla_vjp"``): the same contract as
  :func:`layer`. The input projection is one matmul over the window; the
  forward steps are a ``lax.scan`` that saves each step's gate
  activations; the backward (``jax.custom_vjp``) is a reverse
  ``lax.scan`` that computes only the gradient carried through time and
  each step's gate gradients, and the recurrent kernel's gradient is one
  matmul over the window afterwards. Differentiating the plain scan
  (``recurrence="xla"``) instead adds every step's ``[H, G*H]`` outer
  product into a float32 accumulator inside the reverse loop: ``T`` small
  matmuls, each reading and writing the whole kernel-sized accumulator.
  The step's maths is the kernels' own (:func:`_forward_step`,
  :func:`_backward_step`), in float32 with matmul operands in the compute
  dtype; ``unroll``: steps per iteration of both scans."""
  compute = dtype or F32
  # ``a`` in float32, as the step's maths: in bfloat16 compute the
  # gradients were about half as far from float32's as the XLA
  # recurrence's (LSTM, GRU and simple; B=32, T=32, H=16 on a CPU).
  a, bhn, naive, m, h0, c0 = _layer_inputs(cell, params, carry, x,
                                           recurrent_mask, compute, F32)
  w = params["w_h"].astype(compute)
  hs, h, c = _scan_recurrence(cell, naive, compute, unroll,
                              jnp.swapaxes(a, 0, 1), w, bhn, h0, c0, m)
  return _layer_outputs(cell, hs, h, c, compute)


def layer(cell: str, params: Any, carry: Any, x: Array, recurrent_mask: Array,
          *, dtype: Any = None,
          warps: int | None = None,
          stages: int | tuple[int, int] = NUM_STAGES,
          interpret: bool | None = None) -> tuple[Any, Array]:
  """One recurrent layer over a window, fused: the same contract as
  :func:`rnnsweep.models.rnn.layer_scan` (``carry`` float32 ``(c, h)`` or
  ``h`` ``[B, H]``; ``x [B, T, D]`` masked already; ``recurrent_mask``
  ``[B, H]`` or ``[B, T, H]``), returning ``(new_carry, outputs [B, T,
  H])`` with outputs in the compute dtype. ``warps``, ``stages``: the GPU
  kernel programs' warps (default :func:`num_warps`) and pipelining stages,
  one number for both kernels or ``(forward, backward)`` (no effect in
  interpret mode). ``interpret``: Pallas interpret mode
  (default: unless the default backend is a GPU; ``False`` lowers the
  Triton kernels anywhere, e.g. to compile them for a GPU from a CPU)."""
  compute = dtype or F32
  gates = _GATES[cell]
  b, steps, _ = x.shape
  hidden = params["w_h"].shape[0]
  a, bhn, naive, m, h0, c0 = _layer_inputs(cell, params, carry, x,
                                           recurrent_mask, compute, compute)
  # [B, T, G*H] -> [T, G, B, H]; w_h [H, G*H] -> [G, H, H].
  a = jnp.transpose(a.reshape(b, steps, gates, hidden), (1, 2, 0, 3))
  # In the compute dtype: what stays on chip is half as big in bfloat16.
  w = jnp.transpose(params["w_h"].reshape(hidden, gates, hidden),
                    (1, 0, 2)).astype(compute)
  launch = Launch(warps or num_warps(cell, b, hidden),
                  (stages, stages) if isinstance(stages, int) else
                  tuple(stages), interpret)
  hs, h, c = _recurrence(cell, naive, compute, launch, a, w, bhn, h0, c0, m)
  return _layer_outputs(cell, hs, h, c, compute)


# -- the kernels as a GPU gets them ------------------------------------------


def _abstract_gpu():
  """A one-device abstract mesh on an H200, under which Pallas lowers its
  Triton kernels with no GPU present (jax >= 0.11 asks for one)."""
  device = jax.sharding.AbstractDevice(device_kind="NVIDIA H200",
                                       num_cores=None, platform="gpu")
  return jax.sharding.use_abstract_mesh(
      jax.sharding.AbstractMesh((1,), ("trials",), abstract_device=device))


def triton_kernels(cell: str, batch: int, hidden: int, dtype: str,
                   window: int = 32, input_size: int = 64,
                   stages: int | tuple[int, int] = NUM_STAGES) -> list[dict]:
  """The Triton IR (text) of the fused layer's kernels, forward and
  backward, as jax lowers a vmapped gradient of it for CUDA, on any
  machine (no GPU needed): a list of ``{"name", "num_warps",
  "num_stages", "ttir"}``, in the program's order (``stages`` as
  :func:`layer`'s). For inspecting and compiling the kernels
  (``benchmarks/kernel_resources.py``); it reads jax's and jaxlib's
  internals (the Triton dialect), so it may need updating with jax."""
  if pl_triton is None:
    raise RuntimeError(unsupported(cell, batch, hidden, "gpu", dtype))
  from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jaxlib.triton import dialect  # pylint: disable=g-import-not-at-top

  gates = _GATES[cell]
  compute = jnp.dtype(dtype)
  params = {"w_i": jnp.zeros((input_size, gates * hidden)),
            "w_h": jnp.zeros((hidden, gates * hidden)),
            "b": jnp.zeros((gates * hidden,))}
  zeros = jnp.zeros((batch, hidden))

  def loss(p, x, m):
    carry = (zeros, zeros) if cell == "lstm" else zeros
    _, ys = layer(cell, p, carry, x, m, dtype=compute, stages=stages,
                  interpret=False)
    return ys.astype(jnp.float32).sum()

  trials = 2
  args = (jax.tree_util.tree_map(lambda a: jnp.zeros((trials,) + a.shape),
                                 params),
          jnp.zeros((trials, batch, window, input_size)),
          jnp.ones((trials, batch, hidden)))
  with _abstract_gpu():
    lowered = jax.jit(jax.vmap(jax.grad(loss))).trace(*args).lower(
        lowering_platforms=("cuda",))
  calls = []

  def visit(op):
    if (op.name == "stablehlo.custom_call" and
        ir.StringAttr(op.attributes["call_target_name"]).value ==
        "__gpu$xla.gpu.triton"):
      config = ir.DictAttr(op.attributes["mhlo.backend_config"])
      calls.append((ir.StringAttr(config["name"]).value,
                    ir.IntegerAttr(config["num_warps"]).value,
                    ir.IntegerAttr(config["num_stages"]).value,
                    ir.StringAttr(config["ir"]).value_bytes))
    return ir.WalkResult.ADVANCE

  lowered.compiler_ir("stablehlo").operation.walk(visit)
  context = mlir.make_ir_context()
  dialect.register_dialect(context)
  kernels = []
  with context:
    for name, warps, num_stages, bytecode in calls:
      module = ir.Module.parse(bytecode)
      kernels.append({"name": name, "num_warps": warps,
                      "num_stages": num_stages,
                      "ttir": module.operation.get_asm(
                          enable_debug_info=False)})
  return kernels
