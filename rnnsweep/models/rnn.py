"""Stacked recurrent models for ONE trial, with variational dropout.

The trial axis never appears here: the engine vmaps these functions. Dropout
rates are traced per-trial values, so masks are sampled by
:func:`dropout_masks` (not ``flax.linen.Dropout``, which branches on the rate
in Python) and passed in. Following Gal & Ghahramani (2016), one mask is drawn
per sequence and reused at every time step, on the first layer's inputs, on
each layer's recurrent state and on each layer's outputs. The static
``recurrent_dropout_mode="naive"`` instead draws a new recurrent mask at
every time step (``[B, T, H]`` per layer per window), the form Gal &
Ghahramani argue against; inputs and outputs keep one mask per sequence.

The cells are written out here rather than taken from ``flax.linen``: the
recurrent mask must multiply ``h`` only where it enters the recurrent matrix
products, and the carried state must never be scaled. (Masking the carry
before calling Flax's ``GRUCell`` also scales the ``z * h`` term of its update,
which let a GRU's state grow without bound at recurrent dropout > 0.)

Each layer has fused gate kernels, in gate order (LSTM ``i, f, g, o``; GRU
``r, z, n``; simple: one gate)::

  w_i [D, G*H]   input kernel        (LeCun normal)
  w_h [H, G*H]   recurrent kernel    (one orthogonal [H, H] block per gate)
  b   [G*H]      bias on the input side (zeros)
  b_hn [H]       GRU only: the candidate's recurrent bias (zeros)

With ``m`` the layer's recurrent mask and ``x_t`` its (masked) input, one step
is (``σ`` the logistic sigmoid, ``∘`` elementwise)::

  simple: h' = tanh(x_t W_i + b + (m∘h) W_h)
  lstm:   [i, f, g, o] = x_t W_i + b + (m∘h) W_h
          c' = σ(f)∘c + σ(i)∘tanh(g);   h' = σ(o)∘tanh(c')
  gru:    [a_r, a_z, a_n] = x_t W_i + b;   [u_r, u_z, u_n] = (m∘h) W_h
          r = σ(a_r + u_r);   z = σ(a_z + u_z);   n = tanh(a_n + r∘(u_n + b_hn))
          h' = (1 - z)∘n + z∘h          (the unmasked h)

so a GRU or LSTM ``h`` stays in [-1, 1] at any dropout rate.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnsweep.models import fused

Array = jax.Array
#: One entry per layer: ``(c, h)`` for an LSTM, ``h`` for GRU / simple.
Carry = tuple

#: Gate matmuls per cell type (the G in the FLOP count and the kernels).
GATES = {"simple": 1, "lstm": 4, "gru": 3}
#: How a layer's time loop is built (:func:`layer_scan`).
RECURRENCES = ("xla", "xla_vjp", "pallas")


class DropoutMasks(NamedTuple):
  """Pre-scaled keep masks (0 or ``1 / (1 - rate)``), constant over time.

  Attributes:
    inputs: ``[B, D]`` on the first layer's inputs (D: embedding or features).
    recurrent: per layer ``[B, H]`` (variational: one mask for the whole
      sequence) or ``[B, T, H]`` (naive: one per time step of the window),
      on the state where it enters the recurrent matrix products.
    outputs: per layer ``[B, H]``, on what the layer passes upward / to the
      head.
  """

  inputs: Array
  recurrent: tuple[Array, ...]
  outputs: tuple[Array, ...]


def _mask(key: Array, rate: Array, shape: Sequence[int]) -> Array:
  keep = jax.random.bernoulli(key, 1.0 - rate, shape)
  # At rate 0 every unit is kept and the scale is exactly 1: no dropout.
  return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(jnp.float32)


def dropout_masks(key: Array, *, batch_size: int, input_size: int,
                  hidden_size: int, num_layers: int, input_rate: Array,
                  recurrent_rate: Array, output_rate: Array,
                  steps_per_window: int | None = None, window: Any = 0
                  ) -> DropoutMasks:
  """Samples one trial's masks for one batch of sequences.

  Args:
    key: the trial's dropout key for this batch of sequences.
    steps_per_window: ``None`` for variational recurrent masks (``[B, H]``);
      the window length ``T`` for naive ones (``[B, T, H]``, drawn from the
      layer's key folded with ``window``, so every time step of the
      sequence gets its own mask).
    window: the window's index within the sequence (naive only; may be
      traced).
  """
  keys = jax.random.split(key, 1 + 2 * num_layers)
  h_shape = (batch_size, hidden_size)

  def recurrent(layer):
    if steps_per_window is None:
      return _mask(keys[1 + layer], recurrent_rate, h_shape)
    return _mask(jax.random.fold_in(keys[1 + layer], window), recurrent_rate,
                 (batch_size, steps_per_window, hidden_size))

  return DropoutMasks(
      inputs=_mask(keys[0], input_rate, (batch_size, input_size)),
      recurrent=tuple(recurrent(l) for l in range(num_layers)),
      outputs=tuple(_mask(keys[1 + num_layers + l], output_rate, h_shape)
                    for l in range(num_layers)),
  )


def no_dropout(*, batch_size: int, input_size: int, hidden_size: int,
               num_layers: int) -> DropoutMasks:
  """All-ones masks (evaluation)."""
  ones_h = jnp.ones((batch_size, hidden_size), jnp.float32)
  return DropoutMasks(jnp.ones((batch_size, input_size), jnp.float32),
                      (ones_h,) * num_layers, (ones_h,) * num_layers)


def training_flops(*, cell: str, hidden_size: int, num_layers: int,
                   input_size: int, output_size: int, tokens: int) -> float:
  """Analytic FLOPs of one training update (forward and backward, ~3x the
  forward) over ``tokens`` = batch x window time steps: ``6*G*H*(I+H)`` per
  layer per token plus ``6*H*V`` for the head. (``cost_analysis`` counts a
  scan's body once, so it cannot be used.)"""
  per_token = 6 * hidden_size * output_size
  for layer in range(num_layers):
    width = input_size if layer == 0 else hidden_size
    per_token += 6 * GATES[cell] * hidden_size * (width + hidden_size)
  return float(per_token * tokens)


def _check_cell(cell: str) -> None:
  if cell not in GATES:
    raise ValueError(f"cell must be one of simple, lstm, gru; got {cell!r}")


def zero_carry(cell: str, num_layers: int, batch_size: int,
               hidden_size: int) -> Carry:
  z = jnp.zeros((batch_size, hidden_size), jnp.float32)
  return tuple(((z, z) if cell == "lstm" else z) for _ in range(num_layers))


def _orthogonal_blocks(gates: int):
  """Initialiser of a ``[H, G*H]`` kernel: one orthogonal block per gate."""
  orthogonal = nn.initializers.orthogonal()

  def init(key, shape, dtype=jnp.float32):
    h = shape[0]
    return jnp.concatenate([orthogonal(k, (h, h), dtype)
                            for k in jax.random.split(key, gates)], axis=-1)

  return init


def layer_scan(cell: str, params: Any, carry: Any, x: Array,
               recurrent_mask: Array, *, dtype: Any = None, unroll: int = 1,
               hoist_input: bool = False, recurrence: str = "xla"
               ) -> tuple[Any, Array]:
  """One recurrent layer over a window (the equations in the module doc).

  Args:
    cell: ``simple`` | ``lstm`` | ``gru``.
    params: the layer's ``w_i``, ``w_h``, ``b`` (and ``b_hn`` for GRU).
    carry: the layer's float32 state (``(c, h)`` or ``h``), each ``[B, H]``.
    x: ``[B, T, D]`` inputs, masked already.
    recurrent_mask: ``[B, H]`` (the same at every step) or ``[B, T, H]``
      (one per step).
    dtype: compute dtype (``None``: float32); the carry stays float32.
    unroll: time steps per scan iteration.
    hoist_input: project the whole window's inputs in one ``[B*T, D]``
      matmul before the time loop instead of one ``[B, D]`` matmul per step
      (the same function; rounding differs).
    recurrence: ``xla`` (a ``lax.scan``, differentiated by JAX),
      ``xla_vjp`` (:func:`rnnsweep.models.fused.scan_layer`: a ``lax.scan``
      with the fused kernels' hand-written backward, the recurrent
      kernel's gradient one matmul over the window; hoisted input
      projection, ``unroll`` steps per iteration of both scans) or
      ``pallas`` (the whole window in one fused kernel,
      :mod:`rnnsweep.models.fused`; hoisted input projection, ``unroll``
      unused). A call whose shape the kernel cannot
      take here (:func:`~rnnsweep.models.fused.unsupported`: on a GPU, an
      evaluation batch of 181 sequences, say, which is no power of two)
      runs the XLA scan, with ``hoist_input`` as given; the engine checks
      the training shape first and says so when that one falls back.

  Returns:
    ``(new_carry, outputs [B, T, H])``, outputs in the compute dtype.
  """
  if recurrence not in RECURRENCES:
    raise ValueError(f"recurrence must be one of {', '.join(RECURRENCES)}, "
                     f"got {recurrence!r}")
  with jax.named_scope("recurrence"):  # named for profiles
    if recurrence == "xla_vjp":
      return fused.scan_layer(cell, params, carry, x, recurrent_mask,
                              dtype=dtype, unroll=unroll)
    if recurrence == "pallas":
      why = fused.unsupported(cell, x.shape[0], params["w_h"].shape[0],
                              dtype=dtype)
      if why is None:
        return fused.layer(cell, params, carry, x, recurrent_mask,
                           dtype=dtype)
      logging.getLogger("rnnsweep").info(
          "recurrence=pallas: %s; a %s layer over %d sequences runs the XLA "
          "recurrence", why, cell, x.shape[0])
    return _scan(cell, params, carry, x, recurrent_mask, dtype=dtype,
                 unroll=unroll, hoist_input=hoist_input)


def _scan(cell: str, params: Any, carry: Any, x: Array,
          recurrent_mask: Array, *, dtype: Any, unroll: int,
          hoist_input: bool) -> tuple[Any, Array]:
  """:func:`layer_scan` as a ``lax.scan`` over the window's steps."""
  compute = dtype or jnp.float32
  w_i = params["w_i"].astype(compute)
  w_h = params["w_h"].astype(compute)
  b = params["b"].astype(compute)
  hidden = w_h.shape[0]

  def project(x_t):
    return jnp.dot(x_t.astype(compute), w_i) + b

  def step(c, a, m):
    """One time step, given the input projection ``a = x_t W_i + b`` and
    the step's recurrent mask ``m``."""
    h = c[1] if cell == "lstm" else c
    u = jnp.dot((h * m).astype(compute), w_h)
    if cell == "lstm":
      i, f, g, o = jnp.split(a + u, 4, axis=-1)
      new_c = (jax.nn.sigmoid(f) * c[0].astype(compute) +
               jax.nn.sigmoid(i) * jnp.tanh(g))
      new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
      return (new_c.astype(c[0].dtype), new_h.astype(h.dtype)), new_h
    if cell == "gru":
      r = jax.nn.sigmoid(a[:, :hidden] + u[:, :hidden])
      z = jax.nn.sigmoid(a[:, hidden:2 * hidden] + u[:, hidden:2 * hidden])
      n = jnp.tanh(a[:, 2 * hidden:] +
                   r * (u[:, 2 * hidden:] + params["b_hn"].astype(compute)))
      new_h = (1.0 - z) * n + z * h.astype(compute)
    else:
      new_h = jnp.tanh(a + u)
    return new_h.astype(h.dtype), new_h

  xs = jnp.swapaxes(x, 0, 1)  # [T, B, D]: scan runs over time
  xs = project(xs) if hoist_input else xs
  prepare = (lambda x_t: x_t) if hoist_input else project
  if recurrent_mask.ndim == 3:  # per step: scanned along with the inputs
    new_carry, ys = jax.lax.scan(
        lambda c, xm: step(c, prepare(xm[0]), xm[1]), carry,
        (xs, jnp.swapaxes(recurrent_mask, 0, 1)), unroll=unroll)
  else:
    new_carry, ys = jax.lax.scan(
        lambda c, x_t: step(c, prepare(x_t), recurrent_mask), carry, xs,
        unroll=unroll)
  return new_carry, jnp.swapaxes(ys, 0, 1)


@jax.custom_vjp
def embed_lookup(table: Array, tokens: Array) -> Array:
  """``table[tokens]`` (``jnp.take``), whose gradient is a one-hot matmul
  ``one_hot(tokens)^T g`` over the batch's tokens instead of the
  scatter-add jax makes of a gather's transpose. On a GPU that scatter
  adds every token's row into a small table with atomics, many on the same
  rows (a 64-character vocabulary, a thousand tokens a trial): it took a
  quarter of a workload S training update's GPU time on an H200 at K=1024,
  and nearly half of L's (benchmarks/RESULTS.md), and its order of
  additions, so its rounding, changes from run to run. The matmul is
  deterministic, float32 (``HIGHEST``: no TF32 rounding), and small."""
  return jnp.take(table, tokens, axis=0)


def _embed_lookup_fwd(table, tokens):
  return embed_lookup(table, tokens), (table, tokens)


def _embed_lookup_bwd(residuals, g):
  table, tokens = residuals
  one_hot = jax.nn.one_hot(tokens, table.shape[0], dtype=g.dtype)
  grad = jnp.einsum("...v,...e->ve", one_hot, g,
                    precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)
  return grad.astype(table.dtype), None


embed_lookup.defvjp(_embed_lookup_fwd, _embed_lookup_bwd)


#: The largest vocabulary whose embedding gradient is :func:`embed_lookup`'s
#: one-hot matmul; its ``[B, T, V]`` one-hot operand grows with ``V``, so a
#: larger vocabulary (a word-level task's) keeps the scatter-add.
ONE_HOT_MAX_VOCAB = 256


class TokenEmbed(nn.Embed):
  """``flax.linen.Embed`` (the same parameter, initializer and outputs)
  with :func:`embed_lookup`'s gradient up to :data:`ONE_HOT_MAX_VOCAB`
  tokens: the lookup reads the float32 table and casts the rows to
  ``dtype``, so the gradient is accumulated in float32 whatever the
  compute dtype."""

  def __call__(self, inputs: Array) -> Array:
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError("TokenEmbed: inputs must be integer tokens, got "
                       f"{inputs.dtype}")
    if self.num_embeddings <= ONE_HOT_MAX_VOCAB:
      rows = embed_lookup(self.embedding, inputs)
    else:
      rows = jnp.take(self.embedding, inputs, axis=0)
    return rows.astype(self.dtype) if self.dtype is not None else rows


class RecurrentLayer(nn.Module):
  """One recurrent layer's parameters, run over a window by
  :func:`layer_scan`."""

  cell: str
  features: int
  dtype: Any = None
  unroll: int = 1
  hoist_input: bool = False
  recurrence: str = "xla"

  @nn.compact
  def __call__(self, carry, x: Array, recurrent_mask: Array):
    _check_cell(self.cell)
    gates = GATES[self.cell] * self.features
    params = {
        "w_i": self.param("w_i", nn.initializers.lecun_normal(),
                          (x.shape[-1], gates)),
        "w_h": self.param("w_h", _orthogonal_blocks(GATES[self.cell]),
                          (self.features, gates)),
        "b": self.param("b", nn.initializers.zeros, (gates,)),
    }
    if self.cell == "gru":
      params["b_hn"] = self.param("b_hn", nn.initializers.zeros,
                                  (self.features,))
    return layer_scan(self.cell, params, carry, x, recurrent_mask,
                      dtype=self.dtype, unroll=self.unroll,
                      hoist_input=self.hoist_input,
                      recurrence=self.recurrence)


class RecurrentModel(nn.Module):
  """Embedding or features -> ``num_layers`` recurrent layers -> dense head.

  The head is applied at every time step; a task that predicts one value or
  label per sequence puts its target weight on the last step only.

  Attributes:
    cell: ``simple`` | ``lstm`` | ``gru``.
    hidden_size: units per layer.
    num_layers: stacked layers.
    output_size: head width (classes, vocabulary, or regression values).
    vocab_size: token vocabulary for token inputs; ``None`` for float
      features.
    embed_size: embedding width (token inputs only).
    dtype: compute dtype (``None``: float32); parameters stay float32.
    unroll: time steps per iteration of the scan loop.
    hoist_input: each layer's input projection as one matmul per window,
      outside the time loop (see :func:`layer_scan`).
    recurrence: ``xla`` or ``pallas`` (see :func:`layer_scan`).
  """

  cell: str
  hidden_size: int
  num_layers: int
  output_size: int
  vocab_size: int | None = None
  embed_size: int = 64
  dtype: Any = None
  unroll: int = 1
  hoist_input: bool = False
  recurrence: str = "xla"

  @nn.compact
  def __call__(self, carry: Carry, inputs: Array,
               masks: DropoutMasks) -> tuple[Carry, Array]:
    """Runs a window of time steps.

    Args:
      carry: per layer state, each ``[B, H]``.
      inputs: ``[B, T]`` int tokens or ``[B, T, F]`` float features.
      masks: this sequence batch's dropout masks.

    Returns:
      ``(new_carry, outputs)`` with outputs ``[B, T, output_size]``.
    """
    if self.vocab_size is not None:
      x = TokenEmbed(self.vocab_size, self.embed_size, name="embed",
                     dtype=self.dtype)(inputs)
    else:
      x = inputs.astype(jnp.float32)
    x = x * masks.inputs[:, None, :]
    new_carry = []
    for l in range(self.num_layers):
      c, ys = RecurrentLayer(self.cell, self.hidden_size, self.dtype,
                             self.unroll, self.hoist_input, self.recurrence,
                             name=f"layer_{l}")(carry[l], x,
                                                masks.recurrent[l])
      new_carry.append(c)
      x = ys * masks.outputs[l][:, None, :]
    return tuple(new_carry), nn.Dense(self.output_size, name="head",
                                      dtype=self.dtype)(x)
