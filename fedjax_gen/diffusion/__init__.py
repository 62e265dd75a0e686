"""Diffusion models: the shared core (schedules, losses, samplers, inversion) and generators."""
