"""PersonState: one violation per person, smoothing, reset after compliance."""

from __future__ import annotations

from edge.hygiene.state import PersonState, Rules


def run(
    state: PersonState, obs: list[tuple[float, float, float]]
) -> list[tuple[float, tuple[str, ...]]]:
    out = []
    for t, m, c in obs:
        v = state.observe(t, m, c)
        if v is not None:
            out.append((t, v.violations))
    return out


def test_mask_off_for_longer_than_allowed_is_one_violation() -> None:
    s = PersonState(Rules(violation_after_s=3, smoothing_s=1))
    obs = [(t * 0.2, 0.9, 0.9) for t in range(10)]  # compliant 2 s
    obs += [(2.0 + t * 0.2, 0.05, 0.9) for t in range(50)]  # mask off 10 s
    got = run(s, obs)
    assert len(got) == 1
    t, what = got[0]
    assert what == ("no_mask",) and 5.0 <= t <= 6.0  # 3 s after the median turned


def test_one_odd_frame_changes_nothing() -> None:
    s = PersonState(Rules(violation_after_s=0.5, smoothing_s=1))
    obs = [(t * 0.2, 0.9, 0.9) for t in range(20)]
    obs[7] = (1.4, 0.0, 0.0)
    assert run(s, obs) == []


def test_compliant_again_for_reset_time_allows_a_new_violation() -> None:
    s = PersonState(Rules(violation_after_s=1, reset_after_s=2, smoothing_s=0.1))
    bad = [(t * 0.5, 0.1, 0.1) for t in range(5)]
    short_good = [(2.5 + t * 0.5, 0.9, 0.9) for t in range(2)]  # 0.5 s: not enough
    bad2 = [(3.5 + t * 0.5, 0.1, 0.9) for t in range(5)]
    long_good = [(6.0 + t * 0.5, 0.9, 0.9) for t in range(6)]
    bad3 = [(9.0 + t * 0.5, 0.9, 0.1) for t in range(5)]
    got = run(s, bad + short_good + bad2 + long_good + bad3)
    assert [w for _, w in got] == [("no_mask", "no_hair_cover"), ("no_hair_cover",)]


def test_only_required_items_count() -> None:
    s = PersonState(Rules(require_mask=False, violation_after_s=0))
    assert run(s, [(0.0, 0.0, 0.9), (1.0, 0.0, 0.9)]) == []
