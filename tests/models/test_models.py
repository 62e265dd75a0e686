"""Tests for fedjax_gen.models (kept small: CPU-only, 2 cores)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_gen.models import (MODELS, count_params, get_model, init_params,
                               supported_models)

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
DIGITS = (8, 8, 1)

CASES = [
    ("mlp", MNIST), ("mlp", CIFAR), ("mlp", DIGITS),
    ("simple_cnn", MNIST), ("simple_cnn", CIFAR),
    ("cnn4", MNIST), ("cnn4", CIFAR),
]


@functools.lru_cache(maxsize=None)
def _build_cached(name, shape, num_classes, seed, kw):
  model = get_model(name, num_classes=num_classes, input_shape=shape, **dict(kw))
  params = init_params(model, shape, jax.random.key(seed))
  return model, params


def _build(name, shape, num_classes=10, seed=0, **kw):
  """(model, params); cached, since init is the slow part on CPU."""
  return _build_cached(name, shape, num_classes, seed, tuple(sorted(kw.items())))


def _batch(shape, n, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, *shape), jnp.float32)


@pytest.mark.parametrize("name,shape", CASES)
def test_forward_shape_finite_head(name, shape):
  model, params = _build(name, shape)
  y = model.apply({"params": params}, _batch(shape, 3))
  assert y.shape == (3, 10)
  assert y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))
  assert "head" in params
  assert params["head"]["kernel"].shape[-1] == 10


def _conv(k, cin, cout):
  return k * k * cin * cout + cout


def _dense(din, dout):
  return din * dout + dout


def test_param_counts_exact():
  # simple_cnn, 28x28x1: 28-4=24 ->12 -> 12-4=8 -> 4; flat 4*4*16 = 256.
  expected = (_conv(5, 1, 6) + _conv(5, 6, 16) + _dense(256, 120)
              + _dense(120, 84) + _dense(84, 10))
  assert expected == 44_426
  assert count_params(_build("simple_cnn", MNIST)[1]) == expected
  # simple_cnn, 32x32x3: flat 5*5*16 = 400.
  expected = (_conv(5, 3, 6) + _conv(5, 6, 16) + _dense(400, 120)
              + _dense(120, 84) + _dense(84, 10))
  assert count_params(_build("simple_cnn", CIFAR)[1]) == expected == 62_006
  # cnn4 (PFLlib FedAvgCNN), 28x28x1: flat 1024; PFLlib figure 582,026.
  expected = _conv(5, 1, 32) + _conv(5, 32, 64) + _dense(1024, 512) + _dense(512, 10)
  assert count_params(_build("cnn4", MNIST)[1]) == expected == 582_026
  # cnn4, 32x32x3: flat 1600.
  expected = _conv(5, 3, 32) + _conv(5, 32, 64) + _dense(1600, 512) + _dense(512, 10)
  assert count_params(_build("cnn4", CIFAR)[1]) == expected == 878_538
  # mlp 2NN (200, 200), 28x28x1.
  expected = _dense(784, 200) + _dense(200, 200) + _dense(200, 10)
  assert count_params(_build("mlp", MNIST)[1]) == expected == 199_210
  # configurable hidden sizes
  _, p = _build("mlp", DIGITS, hidden=(32,))
  assert count_params(p) == _dense(64, 32) + _dense(32, 10)
  assert set(p) == {"fc1", "head"}


def _param_shapes(model, shape):
  """Parameter shapes via tracing only (no XLA compile; resnet init is slow on CPU)."""
  return jax.eval_shape(lambda: init_params(model, shape, jax.random.key(0)))


def test_resnet18_cifar_and_mnist():
  model, params = _build("resnet18", CIFAR)
  # Same as the BatchNorm CIFAR ResNet-18 (kuangliu/pytorch-cifar): GN has the
  # same scale/bias parameters, BN running stats are not parameters.
  assert count_params(params) == 11_173_962
  assert set(params) == {"conv1", "norm1", "head"} | {
      f"layer{i}_{j}" for i in range(1, 5) for j in range(2)}
  assert "shortcut_conv" in params["layer2_0"]
  assert "shortcut_conv" not in params["layer1_0"]
  y = model.apply({"params": params}, _batch(CIFAR, 2))
  assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
  # 28x28x1 inputs: shapes only (no second compile).
  model = get_model("resnet18", num_classes=10, input_shape=MNIST)
  shapes = _param_shapes(model, MNIST)
  assert count_params(shapes) == 11_173_962 - 2 * 3 * 3 * 64
  out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes,
                       jax.ShapeDtypeStruct((2, *MNIST), jnp.float32))
  assert out.shape == (2, 10)


def test_resnet18_width_and_groups():
  model = get_model("resnet18", num_classes=5, input_shape=DIGITS, width=0.0625)
  shapes = _param_shapes(model, DIGITS)
  assert shapes["conv1"]["kernel"].shape == (3, 3, 1, 4)
  assert shapes["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 32, 32)
  assert shapes["head"]["kernel"].shape == (32, 5)
  model = get_model("resnet18", num_classes=10, input_shape=DIGITS, num_groups=4)
  assert model.num_groups == 4
  _param_shapes(model, DIGITS)
  model = get_model("resnet18", num_classes=10, input_shape=DIGITS, num_groups=3)
  with pytest.raises(ValueError, match="num_groups"):
    _param_shapes(model, DIGITS)


def test_resnet18_vmap_traces():
  # Trace-only (a numeric vmapped resnet forward costs ~10 s of CPU compile):
  # apply is pure, so it vmaps over a client axis of params and data.
  model = get_model("resnet18", num_classes=10, input_shape=CIFAR)
  stacked = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct((3, *a.shape), a.dtype),
      _param_shapes(model, CIFAR))
  out = jax.eval_shape(jax.vmap(lambda p, x: model.apply({"params": p}, x)),
                       stacked, jax.ShapeDtypeStruct((3, 2, *CIFAR), jnp.float32))
  assert out.shape == (3, 2, 10)


@pytest.mark.parametrize("name,shape", [
    ("mlp", DIGITS), ("simple_cnn", MNIST), ("cnn4", MNIST),
])
def test_vmap_over_clients(name, shape):
  model, params = _build(name, shape)
  # 3 distinct clients without extra inits: scaled copies of one init.
  per_client = [jax.tree_util.tree_map(lambda a, c=c: a * (1.0 + 0.2 * c), params)
                for c in range(3)]
  stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_client)
  assert count_params(stacked) == 3 * count_params(params)
  x = _batch(shape, 3 * 2).reshape(3, 2, *shape)
  apply = lambda p, xb: model.apply({"params": p}, xb)
  out = jax.vmap(apply)(stacked, x)
  assert out.shape == (3, 2, 10)
  for c in range(3):
    np.testing.assert_allclose(out[c], apply(per_client[c], x[c]),
                               rtol=1e-4, atol=1e-5)
  assert not np.allclose(out[0], apply(per_client[1], x[0]))
  # shared batch, per-client params
  out2 = jax.vmap(apply, in_axes=(0, None))(stacked, x[0])
  np.testing.assert_allclose(out2[1], apply(per_client[1], x[0]),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("mlp", DIGITS), ("cnn4", MNIST)])
def test_sgd_step_reduces_loss(name, shape):
  model, params = _build(name, shape)
  # image-like inputs in [0, 1); small step so one SGD step must descend
  x = jax.random.uniform(jax.random.key(1), (8, *shape))
  y = jnp.arange(8) % 10

  def loss_fn(p):
    logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  opt = optax.sgd(0.01)
  state = opt.init(params)
  loss0, grads = jax.value_and_grad(loss_fn)(params)
  updates, state = opt.update(grads, state, params)
  loss1 = loss_fn(optax.apply_updates(params, updates))
  assert bool(jnp.isfinite(loss0)) and float(loss1) < float(loss0)


def test_unknown_model_name():
  with pytest.raises(ValueError) as e:
    get_model("vgg16", num_classes=10, input_shape=MNIST)
  for m in MODELS:
    assert m in str(e.value)


def test_input_too_small():
  with pytest.raises(ValueError) as e:
    get_model("simple_cnn", num_classes=10, input_shape=DIGITS)
  msg = str(e.value)
  assert "simple_cnn" in msg and "mlp" in msg and "resnet18" in msg
  assert "cnn4" not in msg.split("can:")[-1]
  with pytest.raises(ValueError, match="cnn4"):
    get_model("cnn4", num_classes=10, input_shape=DIGITS)
  assert supported_models(DIGITS) == ("mlp", "resnet18")
  assert supported_models(MNIST) == MODELS
  assert supported_models((15, 15, 1)) == ("mlp", "resnet18")
  assert supported_models((16, 16, 1)) == MODELS
  # smallest accepted VALID-conv input really works (16 -> 12 -> 6 -> 2 -> 1)
  model, params = _build("cnn4", (16, 16, 1))
  assert params["fc1"]["kernel"].shape == (64, 512)


def test_bad_shape_and_classes():
  with pytest.raises(ValueError, match="H, W, C"):
    get_model("mlp", num_classes=10, input_shape=(784,))
  with pytest.raises(ValueError, match="num_classes"):
    get_model("mlp", num_classes=0, input_shape=MNIST)


def test_init_params_variants():
  model, params = _build("mlp", DIGITS)
  again = init_params(model, DIGITS, jax.random.key(0))  # cached jit path
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
  # unhashable module field -> eager fallback, same values
  eager = init_params(get_model("mlp", num_classes=10, input_shape=DIGITS,
                                hidden=[200, 200]), DIGITS, jax.random.key(0))
  jax.tree_util.tree_map(np.testing.assert_allclose, params, eager)
  # per-client init under vmap
  keys = jax.random.split(jax.random.key(0), 3)
  stacked = jax.vmap(lambda k: init_params(model, DIGITS, k))(keys)
  assert stacked["head"]["kernel"].shape == (3, 200, 10)
  assert count_params(stacked) == 3 * count_params(params)


@pytest.mark.parametrize("shape", [(3, 24, 24, 5), (2, 10, 10, 4), (2, 7, 9, 3)])
def test_max_pool2_matches_flax_max_pool(shape):
  """The reshape+max pool of the CNNs equals nn.max_pool in value and (tie-free) gradient."""
  import flax.linen as nn
  from fedjax_gen.models.cnn import max_pool2

  x = jax.random.normal(jax.random.key(0), shape)
  ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  np.testing.assert_array_equal(max_pool2(x), ref(x))
  w = jax.random.normal(jax.random.key(1), ref(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * w))(x)
  np.testing.assert_allclose(grad(max_pool2), grad(ref), atol=1e-6)
