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
