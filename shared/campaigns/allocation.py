"""Adaptive allocation for campaigns sent in waves: the next wave's variant shares, and lifts that stay valid.

**Shares (Thompson sampling).** Per activity level, each variant's conversion rate has a Beta(1 + converted,
1 + assigned - converted) posterior (uniform prior, intention to treat: every assigned member counts). A variant's
share of the next wave is the posterior probability that it has the highest rate, estimated from ``draws`` joint
draws of a seeded generator: the batch form of Thompson sampling (probability matching), which gives each variant
the share of contacts that one Thompson draw per contact would give it, without a draw per contact. Ranking by rate
is ranking by lift over the holdout: the holdout is the same for every variant of a level. Guards:

- the **holdout keeps its configured share** in every wave (it is the comparison, never a bandit arm);
- a level stays at the **even split until every variant has ``min_sample``** assigned members there (the first
  waves' noise would otherwise decide);
- every variant keeps at least ``floor`` of the variants' part (default 5%), so a variant that started badly is
  still measured and its estimate keeps a defined weight (below).

**Lift under adaptive shares (inverse-propensity weighting).** Pooling a variant's members over waves is biased when
its share moved with its own early results. Each wave is a randomized experiment with recorded shares, so the
estimate of an arm's rate weights each (wave, level) cell by its size: ``sum over cells of N_cell * x/n`` divided by
``N``, where ``n`` of the cell's ``N`` members were assigned the arm and ``x`` of them converted; ``N_cell * x/n`` is
``x / p`` with ``p = n / N_cell``, the recorded share: inverse-propensity weighting. Its variance is the sum of the
cells' ``(N_cell/N)^2 * r(1-r)/n``. Checked against a simulator with known truth (bench/learning).

Everything here works on a few counts per (wave, level, arm), as the report's SQL returns them; never per contact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from shared.campaigns.campaign import HOLDOUT
from shared.campaigns.stats import Z_95

DRAWS = 20_000
FLOOR = 0.05
MIN_SAMPLE = 200


@dataclass(frozen=True)
class ArmCount:
    """One arm's members and conversions in one cell (a level, possibly of one wave)."""

    arm: str
    assigned: int
    converted: int


def probability_best(counts: list[ArmCount], *, draws: int = DRAWS, rng: random.Random) -> dict[str, float]:
    """P(arm has the highest conversion rate) under independent Beta(1 + x, 1 + n - x) posteriors."""
    wins = dict.fromkeys((c.arm for c in counts), 0)
    for _ in range(draws):
        best = max(counts, key=lambda c: rng.betavariate(1 + c.converted, 1 + c.assigned - c.converted))
        wins[best.arm] += 1
    return {arm: n / draws for arm, n in wins.items()}


def variant_shares(
    counts: list[ArmCount], *, floor: float = FLOOR, min_sample: int = MIN_SAMPLE, draws: int = DRAWS,
    rng: random.Random,
) -> dict[str, float]:  # fmt: skip
    """The variants' split of the variant part (adding up to 1) for one level's cumulative counts (no holdout)."""
    if not counts:
        return {}
    k = len(counts)
    if k == 1 or min(c.assigned for c in counts) < min_sample:
        return {c.arm: 1 / k for c in counts}
    if floor * k > 1:
        raise ValueError(f"a floor of {floor:g} for {k} variants adds up to more than the whole")
    best = probability_best(counts, draws=draws, rng=rng)
    # Each variant gets the floor, and the rest of the variant part goes by probability of being best.
    return {arm: floor + (1 - floor * k) * p for arm, p in best.items()}


def next_wave_shares(
    cumulative: dict[str, list[ArmCount]], *, holdout: float, seed: str, floor: float = FLOOR,
    min_sample: int = MIN_SAMPLE, draws: int = DRAWS,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per level, every arm's share of the next wave (the holdout's fixed, the variants' by Thompson sampling),
    from each level's cumulative counts over the waves so far (holdout rows are ignored). ``seed``: the campaign and
    wave, so the same counts always give the same shares."""
    out: dict[str, dict[str, float]] = {}
    for level, counts in sorted(cumulative.items()):
        rng = random.Random(f"{seed}|{level}")
        variants = [c for c in counts if c.arm != HOLDOUT]
        split = variant_shares(variants, floor=floor, min_sample=min_sample, draws=draws, rng=rng)
        shares = {HOLDOUT: holdout} if holdout > 0 else {}
        shares |= {arm: (1 - holdout) * s for arm, s in split.items()}
        out[level] = shares
    return out


@dataclass(frozen=True)
class Cell:
    """One (wave, level) cell: its size and each arm's members and conversions in it."""

    size: int
    arms: dict[str, ArmCount]


@dataclass(frozen=True)
class Estimate:
    rate: float
    se: float


@dataclass(frozen=True)
class Lift:
    arm: str
    lift: float
    se: float
    low: float
    high: float


def ipw_rate(cells: list[Cell], arm: str) -> Estimate:
    """The arm's conversion rate over every cell's members, each cell weighted by its size (module docstring)."""
    total = sum(c.size for c in cells)
    rate = 0.0
    variance = 0.0
    for cell in cells:
        count = cell.arms.get(arm)
        if count is None or count.assigned == 0:
            if cell.size:
                raise ValueError(f"arm {arm!r} has no member in a cell of {cell.size}: its rate is not identified")
            continue
        r = count.converted / count.assigned
        weight = cell.size / total
        rate += weight * r
        variance += weight * weight * r * (1 - r) / count.assigned
    return Estimate(rate, math.sqrt(variance))


def ipw_lift(cells: list[Cell], arm: str) -> Lift:
    """The arm's lift over the holdout with a 95% interval (the two estimates are independent: disjoint members)."""
    variant, control = ipw_rate(cells, arm), ipw_rate(cells, HOLDOUT)
    lift = variant.rate - control.rate
    se = math.hypot(variant.se, control.se)
    return Lift(arm, lift, se, lift - Z_95 * se, lift + Z_95 * se)


def pooled_lift(cells: list[Cell], arm: str) -> float:
    """The naive lift: every wave's members pooled, as if the shares had never moved (biased under adaptive shares;
    kept for the comparison in bench/learning)."""

    def rate(name: str) -> float:
        n = sum(c.arms[name].assigned for c in cells if name in c.arms)
        x = sum(c.arms[name].converted for c in cells if name in c.arms)
        return x / n if n else float("nan")

    return rate(arm) - rate(HOLDOUT)
