"""(epsilon, delta) of a DP run, by Google's `dp-accounting` (its RDP accountant).

The engine samples each round's cohort as `cohort` distinct clients out of `population`,
uniformly (a fixed-size sample without replacement), so the event is dp-accounting's
`SampledWithoutReplacementDpEvent` (Wang, Balle, Kasiviswanathan, "Subsampled Renyi
Differential Privacy and Analytical Moments Accountant", AISTATS 2019) under the
replace-one neighbouring relation: two populations differ in one client's data. Swapping
one clipped upload for another moves the sum by up to 2 * clip_norm, so the Gaussian's
noise multiplier relative to that sensitivity is half the configured one.
"""

from __future__ import annotations

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

SAMPLING = "fixed_size"
ACCOUNTANT = "rdp"
NEIGHBOURS = "replace_one"


def event(noise_multiplier: float, population: int, cohort: int,
          rounds: int) -> dp_event.DpEvent:
  """`rounds` rounds of the engine's sampling and DP-FedAvg's Gaussian noise."""
  gaussian = dp_event.GaussianDpEvent(noise_multiplier / 2)  # sensitivity 2 * clip_norm
  return dp_event.SelfComposedDpEvent(
      dp_event.SampledWithoutReplacementDpEvent(population, cohort, gaussian), rounds)


def _accountant() -> RdpAccountant:
  return RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)


def epsilon(noise_multiplier: float, population: int, cohort: int, rounds: int,
            delta: float) -> float:
  """Epsilon spent after `rounds` rounds (inf without noise, 0 after no round)."""
  if rounds == 0:
    return 0.0
  if noise_multiplier == 0:
    return float("inf")
  return float(_accountant().compose(
      event(noise_multiplier, population, cohort, rounds)).get_epsilon(delta))


class Ledger:
  """Epsilon after each round of one run, cheaply: the RDP of one round is computed once
  (dp-accounting takes about 0.5 s per sampled-without-replacement event) and scaled by the
  number of rounds, as RDP composes additively; `epsilon` is the same figure, recomputed."""

  def __init__(self, noise_multiplier: float, population: int, cohort: int, delta: float):
    self.noise_multiplier, self.delta = noise_multiplier, delta
    if noise_multiplier > 0:
      one = _accountant().compose(event(noise_multiplier, population, cohort, 1))
      self._orders, self._rdp = one._orders, one._rdp  # no public getter for these

  def epsilon(self, rounds: int) -> float:
    if rounds == 0:
      return 0.0
    if self.noise_multiplier == 0:
      return float("inf")
    return float(compute_epsilon(self._orders, rounds * self._rdp, self.delta)[0])


def calibrate(target_epsilon: float, population: int, cohort: int, rounds: int,
              delta: float, *, max_noise: float = 1e3) -> float:
  """The smallest noise multiplier whose `rounds` rounds spend at most `target_epsilon`
  (to within 1e-6 in the multiplier). ValueError when even `max_noise` does not reach it."""
  reached = epsilon(max_noise, population, cohort, rounds, delta)
  if reached > target_epsilon:
    raise ValueError(
        f"dp.target_epsilon={target_epsilon:g} is out of reach for {rounds} rounds of "
        f"{cohort} of {population} clients: even noise_multiplier={max_noise:g} spends "
        f"epsilon={reached:.3g}. Raise dp.target_epsilon or dp.delta, or lower rounds or "
        "clients_per_round.")
  return float(dp_accounting.calibrate_dp_mechanism(
      _accountant, lambda z: event(z, population, cohort, rounds), target_epsilon, delta,
      bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, max_noise)))


def summary(noise_multiplier: float, clip_norm: float, population: int, cohort: int,
            rounds: int, delta: float) -> dict:
  """The `privacy` entry of a run's summary: enough to recompute epsilon with
  dp-accounting (`event(...)` under an RDP accountant, replace-one neighbours)."""
  return {"epsilon": epsilon(noise_multiplier, population, cohort, rounds, delta),
          "delta": delta, "noise_multiplier": noise_multiplier, "clip_norm": clip_norm,
          "sampling": SAMPLING, "neighbouring": NEIGHBOURS, "population": population,
          "cohort": cohort, "rounds": rounds, "accountant": ACCOUNTANT}
