"""`train_and_evaluate(config, workdir, model=, dataset=, algorithm=)` with a model, a
dataset and an algorithm defined here, outside the package; and resuming such a run."""

import json
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedjax_gen as fg


class TwoLayer(nn.Module):
  """[B, 6] features -> [B, 3] logits."""
  hidden: int = 16

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(3, name="head")(x)


def blobs(seed=0, n_train=600, n_test=150):
  """Three Gaussian blobs in 6-D, far apart: a model that learns reaches ~100%."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(0, 4, (3, 6))
  def draw(n):
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.normal(0, 1, (n, 6))).astype(np.float32), y.astype(np.int64)
  return (*draw(n_train), *draw(n_test))


class Server(NamedTuple):
  params: dict


class Carry(NamedTuple):
  params: dict
  steps: jax.Array


def half_step_fedavg(loss_fn, params, lr=0.1, server_lr=0.5):
  """FedAvg whose server moves only `server_lr` of the way to the clients' mean."""
  del params
  def client_step(server, carry, batch):
    loss, grads = jax.value_and_grad(loss_fn)(carry.params, batch)
    new = jax.tree.map(lambda p, g: p - lr * g, carry.params, grads)
    return Carry(new, carry.steps + 1), loss

  def server_update(server, uploads, weights):
    mean = jax.tree.map(lambda u: jnp.tensordot(weights, u, axes=1), uploads)
    return Server(jax.tree.map(lambda p, m: p + server_lr * (m - p), server.params, mean))

  return fg.FederatedAlgorithm(
      server_init=Server,
      client_state_init=lambda p: (),
      client_init=lambda server, state, key: Carry(server.params, jnp.zeros((), jnp.int32)),
      client_step=client_step,
      client_final=lambda server, state, carry: (carry.params, state),
      server_update=server_update)


def config(**overrides):
  c = fg.base_config()
  c.update({**dict(num_clients=6, clients_per_round=3, rounds=4, local_steps=5,
                   batch_size=16, eval_every=2, checkpoint_every=2, progress=False,
                   partition="dirichlet", alpha=1.0), **overrides})
  c.data.update(min_client_size=20, test_fraction=0.2)
  return c


def run(workdir, rounds, dataset=None, **kw):
  return fg.train_and_evaluate(config(rounds=rounds), str(workdir), model=TwoLayer(),
                               dataset=dataset or blobs(), algorithm=half_step_fedavg, **kw)


def test_own_model_dataset_and_algorithm_train_record_and_resume_exactly(tmp_path):
  summary = run(tmp_path / "a", rounds=4)
  assert summary["global_accuracy"] > 0.9, summary  # blobs are separable
  custom = summary["custom"]
  assert custom["model"].startswith("TwoLayer(") and custom["dataset"]["train"] == [600, 6]
  assert custom["algorithm"] == "tests.test_bring_your_own.half_step_fedavg"
  saved = json.loads((tmp_path / "a" / "config.json").read_text())
  assert saved["custom"] == custom
  assert summary["conv_impl"] == "custom"
  # resume to 6 rounds == 6 rounds in one go
  resumed = run(tmp_path / "a", rounds=6)
  fresh = run(tmp_path / "b", rounds=6)
  for key in ("global_accuracy", "global_loss", "personalized_accuracy"):
    assert resumed[key] == fresh[key], key
  rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in rows] == list(range(1, 7))


def test_resume_with_another_dataset_is_refused(tmp_path):
  run(tmp_path, rounds=2)
  with pytest.raises(ValueError, match="holds a run of a different config.*custom.dataset"):
    run(tmp_path, rounds=4, dataset=blobs(seed=1))


def test_a_ready_algorithm_object_and_bad_datasets():
  with pytest.raises(ValueError, match=r"dataset= takes a \(x_train, y_train, x_test, y_test\)"):
    fg.train_and_evaluate(config(), "/tmp/unused", dataset=np.zeros(3))
  x, y, xt, yt = blobs()
  with pytest.raises(ValueError, match="labels must be integers >= 0"):
    fg.train_and_evaluate(config(), "/tmp/unused", dataset=(x, y - 1, xt, yt))


def test_an_algorithm_object_replaces_the_configs(tmp_path):
  model = TwoLayer()
  loss = fg.masked_cross_entropy(lambda p, x: model.apply({"params": p}, x))
  summary = fg.train_and_evaluate(config(rounds=2, algorithm="scaffold"), str(tmp_path),
                                  model=model, dataset=blobs(),
                                  algorithm=half_step_fedavg(loss, None))
  assert summary["custom"]["algorithm"].endswith("client_step")
  assert 0 <= summary["global_accuracy"] <= 1
