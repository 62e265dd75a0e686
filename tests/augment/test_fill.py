"""Gen-FedSD's fill rules on histograms small enough to compute by hand."""

import numpy as np
import pytest

from fedjax_gen.augment import FILL_RULES, fill_counts

COUNTS = np.array([[5, 1, 0],
                   [2, 2, 2],
                   [0, 3, 3]])


def test_max_fills_every_class_up_to_the_largest():
  np.testing.assert_array_equal(fill_counts(COUNTS), [[0, 4, 5], [0, 0, 0], [3, 0, 0]])
  np.testing.assert_array_equal(fill_counts(COUNTS, "max"), fill_counts(COUNTS))


def test_budget_water_fills_the_rarest_classes_first():
  # (5,1,0) + 4: level 2 costs 3, the 4th image goes to the lowest class at level 2 (1).
  # (2,2,2) + 4: level 3 costs 3, the 4th goes to class 0. (0,3,3) + 4: level 3 costs 3,
  # the 4th goes to the lowest class at level 3 (0).
  out = fill_counts(COUNTS, "budget", budget=4)
  np.testing.assert_array_equal(out, [[0, 2, 2], [2, 1, 1], [4, 0, 0]])
  assert (out.sum(axis=1) == 4).all()
  np.testing.assert_array_equal(fill_counts(COUNTS, "budget", budget=0), np.zeros((3, 3)))
  # A budget larger than the gaps: every class rises above the largest, evenly
  # ((5,1,0) + 13: level 6 costs 12, the 13th image to class 0 -> (7, 6, 6)).
  np.testing.assert_array_equal(fill_counts([[5, 1, 0]], "budget", budget=13),
                                [[2, 5, 6]])


def test_budget_equals_one_image_at_a_time():
  rng = np.random.default_rng(0)
  counts = rng.integers(0, 20, (6, 5))
  budget = 17
  for row, got in zip(counts, fill_counts(counts, "budget", budget=budget)):
    level, gen = row.copy(), np.zeros_like(row)
    for _ in range(budget):
      c = int(np.argmin(level))  # fewest examples, ties to the lowest index
      level[c] += 1
      gen[c] += 1
    np.testing.assert_array_equal(got, gen)


def test_global_targets_the_population_distribution():
  # Global counts (7, 6, 5). Client 0 (5,1,0): S*p = 5/7 * (7,6,5) = (5, 4.29, 3.57)
  # -> targets (5, 4, 4). Client 1 (2,2,2): max ratio 2/5 -> (2.8, 2.4, 2) -> (3, 2, 2).
  # Client 2 (0,3,3): ratio 3/5 -> (4.2, 3.6, 3) -> (4, 4, 3).
  np.testing.assert_array_equal(fill_counts(COUNTS, "global"),
                                [[0, 3, 4], [1, 0, 0], [4, 1, 0]])
  # Explicit global counts; a uniform global distribution is the max rule.
  np.testing.assert_array_equal(fill_counts(COUNTS, "global", global_counts=[1, 1, 1]),
                                fill_counts(COUNTS, "max"))
  np.testing.assert_array_equal(fill_counts([[4, 1]], "global", global_counts=[1, 3]),
                                [[0, 11]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="median"), "Unknown fill rule 'median'; valid rules: max, budget, global"),
    (dict(rule="budget", budget=-1), "budget must be a non-negative integer"),
    (dict(rule="max", budget=-5), "budget must be a non-negative integer"),
    (dict(rule="global", global_counts=[1, 1]), "one entry per class"),
    (dict(rule="global", global_counts=[0, 1, 1]), "Client 0 holds class 0"),
])
def test_bad_input(kwargs, message):
  with pytest.raises(ValueError, match=message):
    fill_counts(COUNTS, **kwargs)
  assert set(FILL_RULES) == {"max", "budget", "global"}
