"""How a run executes, decided once: the convolution a model's layers use and the engine's
`ExecutionPlan`, for this backend.

On accelerators: XLA's native convolution, all sampled clients vmapped in one fused
(jitted, scanned) round. On XLA:CPU, native convolutions inside a scanned or vmapped loop
run several times slower than unrolled (BENCHMARKS.md, "Findings on this CPU"), so:
narrow convolutions (a patch kh*kw*cin of at most `IM2COL_MAX_PATCH`, or a window of at most
`IM2COL_MAX_WINDOW` taps: ResNet-18's 3x3) take the im2col form (`models.conv`) and keep the
fused round, one client per chunk; wide ones (CNN4's 5x5x32) stay native and run in the
host loop of unrolled step blocks. The DDPM's UNet keeps the native convolution everywhere
(measured slower as im2col on CPU: 592 vs 313 ms a training step).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_gen.engine import ExecutionPlan
from fedjax_gen.models.conv import conv_windows
from fedjax_gen.types import Option

CONV_IMPLS = ("auto", "xla", "im2col")
IM2COL_MAX_PATCH = 512  # "auto" on CPU: im2col up to this kh*kw*cin
IM2COL_MAX_WINDOW = 9   # ... or up to this kh*kw whatever cin (3x3 windows)
HOST_LOOP_STEPS = 10    # steps per jitted block of the host loop, when it is chosen

OPTIONS = (  # how a run executes (`run.*`): none changes what it computes beyond float noise
    Option("conv_impl", "auto", "auto (this module's rule) | xla | im2col", "free"),
    Option("chunk_size", 0, "clients per vmapped computation; 0 = automatic", "free"),
    Option("steps_per_call", -1, "-1 automatic; 0 one jitted round; k host loop of k-step "
           "blocks", "free"),
    Option("num_devices", 1, "shard the client axis over this many devices (0 = all)"),
    Option("eval_batch_size", 1000, "examples per evaluation batch", "free"),
)


def check_options(c) -> None:
  r = c.run
  if r.conv_impl not in CONV_IMPLS:
    raise ValueError(f"Unknown run.conv_impl {r.conv_impl!r}; valid names: "
                     f"{', '.join(CONV_IMPLS)}.")
  for key in ("chunk_size", "num_devices"):
    if r[key] < 0:
      raise ValueError(f"run.{key} must be >= 0, got {r[key]}.")
  if r.steps_per_call < -1:
    raise ValueError(f"run.steps_per_call must be -1 (auto), 0 or positive, got "
                     f"{r.steps_per_call}.")
  if not r.eval_batch_size > 0:
    raise ValueError(f"run.eval_batch_size must be > 0, got {r.eval_batch_size}.")


def resolve_conv_impl(conv_impl: str, windows=(), *, scanned: bool = False,
                      backend: str | None = None) -> str:
  """"auto" -> "im2col" on CPU when every convolution in `windows` ((kh*kw, cin) each, as
  `models.conv.conv_windows` lists them; empty: unknown) is narrow, or whatever their size
  if `scanned` (the steps are forced into a scanned loop); else "xla". Explicit choices
  stay."""
  if conv_impl != "auto":
    return conv_impl
  cpu = (backend or jax.default_backend()) == "cpu"
  narrow = all(taps * cin <= IM2COL_MAX_PATCH or taps <= IM2COL_MAX_WINDOW
               for taps, cin in windows)
  return "im2col" if cpu and (scanned or narrow) else "xla"


def auto_plan(clients_per_round: int, *, native_conv: bool,
              backend: str | None = None) -> ExecutionPlan:
  """The plan measurements favour: on CPU one client per chunk, in the host loop when the
  model runs native convolutions; elsewhere all clients of a round in one fused chunk."""
  if (backend or jax.default_backend()) == "cpu":
    return ExecutionPlan(chunk_size=1, steps_per_call=HOST_LOOP_STEPS if native_conv else 0)
  return ExecutionPlan(chunk_size=clients_per_round, steps_per_call=0)


def plan_for(clients_per_round: int, *, native_conv: bool, chunk_size: int = 0,
             steps_per_call: int = -1) -> ExecutionPlan:
  """`auto_plan`, with a config's overrides: `chunk_size` (0: automatic) and
  `steps_per_call` (-1: automatic; 0 fused; k host loop)."""
  auto = auto_plan(clients_per_round, native_conv=native_conv)
  return ExecutionPlan(chunk_size or auto.chunk_size,
                       auto.steps_per_call if steps_per_call < 0 else steps_per_call)


class Choice(NamedTuple):
  model: nn.Module
  conv_impl: str        # "xla" | "im2col" | "none" (no convolution) | "custom" (user model)
  plan: ExecutionPlan


def choose(build: Callable[[str], nn.Module] | nn.Module, example_shape, *,
           clients_per_round: int, conv_impl: str = "auto", chunk_size: int = 0,
           steps_per_call: int = -1) -> Choice:
  """The model, its convolution and the plan, tracing the model once.

  `build(conv_impl)` makes a built-in model with "xla" or "im2col" convolutions; a ready
  `nn.Module` (a user's) is taken as it is ("custom"). `chunk_size` and `steps_per_call`
  override the plan (`plan_for`)."""
  custom = isinstance(build, nn.Module)
  probe = build if custom else build("xla")
  x = jnp.zeros((1, *example_shape), jnp.float32)
  params = jax.eval_shape(lambda: probe.init(jax.random.key(0), x))["params"]
  windows = conv_windows(lambda p, x: probe.apply({"params": p}, x), params, example_shape)
  if custom:
    model, impl, native = probe, "custom", bool(windows)
  elif not windows:
    model, impl, native = probe, "none", False
  else:
    impl = resolve_conv_impl(conv_impl, windows, scanned=steps_per_call == 0)
    model, native = (probe if impl == "xla" else build(impl)), impl == "xla"
  return Choice(model, impl, plan_for(clients_per_round, native_conv=native,
                                      chunk_size=chunk_size, steps_per_call=steps_per_call))


def ddpm_conv_impl(conv_impl: str) -> str:
  """The UNet's convolution: "auto" is XLA's native one on every backend."""
  return "xla" if conv_impl == "auto" else conv_impl
