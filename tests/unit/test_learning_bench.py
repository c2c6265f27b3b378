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


def test_best_time_in_a_world_it_was_not_written_beside_still_learns() -> None:
    """The held-out truth (longer delivery lags, wider evenings, more traps) in one run of 1,500 contacts: learning
    the look-ahead from taps keeps history well above the fixed hour, and trap contacts whose buy-anyway peak is not
    their best slot are sent there less often than at random (the prior look-ahead alone sent them there more)."""
    from bench.learning.best_time import measure as measure_best_time

    learned = measure_best_time(1500, runs=1, first_seed=10, truth="held-out")
    prior = measure_best_time(1500, runs=1, first_seed=10, truth="held-out", learn_lag=False)
    assert learned["history"]["model"]["mean"] >= 0.6 > prior["history"]["model"]["mean"]
    assert learned["history"]["model"]["mean"] > learned["history"]["fixed"]["mean"] + 0.2
    assert learned["trap"]["wrong_peak_chosen"] < learned["trap"]["wrong_peak_random"]


def test_read_lag_recovers_a_known_lag_from_taps_whatever_the_hours_people_are_around() -> None:
    """The look-ahead's weights learned from sends and taps (bench/learning/send_time_model.py ``read_lag``, the SQL's
    twin): taps drawn from a known lag kernel times each contact's presence, with presence peaked at different hours
    for different contacts; the weights come back in the kernel's shape, not the presence's. With few taps they stay
    near the prior."""
    import random
    from datetime import UTC, datetime, timedelta

    from bench.learning.send_time_model import read_lag
    from shared.campaigns.send_time import SendTimeModel

    rng = random.Random(7)
    now = datetime(2026, 11, 30, tzinfo=UTC)
    kernel = [0.2, 0.5, 1.0, 0.8, 0.4, 0.2, 0.1, 0.05]  # peaks 2 hours after the send
    presences, sends = {}, {}
    for i in range(400):
        peak = rng.randrange(24)  # each contact around mostly at its own hour of the day, in UTC
        presence = [(8.0 if (h % 24 - peak) % 24 < 3 else 0.5) for h in range(168)]
        presences[f"c{i}"] = [v / sum(presence) for v in presence]
        pushes = []
        for _ in range(20):
            sent = now - timedelta(days=rng.randrange(1, 50), hours=rng.randrange(24))
            how = (sent.isoweekday() % 7) * 24 + sent.hour
            tapped = None
            for j, k in enumerate(kernel):
                if rng.random() < 0.5 * k * presences[f"c{i}"][(how + j) % 168] * 168 / 8:
                    tapped = sent + timedelta(hours=j, minutes=rng.randrange(60))
                    break
            pushes.append((sent, tapped))
        sends[f"c{i}"] = pushes
    zones: dict[str, str | None] = dict.fromkeys(presences)
    model = SendTimeModel(lag_taps=50.0)
    weights = read_lag(zones, presences, sends, now=now, model=model)
    # the first tap ends a push's chances, so later lags see fewer pushes still untapped: compare the first hours
    shape = [w / weights[2] for w in weights[:4]]
    assert all(abs(s - k) < 0.2 for s, k in zip(shape, kernel[:4], strict=True)), shape
    assert weights.index(max(weights)) == 2
    # without learning, or with a handful of taps, the prior (halving every 2 hours) stands or nearly
    prior = [0.5 ** (j / 2) for j in range(8)]
    assert read_lag(zones, presences, sends, now=now, model=SendTimeModel(lag_taps=None)) == prior
    few = dict(list(sends.items())[:3])
    weights = read_lag(zones, presences, few, now=now, model=model)
    shape = [w / weights[0] for w in weights]  # 14 taps against the prior's 50
    assert all(abs(s - p) < abs(s - k / kernel[0]) for s, p, k in zip(shape[1:], prior[1:], kernel[1:], strict=True)), shape
