"""Local-only, FedAvg+FT, FedPer, FedBN, FedRep, FedBABU: defining steps on tiny cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.algorithms import Batch, personalized
from fedjax_gen.algorithms.layers import layer_mask, norm_mask
from fedjax_gen.engine import ExecutionPlan, LocalSchedule, Simulation
from tests.helpers import assert_trees_close, normnet_problem

OPT = optax.sgd(0.3, momentum=0.5)
SERVER = optax.sgd(1.0)


def changed(a, b):
  return not np.allclose(np.asarray(a), np.asarray(b))


def rounds(alg, params, train, n=2, train_ids=None, per_round=3):
  sim = Simulation(alg, train, LocalSchedule(2, 1, 0), clients_per_round=per_round,
                   plan=ExecutionPlan(per_round, 0), train_ids=train_ids)
  server, states = sim.init(params)
  for r in range(n):
    server, states, _ = sim.round(server, states, jax.random.key(r))
  return sim, server, states


def test_layer_masks_and_their_errors():
  _, _, params, _ = normnet_problem()
  head = layer_mask(params, ["head"])
  assert jax.tree.leaves(head["head"]) == [True, True]
  assert not any(jax.tree.leaves(head["body"]))
  norm = norm_mask(params)
  assert all(jax.tree.leaves(norm["norm"])) and not any(jax.tree.leaves(norm["head"]))
  with pytest.raises(ValueError, match=r"no layer\(s\) \['classifier'\]; its top-level "
                     r"layers are \['body', 'head', 'norm'\]"):
    layer_mask(params, ["classifier"])
  with pytest.raises(ValueError, match="leaves nothing shared"):
    layer_mask(params, ["body", "norm", "head"])


def test_fedrep_head_phase_updates_only_the_head():
  train, _, params, loss_fn = normnet_problem()
  head = layer_mask(params, ["head"])
  alg = personalized.fedrep(loss_fn, OPT, SERVER, head, head_fraction=0.5)
  server = alg.server_init(params)
  carry = alg.client_init(server, params, jax.random.key(0))
  batch = lambda step: Batch(jnp.asarray(train.x[0]), jnp.asarray(train.y[0]),
                             jnp.arange(8) < 5, step, 4)
  head_step, _ = alg.client_step(server, carry, batch(1))     # step 1 of 4: head phase
  body_step, _ = alg.client_step(server, carry, batch(2))     # step 2 of 4: body phase
  for name in ("body", "norm"):
    assert_trees_close(head_step.params[name], params[name], atol=0, rtol=0)
    assert changed(jax.tree.leaves(body_step.params[name])[0], jax.tree.leaves(params[name])[0])
  assert_trees_close(body_step.params["head"], params["head"], atol=0, rtol=0)
  assert changed(head_step.params["head"]["kernel"], params["head"]["kernel"])


def test_fedper_keeps_heads_local_and_averages_the_body():
  train, _, params, loss_fn = normnet_problem()
  head = layer_mask(params, ["head"])
  alg = personalized.partial_personalization(loss_fn, OPT, SERVER, head)
  _, server, states = rounds(alg, params, train)
  assert_trees_close(server.params["head"], params["head"], atol=0, rtol=0)  # never averaged
  assert changed(server.params["body"]["kernel"], params["body"]["kernel"])
  heads = np.asarray(states["head"]["kernel"])
  assert changed(heads[0], heads[1]) and changed(heads[0], params["head"]["kernel"])
  personal = alg.eval_params(server, jax.tree.map(lambda a: a[0], states))
  assert_trees_close(personal["body"], server.params["body"])
  assert_trees_close(personal["head"], jax.tree.map(lambda a: a[0], states["head"]))


def test_fedbn_never_averages_normalisation_layers():
  train, _, params, loss_fn = normnet_problem()
  alg = personalized.partial_personalization(loss_fn, OPT, SERVER, norm_mask(params))
  _, server, states = rounds(alg, params, train)
  assert_trees_close(server.params["norm"], params["norm"], atol=0, rtol=0)
  assert changed(states["norm"]["scale"][0], params["norm"]["scale"])
  assert changed(server.params["head"]["kernel"], params["head"]["kernel"])


def test_fedbabu_head_stays_at_init_and_finetune_moves_it():
  train, _, params, loss_fn = normnet_problem()
  alg = personalized.fedbabu(loss_fn, OPT, SERVER, layer_mask(params, ["head"]))
  sim, server, states = rounds(alg, params, train)
  assert_trees_close(server.params["head"], params["head"], atol=0, rtol=0)
  assert changed(server.params["body"]["kernel"], params["body"]["kernel"])
  tuned = sim.adapt(alg.personalize, server, states, [0, 2], jax.random.key(5), 3)
  assert tuned["head"]["kernel"].shape == (2, *params["head"]["kernel"].shape)
  assert changed(tuned["head"]["kernel"][0], params["head"]["kernel"])


def test_local_only_never_aggregates():
  train, _, params, loss_fn = normnet_problem()
  alg = personalized.local_only(loss_fn, OPT)
  _, server, states = rounds(alg, params, train)
  assert_trees_close(server.params, params, atol=0, rtol=0)
  own = jax.tree.map(lambda a: a[1], states)
  assert changed(own["body"]["kernel"], params["body"]["kernel"])
  assert_trees_close(alg.eval_params(server, own), own)


def test_fedavg_ft_finetunes_from_the_global_model():
  train, _, params, loss_fn = normnet_problem()
  alg = personalized.fedavg_ft(loss_fn, OPT, SERVER)
  sim, server, states = rounds(alg, params, train)
  zero = sim.adapt(alg.personalize, server, states, [0, 1], jax.random.key(0), 0)
  assert_trees_close(jax.tree.map(lambda a: a[1], zero), server.params)
  tuned = sim.adapt(alg.personalize, server, states, [0, 1], jax.random.key(0), 4)
  assert changed(tuned["head"]["kernel"][1], server.params["head"]["kernel"])


def test_held_out_clients_never_train():
  train, _, params, loss_fn = normnet_problem(counts=(5, 3, 8, 4), max_n=8)
  alg = personalized.local_only(loss_fn, OPT)
  sim, _, states = rounds(alg, params, train, n=4, train_ids=[0, 2], per_round=2)
  held = jax.tree.map(lambda a: a[3], states)
  assert_trees_close(held, params, atol=0, rtol=0)
  with pytest.raises(ValueError, match=r"clients_per_round=3 must be in \[1, 2\]"):
    Simulation(alg, train, LocalSchedule(2, 1, 0), clients_per_round=3, train_ids=[0, 2])
