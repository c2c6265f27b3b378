"""Adaptive allocation (shared/campaigns/allocation.py): Thompson shares checked against scipy's integration of the
Beta posteriors, the guards (holdout fixed, minimum sample, floor), and the inverse-propensity-weighted lift."""

from __future__ import annotations

import math
import random

import pytest
from scipy import integrate, stats

from shared.campaigns.allocation import (
    ArmCount,
    Cell,
    ipw_lift,
    ipw_rate,
    next_wave_shares,
    pooled_lift,
    probability_best,
    variant_shares,
)


def exact_probability_best(counts: list[ArmCount]) -> dict[str, float]:
    """P(arm best) = integral of its posterior density times the others' CDFs (scipy quadrature)."""
    posts = {c.arm: stats.beta(1 + c.converted, 1 + c.assigned - c.converted) for c in counts}
    out = {}
    for arm, post in posts.items():
        others = [p for a, p in posts.items() if a != arm]
        out[arm] = integrate.quad(lambda x, post=post, others=others: post.pdf(x) * math.prod(o.cdf(x) for o in others),
                                  0, 1, limit=200, points=[post.mean()])[0]  # fmt: skip
    return out


@pytest.mark.parametrize(
    "counts",
    [
        [ArmCount("a", 400, 52), ArmCount("b", 400, 40)],
        [ArmCount("a", 300, 30), ArmCount("b", 250, 31), ArmCount("c", 500, 49)],
        [ArmCount("a", 50, 5), ArmCount("b", 60, 6), ArmCount("c", 40, 3)],
    ],
)
def test_probability_best_matches_the_integral_of_the_posteriors(counts: list[ArmCount]) -> None:
    # GIVEN arms' counts / WHEN the probability of being best is estimated from 40,000 seeded draws
    draws = 40_000
    estimated = probability_best(counts, draws=draws, rng=random.Random(7))
    # THEN it agrees with scipy's integral within 4 Monte Carlo standard errors, and sums to 1
    for arm, p in exact_probability_best(counts).items():
        assert abs(estimated[arm] - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-9, (arm, estimated[arm], p)
    assert sum(estimated.values()) == pytest.approx(1)


def test_shares_stay_even_until_every_variant_has_the_minimum_sample() -> None:
    rng = random.Random(1)
    counts = [ArmCount("a", 1000, 300), ArmCount("b", 199, 5)]
    assert variant_shares(counts, min_sample=200, rng=rng) == {"a": 0.5, "b": 0.5}


def test_a_clearly_better_variant_takes_all_but_the_floor_of_the_others() -> None:
    # GIVEN one variant far ahead of two others
    counts = [ArmCount("a", 2000, 400), ArmCount("b", 2000, 200), ArmCount("c", 2000, 210)]
    # WHEN the variants' shares are computed with a 5% floor
    shares = variant_shares(counts, floor=0.05, min_sample=100, rng=random.Random(2))
    # THEN the others keep exactly the floor, the leader the rest
    assert shares["b"] == pytest.approx(0.05) and shares["c"] == pytest.approx(0.05)
    assert shares["a"] == pytest.approx(0.90) and sum(shares.values()) == pytest.approx(1)


def test_next_wave_keeps_the_holdout_share_in_every_level_and_is_reproducible() -> None:
    # GIVEN two levels' cumulative counts, one where b leads and one still under the minimum sample
    cumulative = {
        "high": [ArmCount("holdout", 500, 50), ArmCount("a", 700, 70), ArmCount("b", 700, 120)],
        "low": [ArmCount("holdout", 50, 5), ArmCount("a", 60, 6), ArmCount("b", 60, 9)],
    }
    # WHEN the next wave's shares are computed twice with the same seed
    shares = next_wave_shares(cumulative, holdout=0.2, seed="spring|2", min_sample=100)
    again = next_wave_shares(cumulative, holdout=0.2, seed="spring|2", min_sample=100)
    # THEN the holdout keeps 20% everywhere, shares add up to 1, b gains where it leads, and nothing is random
    assert shares == again
    for level in shares.values():
        assert level["holdout"] == 0.2 and sum(level.values()) == pytest.approx(1)
    assert shares["high"]["b"] > 0.7 and shares["low"] == {"holdout": 0.2, "a": 0.4, "b": 0.4}


def test_ipw_weights_each_wave_by_its_size_not_by_how_many_the_arm_got() -> None:
    # GIVEN two waves of 1,000: in the first a got 100 members (10 converted), in the second 600 (120 converted);
    # the holdout 200 in each (20 and 40 converted)
    cells = [
        Cell(1000, {"a": ArmCount("a", 100, 10), "holdout": ArmCount("holdout", 200, 20)}),
        Cell(1000, {"a": ArmCount("a", 600, 120), "holdout": ArmCount("holdout", 200, 40)}),
    ]
    # WHEN the rates and the lift are estimated
    a, h = ipw_rate(cells, "a"), ipw_rate(cells, "holdout")
    # THEN each wave's rate counts half (0.10 and 0.20 -> 0.15), where pooling would give 130/700 = 0.186
    assert a.rate == pytest.approx(0.15) and h.rate == pytest.approx(0.15)
    assert a.se == pytest.approx(math.sqrt(0.25 * 0.1 * 0.9 / 100 + 0.25 * 0.2 * 0.8 / 600))
    lift = ipw_lift(cells, "a")
    assert lift.lift == pytest.approx(0.0) and lift.low < 0 < lift.high
    assert pooled_lift(cells, "a") == pytest.approx(130 / 700 - 60 / 400)


def test_an_arm_without_members_in_a_cell_has_no_estimate() -> None:
    cells = [Cell(100, {"holdout": ArmCount("holdout", 20, 2)})]
    with pytest.raises(ValueError, match="not identified"):
        ipw_rate(cells, "a")
