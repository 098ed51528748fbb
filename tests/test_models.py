"""Cells, the scanned stack and variational dropout, checked against the
independent reference in ``reference.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnsweep as rs
from rnnsweep import engine
from rnnsweep import models
from rnnsweep.groups import StaticConfig
import reference

CELLS = ["simple", "lstm", "gru"]
B, T, H = 3, 5, 6
VOCAB, D = 11, 4
# Dropout rates (input, recurrent, output): each one alone, and all three.
RATES = {"input": (0.3, 0.0, 0.0), "recurrent": (0.0, 0.4, 0.0),
         "output": (0.0, 0.0, 0.35), "all": (0.2, 0.5, 0.3)}


def _case(cell, layers, tokens, rates, dtype=None, hoist=False, seed=0,
          recurrence="xla"):
  model = models.RecurrentModel(cell=cell, hidden_size=H, num_layers=layers,
                                output_size=5,
                                vocab_size=VOCAB if tokens else None,
                                embed_size=D, dtype=dtype, hoist_input=hoist,
                                recurrence=recurrence)
  rng = np.random.default_rng(seed)
  x = (jnp.asarray(rng.integers(0, VOCAB, (B, T))) if tokens
       else jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32))
  masks = reference.bernoulli_masks(rng, rates, B, D, H, layers)
  carry = reference.random_carry(rng, cell, layers, B, H)
  params = model.init(jax.random.PRNGKey(seed), carry, x,
                      models.DropoutMasks(*masks))["params"]
  # Non-zero biases, so a bias in the wrong place shows.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: (p + 0.1 * jnp.asarray(rng.normal(size=p.shape),
                                              jnp.float32)
                       if "b" in str(path[-1]) else p), params)
  return model, params, carry, x, masks


def _loss_and_grads(fn, params, carry):
  """A scalar of every output and final state, its gradient wrt the params
  and the starting carry."""
  def loss(p, c):
    new_c, y = fn(p, c)
    return jnp.sum(jnp.sin(y.astype(jnp.float32))) + sum(
        jnp.sum(jnp.cos(a)) for a in jax.tree_util.tree_leaves(new_c)), (
            new_c, y)
  (_, (c, y)), grads = jax.value_and_grad(loss, argnums=(0, 1),
                                          has_aux=True)(params, carry)
  return c, y, grads


def _close(a, b, tol, what=""):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  assert a.shape == b.shape
  scale = max(float(np.max(np.abs(b))), 1e-6)
  assert float(np.max(np.abs(a - b))) <= tol * scale, (
      what, float(np.max(np.abs(a - b))), scale)


@pytest.mark.parametrize("layers, tokens", [(1, False), (2, True)])
@pytest.mark.parametrize("hoist, recurrence", [
    (False, "xla"), (True, "xla"), (False, "xla_vjp")],
                         ids=["scan", "hoisted", "xla_vjp"])
@pytest.mark.parametrize("cell", CELLS)
def test_model_equals_independent_reference(cell, hoist, recurrence, layers,
                                            tokens):
  """Outputs, final carries and gradients (parameters and starting carry)
  equal the reference's to 1e-5, with each dropout on alone and all three
  together; for the XLA scan differentiated by JAX (its input projection
  in the loop or hoisted) and with its hand-written backward
  (``xla_vjp``; the Pallas kernel: test_fused.py)."""
  model, params, carry, x, _ = _case(cell, layers, tokens, RATES["all"],
                                     hoist=hoist, recurrence=recurrence)
  # Masks are arguments: one compile of each side serves every rate set.
  ours = jax.jit(lambda p, c, m: _loss_and_grads(
      lambda p, c: model.apply({"params": p}, c, x, models.DropoutMasks(*m)),
      p, c))
  ref = jax.jit(lambda p, c, m: _loss_and_grads(
      lambda p, c: reference.forward(cell, p, c, x, m), p, c))
  for name, rates in RATES.items():
    masks = reference.bernoulli_masks(np.random.default_rng(len(name)),
                                      rates, B, D, H, layers)
    c1, y1, g1 = ours(params, carry, masks)
    c2, y2, g2 = ref(params, carry, masks)
    assert y1.shape == (B, T, 5)
    _close(y1, y2, 1e-5, name)
    jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, name), c1, c2)
    jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, name), g1, g2)
    # The gradient reaches every parameter (no dead branch hides a bug).
    assert all(float(jnp.max(jnp.abs(g))) > 0
               for g in jax.tree_util.tree_leaves(g1[0])), name
  # Naive recurrent dropout: a recurrent mask per time step.
  masks = reference.bernoulli_masks(np.random.default_rng(9), RATES["all"],
                                    B, D, H, layers, steps=T)
  assert masks[1][0].shape == (B, T, H)
  c1, y1, g1 = ours(params, carry, masks)
  c2, y2, g2 = ref(params, carry, masks)
  _close(y1, y2, 1e-5, "per step")
  jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, "per step"), c1, c2)
  jax.tree_util.tree_map(lambda a, b: _close(a, b, 1e-5, "per step"), g1, g2)


@pytest.mark.parametrize("cell, hoist, recurrence", [
    ("lstm", False, "xla"), ("gru", True, "xla"), ("gru", False, "pallas"),
    ("lstm", False, "xla_vjp"), ("gru", False, "xla_vjp")])
def test_bfloat16_compute_is_near_the_reference(cell, hoist, recurrence):
  model, params, carry, x, masks = _case(cell, 2, True, RATES["all"],
                                         dtype=jnp.bfloat16, hoist=hoist,
                                         recurrence=recurrence)
  c1, y1, g1 = jax.jit(lambda p, c: _loss_and_grads(
      lambda p, c: model.apply({"params": p}, c, x,
                               models.DropoutMasks(*masks)), p, c))(
                                   params, carry)
  c2, y2, g2 = jax.jit(lambda p, c: _loss_and_grads(
      lambda p, c: reference.forward(cell, p, c, x, masks), p, c))(
          params, carry)
  assert y1.dtype == jnp.bfloat16
  # Carries stay float32 whatever the compute dtype.
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(c1))
  _close(y1, y2, 3e-2)
  jax.tree_util.tree_map(lambda a, b: _close(a, b, 3e-2), c1, c2)
  jax.tree_util.tree_map(lambda a, b: _close(a, b, 5e-2), g1, g2)


@pytest.mark.parametrize("hoist", [False, True], ids=["scan", "hoisted"])
@pytest.mark.parametrize("cell", CELLS)
def test_state_stays_bounded_under_recurrent_dropout(cell, hoist):
  """200 steps at recurrent dropout 0.5: h stays in [-1, 1] (the mask
  never scales the carried state); an LSTM's c stays finite."""
  hidden, batch = 32, 16
  model = models.RecurrentModel(cell=cell, hidden_size=hidden, num_layers=2,
                                output_size=2, embed_size=8,
                                hoist_input=hoist)
  rng = np.random.default_rng(1)
  x = jnp.asarray(2.0 * rng.normal(size=(batch, 200, 8)), jnp.float32)
  masks = reference.bernoulli_masks(rng, (0.0, 0.5, 0.0), batch, 8, hidden, 2)
  carry = models.zero_carry(cell, 2, batch, hidden)
  masks = models.DropoutMasks(*masks)
  params = model.init(jax.random.PRNGKey(0), carry, x, masks)["params"]
  # Larger recurrent weights than the init's, to push the state hard.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: 3.0 * p if "w_h" in str(path[-1]) else p, params)
  new_carry, y = model.apply({"params": params}, carry, x, masks)
  for layer in new_carry:
    h = layer[1] if cell == "lstm" else layer
    assert float(jnp.max(jnp.abs(h))) <= 1.0
    if cell == "lstm":
      assert bool(jnp.all(jnp.isfinite(layer[0])))
  assert bool(jnp.all(jnp.isfinite(y)))


def test_rate_zero_is_exactly_no_dropout():
  masks = models.dropout_masks(
      jax.random.PRNGKey(3), batch_size=B, input_size=D, hidden_size=H,
      num_layers=2, input_rate=jnp.float32(0), recurrent_rate=jnp.float32(0),
      output_rate=jnp.float32(0))
  for m in jax.tree_util.tree_leaves(masks):
    np.testing.assert_array_equal(m, np.ones_like(m))


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


def test_naive_masks_are_new_every_step_and_window():
  kw = dict(batch_size=100, input_size=5, hidden_size=40, num_layers=2,
            input_rate=jnp.float32(0.3), recurrent_rate=jnp.float32(0.5),
            output_rate=jnp.float32(0.2))
  key = jax.random.PRNGKey(4)
  naive = [models.dropout_masks(key, steps_per_window=6, window=w, **kw)
           for w in (0, 1, 1)]
  variational = models.dropout_masks(key, **kw)
  for layer in range(2):
    m = np.asarray(naive[0].recurrent[layer])
    assert m.shape == (100, 6, 40)
    assert set(np.unique(m)) <= {0.0, np.float32(2.0)}
    assert abs((m == 0).mean() - 0.5) < 0.02
    # Every step has its own mask (not one mask repeated over time) ...
    assert all(not np.array_equal(m[:, t], m[:, t + 1]) for t in range(5))
    # ... so does every window; the same window draws the same masks.
    assert not np.array_equal(m, naive[1].recurrent[layer])
    np.testing.assert_array_equal(naive[1].recurrent[layer],
                                  naive[2].recurrent[layer])
  assert not np.array_equal(naive[0].recurrent[0], naive[0].recurrent[1])
  # Input and output masks stay one per sequence, as in variational mode.
  for a in naive:
    np.testing.assert_array_equal(a.inputs, variational.inputs)
    for x, y in zip(a.outputs, variational.outputs):
      np.testing.assert_array_equal(x, y)


def test_engine_masks_per_sequence_trial_and_batch(tiny_lm):
  static = StaticConfig(cell="lstm", hidden_size=8, num_layers=2,
                        batch_size=4, truncation=4, embed_size=8,
                        optimizer="adam")
  prog = engine.OneTrial(static, tiny_lm)
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


def _row_sums(tokens, g, rows):
  """Each table row's sum of its tokens' output gradients (np.add.at)."""
  out = np.zeros((rows, g.shape[-1]))
  np.add.at(out, np.asarray(tokens).reshape(-1),
            np.asarray(g, np.float64).reshape(-1, g.shape[-1]))
  return out


def test_the_embedding_gradient_is_a_deterministic_sum_not_a_scatter():
  """Token rows repeat many times in a batch (a small vocabulary): the
  embedding's gradient is each row's sum of its tokens' output gradients
  (an independent np.add.at reference) with no scatter in the program
  (on a GPU, a scatter-add of atomics, slow and in no fixed order); the
  parameter, its initial values and the outputs are flax.linen.Embed's.
  Past rnn.ONE_HOT_MAX_VOCAB tokens the scatter stays (the one-hot
  operand would outgrow the table), with the same sums."""
  from rnnsweep.models import rnn  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, 5, (2, 4, 7)))  # 56 tokens, 5 rows
  weights = jnp.asarray(rng.normal(size=(2, 4, 7, 3)), jnp.float32)
  big = rnn.ONE_HOT_MAX_VOCAB + 1
  for vocab, dtype in ((5, None), (5, jnp.bfloat16), (big, None)):
    ours, theirs = (m(vocab, 3, dtype=dtype)
                    for m in (rnn.TokenEmbed, nn.Embed))
    params = ours.init(jax.random.PRNGKey(1), tokens)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        np.array_equal, params, theirs.init(jax.random.PRNGKey(1), tokens)))
    np.testing.assert_array_equal(
        np.asarray(ours.apply(params, tokens), np.float32),
        np.asarray(theirs.apply(params, tokens), np.float32))

    def loss(p, ours=ours):
      return (ours.apply(p, tokens).astype(jnp.float32) * weights).sum()

    assert ("scatter" in str(jax.make_jaxpr(jax.grad(loss))(params))) == (
        vocab == big)
    grad = jax.jit(jax.grad(loss))(params)["params"]["embedding"]
    g = weights.astype(dtype) if dtype is not None else weights
    np.testing.assert_allclose(np.asarray(grad),
                               _row_sums(tokens, g, vocab),
                               rtol=1e-6, atol=1e-6)
