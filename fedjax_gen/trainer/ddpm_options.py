"""The options of a DDPM run (`task=ddpm`, family `ddpm.*`) and their checks."""

from __future__ import annotations

from fedjax_gen import data as data_lib
from fedjax_gen.diffusion import core
from fedjax_gen.diffusion.ddpm import DDPMSpec
from fedjax_gen.types import Option

OPTIONS = (  # a DDPM run's own keys (`task=ddpm`)
    Option("central", False, "true: one client holds all training data (a server with data)"),
    Option("unet_channels", "32,64,64", "channels per resolution level (H, W divisible by "
           "2**(n-1))"),
    Option("unet_res_blocks", 1, "residual blocks per level"),
    Option("diffusion_steps", 1000, "T of the noise schedule"),
    Option("noise_schedule", "linear", "linear | cosine"),
    Option("cond_drop_prob", 0.1, "label dropout for classifier-free guidance"),
    Option("ema_decay", 0.8, "per round: generator weights = EMA of the global model"),
    Option("sampler", "ddim", "ddim | ddpm", "sample"),
    Option("sample_steps", 50, "sampler steps", "sample"),
    Option("guidance_scale", 2.0, "the saved generator's, and the one `cas` is reported at",
           "sample"),
    Option("eval_guidance_scales", "", "e.g. \"1,2,4,8\": CAS and Frechet distance at each "
           "(guidance.png)", "sample"),
    Option("eval_samples_per_class", 100, "images per class judged", "sample"),
    Option("audit_examples", 500, "members and non-members in the membership audit of the "
           "denoising loss (each costs a UNet call per audited timestep)", "sample"),
    Option("sample_batch_size", 250, "images per compiled sampler call", "sample"),
    Option("classifier_epochs", 2, "the real-data classifier behind CAS and the Frechet "
           "distance", "sample"),
)


def _channels(d) -> tuple[int, ...]:
  try:
    channels = tuple(int(c) for c in str(d.unet_channels).split(","))
  except ValueError:
    raise ValueError(f"ddpm.unet_channels={d.unet_channels!r}: expected comma-separated "
                     "integers, e.g. 32,64,64.") from None
  if not channels or min(channels) < 1:
    raise ValueError(f"ddpm.unet_channels={d.unet_channels!r} must list positive integers.")
  return channels


def guidance_scales(d) -> list[float]:
  try:
    return [float(g) for g in str(d.eval_guidance_scales).split(",") if g.strip()]
  except ValueError:
    raise ValueError(f"ddpm.eval_guidance_scales={d.eval_guidance_scales!r}: expected "
                     "comma-separated numbers, e.g. 1,2,4,8.") from None


def check_options(config) -> DDPMSpec:
  """The cheap checks of a DDPM run's own keys; returns the model spec. A finished run may
  be re-evaluated with other "sample" keys (same `rounds`: no training step runs, the
  summary is rewritten)."""
  d = config.ddpm
  if config.algorithm != "fedavg":
    raise ValueError(f"A DDPM trains with algorithm=fedavg, got {config.algorithm!r}.")
  if not 0 <= d.cond_drop_prob < 1:
    raise ValueError(f"ddpm.cond_drop_prob must be in [0, 1), got {d.cond_drop_prob}.")
  if not 0 <= d.ema_decay < 1:
    raise ValueError(f"ddpm.ema_decay must be in [0, 1), got {d.ema_decay}.")
  for scale in (d.guidance_scale, *guidance_scales(d)):
    if scale < 0:
      raise ValueError(f"ddpm.guidance_scale and ddpm.eval_guidance_scales must be >= 0, "
                       f"got {scale}.")
  if d.sampler not in ("ddim", "ddpm"):
    raise ValueError(f"Unknown ddpm.sampler {d.sampler!r}; valid: ddim, ddpm.")
  if not 1 <= d.sample_steps <= d.diffusion_steps:
    raise ValueError(f"ddpm.sample_steps must be in [1, ddpm.diffusion_steps="
                     f"{d.diffusion_steps}], got {d.sample_steps}.")
  for key in ("eval_samples_per_class", "audit_examples", "sample_batch_size",
              "classifier_epochs",
              "unet_res_blocks"):
    if d[key] < 1:
      raise ValueError(f"ddpm.{key} must be >= 1, got {d[key]}.")
  if d.noise_schedule not in core.SCHEDULES:
    raise ValueError(f"Unknown ddpm.noise_schedule {d.noise_schedule!r}; valid: "
                     f"{', '.join(core.SCHEDULES)}.")
  num_classes = data_lib.DATASET_CLASSES[config.dataset]
  size = {"digits": (8, 8, 1)}.get(config.dataset)
  if config.dataset in ("cifar10", "cifar100"):
    size = (32, 32, 3)
  size = size or (28, 28, 1)
  return DDPMSpec(size, num_classes, _channels(d), d.unet_res_blocks,
                  d.diffusion_steps, d.noise_schedule)


