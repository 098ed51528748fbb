"""Each optimizer family, built from traced per-trial values, equals optax's
own transformation built with Python floats."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnsweep import engine

HP = dict(learning_rate=3e-2, weight_decay=1e-2, grad_clip=0.5, beta1=0.8,
          beta2=0.95, momentum=0.7)


def _optax_reference(name, hp):
  """What each family means, in optax's own public transformations."""
  clip = optax.clip_by_global_norm(hp["grad_clip"])
  decay = optax.add_decayed_weights(hp["weight_decay"])
  lr = hp["learning_rate"]
  if name == "adam":  # L2 on the gradient, then Adam
    return optax.chain(clip, decay, optax.adam(lr, b1=hp["beta1"],
                                               b2=hp["beta2"]))
  if name == "adamw":  # decoupled weight decay
    return optax.chain(clip, optax.adamw(lr, b1=hp["beta1"], b2=hp["beta2"],
                                         weight_decay=hp["weight_decay"]))
  if name == "rmsprop":
    return optax.chain(clip, decay, optax.rmsprop(lr, decay=0.9, eps=1e-8,
                                                  momentum=hp["momentum"]))
  assert name == "sgd"
  return optax.chain(clip, decay, optax.sgd(lr, momentum=hp["momentum"]))


@pytest.mark.parametrize("clip", [0.5, 0.0], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd"])
def test_family_equals_optax(name, clip):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  grads = [jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(6)]
  hp = dict(HP, grad_clip=clip)
  assert float(optax.tree.norm(grads[0])) > 2 * HP["grad_clip"]  # clip bites
  # optax's clip_by_global_norm has no "off"; a huge norm is the same.
  ref = _optax_reference(name, dict(hp, grad_clip=clip or 1e30))

  @jax.jit
  def ours_step(traced_hp, state, g, p):
    tx = engine.make_optimizer(name, traced_hp)
    return tx.update(g, state, p)

  traced = {k: jnp.float32(v) for k, v in hp.items()}
  ours_state = engine.make_optimizer(name, traced).init(params)
  ref_state = ref.init(params)
  p_ours = p_ref = params
  for g in grads:
    u_ours, ours_state = ours_step(traced, ours_state, g, p_ours)
    u_ref, ref_state = ref.update(g, ref_state, p_ref)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        u_ours, u_ref)
    p_ours = optax.apply_updates(p_ours, u_ours)
    p_ref = optax.apply_updates(p_ref, u_ref)
  # The updates moved the parameters (an all-zero update would pass above).
  assert float(jnp.max(jnp.abs(p_ours["w"] - params["w"]))) > 1e-3

