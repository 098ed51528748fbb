"""Cells, the scanned stack and variational dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import models
from rnnsweep.groups import StaticConfig

CELLS = ["simple", "lstm", "gru"]
B, T, H, L = 3, 7, 6, 2


def _masks(key, rates=(0.2, 0.3, 0.4), input_size=4):
  return models.dropout_masks(
      key, batch_size=B, input_size=input_size, hidden_size=H, num_layers=L,
      input_rate=jnp.float32(rates[0]), recurrent_rate=jnp.float32(rates[1]),
      output_rate=jnp.float32(rates[2]))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tokens", [True, False])
def test_scan_equals_python_loop(cell, tokens):
  model = models.RecurrentModel(cell=cell, hidden_size=H, num_layers=L,
                                output_size=5, vocab_size=11 if tokens else None,
                                embed_size=4)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = (jax.random.randint(k1, (B, T), 0, 11) if tokens
       else jax.random.normal(k1, (B, T, 4)))
  masks = _masks(k3)
  # A non-zero starting carry, as in a window that is not a sequence's first.
  carry = jax.tree_util.tree_map(
      lambda z: jax.random.normal(k2, z.shape),
      models.zero_carry(cell, L, B, H))
  params = model.init(jax.random.PRNGKey(1), carry, x, masks)["params"]
  c_scan, y_scan = model.apply({"params": params}, carry, x, masks)
  c_loop, y_loop = models.step_by_step(model, params, carry, x, masks)
  assert y_scan.shape == (B, T, 5)
  np.testing.assert_allclose(y_scan, y_loop, rtol=1e-5, atol=1e-6)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      c_scan, c_loop)


@pytest.mark.parametrize("cell, dtype", [(c, None) for c in CELLS] +
                         [("lstm", jnp.bfloat16), ("gru", jnp.bfloat16)])
def test_hoisted_input_projection_is_the_same_function(cell, dtype):
  model = models.RecurrentModel(cell=cell, hidden_size=H, num_layers=L,
                                output_size=5, vocab_size=11, embed_size=4,
                                dtype=dtype)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
  x = jax.random.randint(k1, (B, T), 0, 11)
  masks = _masks(k3)
  carry = jax.tree_util.tree_map(
      lambda z: jax.random.normal(k2, z.shape),
      models.zero_carry(cell, L, B, H))
  params = model.init(jax.random.PRNGKey(1), carry, x, masks)["params"]

  def loss(fn, p):
    c, y = fn(p, carry)
    return jnp.sum(y.astype(jnp.float32) ** 2) + sum(
        jnp.sum(a) for a in jax.tree_util.tree_leaves(c)), (c, y)

  def scanned(p, c):
    return model.apply({"params": p}, c, x, masks)

  def hoisted(p, c):
    return models.hoisted_apply(model, p, c, x, masks)

  (_, (c1, y1)), g1 = jax.value_and_grad(
      lambda p: loss(scanned, p), has_aux=True)(params)
  (_, (c2, y2)), g2 = jax.value_and_grad(
      lambda p: loss(hoisted, p), has_aux=True)(params)
  assert y1.dtype == y2.dtype
  # Relative to each array's scale: gradients sum over time steps in a
  # different order (one matmul instead of one per step).
  tol = 1e-5 if dtype is None else 3e-2

  def close(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.max(np.abs(a - b)) <= tol * np.max(np.abs(a))

  close(y1, y2)
  jax.tree_util.tree_map(close, c1, c2)
  jax.tree_util.tree_map(close, g1, g2)
  # The gradient reaches every parameter through both paths.
  assert all(float(jnp.max(jnp.abs(g))) > 0
             for g in jax.tree_util.tree_leaves(g2))


def test_rate_zero_is_exactly_no_dropout():
  masks = _masks(jax.random.PRNGKey(3), rates=(0.0, 0.0, 0.0))
  for m in jax.tree_util.tree_leaves(masks):
    np.testing.assert_array_equal(m, np.ones_like(m))
  model = models.RecurrentModel(cell="lstm", hidden_size=H, num_layers=L,
                                output_size=2, embed_size=4)
  x = jax.random.normal(jax.random.PRNGKey(4), (B, T, 4))
  carry = models.zero_carry("lstm", L, B, H)
  params = model.init(jax.random.PRNGKey(1), carry, x, masks)["params"]
  none = models.no_dropout(batch_size=B, input_size=4, hidden_size=H,
                           num_layers=L)
  np.testing.assert_array_equal(
      model.apply({"params": params}, carry, x, masks)[1],
      model.apply({"params": params}, carry, x, none)[1])


def test_mask_values_and_rate():
  masks = models.dropout_masks(
      jax.random.PRNGKey(0), batch_size=200, input_size=50, hidden_size=50,
      num_layers=1, input_rate=jnp.float32(0.25),
      recurrent_rate=jnp.float32(0.5), output_rate=jnp.float32(0.1))
  for m, rate in ((masks.inputs, 0.25), (masks.recurrent[0], 0.5),
                  (masks.outputs[0], 0.1)):
    m = np.asarray(m)
    assert set(np.unique(m)) <= {0.0, np.float32(1 / (1 - rate))}
    assert abs((m == 0).mean() - rate) < 0.02


@pytest.mark.parametrize("cell", CELLS)
def test_mask_is_constant_across_time(cell):
  """Behavioural: the output at step t depends on input unit d at step t
  for the same set of (sequence, unit) pairs at every t."""
  model = models.RecurrentModel(cell=cell, hidden_size=H, num_layers=1,
                                output_size=1, embed_size=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, 4))
  masks = models.dropout_masks(
      jax.random.PRNGKey(7), batch_size=B, input_size=4, hidden_size=H,
      num_layers=1, input_rate=jnp.float32(0.5),
      recurrent_rate=jnp.float32(0.0), output_rate=jnp.float32(0.0))
  carry = models.zero_carry(cell, 1, B, H)
  params = model.init(jax.random.PRNGKey(1), carry, x, masks)["params"]

  def out_at(t, xt):
    return jnp.sum(model.apply({"params": params}, carry,
                               x.at[:, t].set(xt), masks)[1][:, t])

  used = [np.asarray(jax.grad(out_at, argnums=1)(t, x[:, t]) != 0)
          for t in range(T)]
  assert 0 < used[0].sum() < used[0].size  # some dropped, some kept
  for u in used[1:]:
    np.testing.assert_array_equal(u, used[0])
  np.testing.assert_array_equal(used[0], np.asarray(masks.inputs) != 0)


def test_engine_masks_per_sequence_trial_and_batch(tiny_lm):
  static = StaticConfig(cell="lstm", hidden_size=8, num_layers=2,
                        batch_size=4, truncation=4, embed_size=8,
                        optimizer="adam")
  prog = engine.Program(static, tiny_lm)
  hp = {k: jnp.float32(v) for k, v in rs.space.resolve_params(
      {"input_dropout": 0.3, "recurrent_dropout": 0.3,
       "output_dropout": 0.3}).items() if k in rs.space.VECTOR_NAMES}
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  same = [prog.masks(k1, hp, jnp.int32(5)) for _ in range(2)]
  leaves = [jax.tree_util.tree_leaves(m) for m in same]
  for a, b in zip(*leaves):
    np.testing.assert_array_equal(a, b)
  other_batch = jax.tree_util.tree_leaves(prog.masks(k1, hp, jnp.int32(6)))
  other_trial = jax.tree_util.tree_leaves(prog.masks(k2, hp, jnp.int32(5)))
  for a, b, c in zip(leaves[0], other_batch, other_trial):
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    # Rows (sequences) differ from each other within one batch.
    assert len({tuple(r) for r in np.asarray(a)}) > 1
  # Four windows per sequence: steps 0..3 are sequence batch 0, step 4 is 1.
  data = tiny_lm.data()
  key = jax.random.PRNGKey(0)
  batches = [int(prog.train_window(data.train, key, jnp.int32(s))[1])
             for s in range(6)]
  assert batches == [0, 0, 0, 0, 1, 1]
