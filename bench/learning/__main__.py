"""``python -m bench.learning [--runs N] [--waves W] [--wave-size M] [--json]``: adaptive allocation
(shared/campaigns/allocation.py) against an even split, on a simulator with known truth.

The truth is the campaign simulator's (infra/local/simulate.py: activity levels and their shares, each level's base
conversion rate, and variants ``a`` (+3 points everywhere), ``b`` (no effect) and ``c`` (+8 points for high-activity
contacts only), holdout 25%). A campaign goes out in ``W`` waves of ``M`` contacts. In every wave each level's
contacts are split by the wave's shares exactly (largest remainder, as the stratified launch does) and each member
converts with its level's base rate plus its arm's true effect (a binomial draw per arm and level). Two policies see
the same waves (same contacts per level; their own conversions):

- **even**: the configured split in every wave;
- **adaptive**: after each wave, ``next_wave_shares`` on each level's cumulative counts (Thompson sampling, 5% floor,
  minimum sample 200, holdout fixed).

Measured over ``N`` seeded runs:

- **regret**: conversions lost against sending every variant-arm member its level's best variant (holdout members are
  the same in both policies and excluded); ratio adaptive/even of the mean cumulative regret (target <= 0.5);
- **lift of the winning variant** (``a``, the best over the whole audience: +3 points) after the adaptive run, by
  inverse-propensity weighting (``ipw_lift``) and, for contrast, by pooling the waves: mean error over the runs
  against the truth, the standard error of that mean, the mean reported standard error against the spread of the
  estimates, and the 95% intervals' coverage.

The last line is ``ratio regret adaptive/even = R``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from typing import Any

import numpy as np

from infra.local.simulate import BASE, EFFECT, HOLDOUT, LEVELS
from shared.campaigns.allocation import ArmCount, Cell, ipw_lift, next_wave_shares, pooled_lift
from shared.campaigns.campaign import HOLDOUT as HOLDOUT_ARM

VARIANTS = tuple(EFFECT)
WINNER = "a"


def true_rate(level: str, arm: str) -> float:
    return BASE[level] + (0.0 if arm == HOLDOUT_ARM else EFFECT[arm][level])


def true_lift(arm: str) -> float:
    return sum(share * EFFECT[arm][level] for level, share in LEVELS.items())


def split(n: int, shares: dict[str, float]) -> dict[str, int]:
    """``n`` members by ``shares`` exactly (largest remainder), as the stratified launch assigns them."""
    exact = {arm: n * s for arm, s in shares.items()}
    counts = {arm: int(v) for arm, v in exact.items()}
    for arm in sorted(exact, key=lambda a: (-(exact[a] - counts[a]), a))[: n - sum(counts.values())]:
        counts[arm] += 1
    return counts


def level_sizes(m: int) -> dict[str, int]:
    return split(m, LEVELS)


def run_policy(adaptive: bool, waves: int, wave_size: int, rng: np.random.Generator, seed: str,
               draws: int) -> dict[str, Any]:  # fmt: skip
    even = {HOLDOUT_ARM: HOLDOUT} | {v: (1 - HOLDOUT) / len(VARIANTS) for v in VARIANTS}
    cumulative: dict[str, dict[str, list[int]]] = {level: {arm: [0, 0] for arm in even} for level in LEVELS}
    cells: list[Cell] = []
    regret = 0.0
    history: list[dict[str, dict[str, float]]] = []
    for wave in range(waves):
        if adaptive and wave:
            counts = {level: [ArmCount(arm, n, x) for arm, (n, x) in arms.items()] for level, arms in cumulative.items()}
            shares = next_wave_shares(counts, holdout=HOLDOUT, seed=f"{seed}|{wave}", draws=draws)
        else:
            shares = dict.fromkeys(LEVELS, even)
        history.append(shares)
        for level, size in level_sizes(wave_size).items():
            assigned = split(size, shares[level])
            best = max(true_rate(level, v) for v in VARIANTS)
            arms = {}
            for arm, n in assigned.items():
                x = int(rng.binomial(n, true_rate(level, arm))) if n else 0
                cumulative[level][arm][0] += n
                cumulative[level][arm][1] += x
                arms[arm] = ArmCount(arm, n, x)
                if arm != HOLDOUT_ARM:
                    regret += n * (best - true_rate(level, arm))
            cells.append(Cell(size, arms))
    return {"regret": regret, "cells": cells, "shares": history}


def measure(runs: int, waves: int, wave_size: int, draws: int, seed: str = "learning-1") -> dict[str, Any]:
    regrets: dict[str, list[float]] = {"even": [], "adaptive": []}
    ipw_errors: list[float] = []
    ipw_ses: list[float] = []
    covered = 0
    pooled_errors: list[float] = []
    last_shares: list[float] = []
    truth = true_lift(WINNER)
    started = time.monotonic()
    for r in range(runs):
        for policy in ("even", "adaptive"):
            rng = np.random.default_rng(random.Random(f"{seed}|{r}|{policy}").getrandbits(64))
            out = run_policy(policy == "adaptive", waves, wave_size, rng, f"{seed}|{r}", draws)
            regrets[policy].append(out["regret"])
            if policy == "adaptive":
                lift = ipw_lift(out["cells"], WINNER)
                ipw_errors.append(lift.lift - truth)
                ipw_ses.append(lift.se)
                covered += lift.low <= truth <= lift.high
                pooled_errors.append(pooled_lift(out["cells"], WINNER) - truth)
                last_shares.append(out["shares"][-1]["high"]["c"])
    mean_even, mean_adaptive = statistics.fmean(regrets["even"]), statistics.fmean(regrets["adaptive"])
    sem = statistics.stdev(ipw_errors) / math.sqrt(runs) if runs > 1 else float("nan")
    pooled_sem = statistics.stdev(pooled_errors) / math.sqrt(runs) if runs > 1 else float("nan")
    return {
        "runs": runs, "waves": waves, "wave_size": wave_size, "draws": draws, "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "regret_even": round(mean_even, 1), "regret_adaptive": round(mean_adaptive, 1),
        "ratio_regret_adaptive_to_even": round(mean_adaptive / mean_even, 3),
        "winner": WINNER, "true_lift": truth,
        "ipw_mean_error": ipw_errors and statistics.fmean(ipw_errors), "ipw_sem": sem,
        "ipw_mean_reported_se": statistics.fmean(ipw_ses), "ipw_sd_of_estimates": statistics.stdev(ipw_errors),
        "ipw_coverage_95": covered / runs,
        "pooled_mean_error": statistics.fmean(pooled_errors), "pooled_sem": pooled_sem,
        "high_level_share_of_c_in_last_wave": statistics.fmean(last_shares),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--wave-size", type=int, default=4000)
    parser.add_argument("--draws", type=int, default=5000, help="posterior draws per level and wave")
    parser.add_argument("--seed", default="learning-1")
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args()
    m = measure(args.runs, args.waves, args.wave_size, args.draws, args.seed)
    if args.as_json:
        print(json.dumps(m, indent=2))
    else:
        print(f"{m['runs']} runs x {m['waves']} waves x {m['wave_size']} contacts ({m['seconds']} s)")
        print(f"regret (conversions lost vs each level's best variant): even {m['regret_even']}, "
              f"adaptive {m['regret_adaptive']}")  # fmt: skip
        print(f"lift of {m['winner']} (true {m['true_lift']:.4f}) after the adaptive runs:")
        print(f"  IPW:    mean error {m['ipw_mean_error']:+.5f} (standard error of the mean {m['ipw_sem']:.5f}); "
              f"reported se {m['ipw_mean_reported_se']:.5f} vs spread {m['ipw_sd_of_estimates']:.5f}; "
              f"95% coverage {m['ipw_coverage_95']:.3f}")  # fmt: skip
        print(f"  pooled: mean error {m['pooled_mean_error']:+.5f} (standard error of the mean {m['pooled_sem']:.5f})")
        print(f"share of c among high-activity contacts in the last wave: {m['high_level_share_of_c_in_last_wave']:.3f}")
    print(f"ratio regret adaptive/even = {m['ratio_regret_adaptive_to_even']}")


if __name__ == "__main__":
    main()
