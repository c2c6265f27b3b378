"""bench/learning in a reduced form (the full run is the command; BENCHMARKS.md): on the simulator's truth, adaptive
allocation loses fewer conversions than an even split, and moves high-activity contacts toward the variant that
works for them."""

from __future__ import annotations

from bench.learning.__main__ import measure


def test_adaptive_allocation_beats_an_even_split_on_the_simulator() -> None:
    m = measure(runs=4, waves=6, wave_size=2000, draws=1000, seed="ci")
    assert m["ratio_regret_adaptive_to_even"] < 0.8
    # c works for high-activity contacts only (+8 points, the others a +3): the last wave gives it most of them
    assert m["high_level_share_of_c_in_last_wave"] > 0.4


def test_sends_to_tell_two_send_hours_apart_match_statsmodels() -> None:
    import math

    from statsmodels.stats.power import zt_ind_solve_power

    from bench.learning.best_time import sends_to_tell_apart

    base, a, b = 0.03, 0.0311, 0.0320
    p = base + (a + b) / 2
    reference = zt_ind_solve_power(effect_size=(b - a) / math.sqrt(p * (1 - p)), alpha=0.05, power=0.8)
    assert math.isclose(sends_to_tell_apart(base, a, b), reference, rel_tol=1e-3)
    assert sends_to_tell_apart(base, a, a) == math.inf


def test_best_time_captures_most_of_the_oracles_gain_and_avoids_the_trap() -> None:
    """bench.learning.best_time reduced to one run of 1,500 contacts (the command runs 5 of 3,000)."""
    from bench.learning.best_time import measure as measure_best_time

    m = measure_best_time(1500, runs=1, first_seed=10)
    assert m["history"]["model"]["mean"] >= 0.6
    assert m["new"]["model"]["mean"] >= 0.4
    assert m["no_history_vs_fixed"]["ratio_min"] >= 0.95
    # trap contacts: the model gains on them (a fixed evening hour loses), and their buy-anyway hour is not preferred
    assert m["trap"]["model"]["mean"] > 0.3 > 0 > m["trap"]["fixed"]["mean"]
    assert m["trap"]["peak_chosen"] <= m["trap"]["peak_random"]
