"""Privacy you can state: client-level differential privacy for algorithms whose upload is a
model update (`dp`: clip, average, noise, inside the jitted round), its (epsilon, delta) by
dp-accounting (`accounting`), and an audit of what a generator and a trained classifier leak
about their training data (`audit`: memorisation of generated images, loss-threshold
membership inference)."""

from fedjax_gen.privacy import accounting
from fedjax_gen.privacy.audit import (audit_classifier, audit_ddpm, audit_generated,
                                      audit_generator, classifier_losses, ddpm_losses,
                                      default_timesteps, membership_inference, memorisation,
                                      near_copies, nearest_distances)
from fedjax_gen.privacy.dp import clip, dp_aggregate

__all__ = [
    "accounting", "audit_classifier", "audit_ddpm", "audit_generated", "audit_generator",
    "classifier_losses", "clip", "ddpm_losses", "default_timesteps", "dp_aggregate",
    "membership_inference", "memorisation", "near_copies", "nearest_distances",
]
