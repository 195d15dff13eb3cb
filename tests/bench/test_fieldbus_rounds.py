"""The field-bus benchmark's rounds: the median round is reported, and the goal is the median
of the rounds' ratios (each round pairs measurements made minutes apart on a machine whose
speed drifts)."""

from __future__ import annotations

from bench.fieldbus import CITYEDGE, THINGSBOARD, Result, _median_ratio, _round_ratios


def rounds(name: str, *figures: tuple[float, float]) -> list[Result]:
    return [Result(name, 100, points, cpu) for points, cpu in figures]


def test_the_median_round_is_reported_with_every_round_and_the_overload_of_the_first() -> None:
    ours = rounds(CITYEDGE, (50_000, 90.0), (60_000, 95.0), (40_000, 100.0))
    ours[0].overload_rss = (100.0, 101.0, 102.0)
    median = Result.median_of(ours)
    assert (median.points_per_s, median.cpu_percent) == (50_000, 90.0)  # 55.6k per core
    assert median.rounds == tuple(ours) and median.overload_rss == (100.0, 101.0, 102.0)


def test_a_round_that_delivered_nothing_ranks_last_and_is_no_ratio() -> None:
    ours = rounds(CITYEDGE, (0, 50.0), (60_000, 95.0), (50_000, 90.0))
    assert Result.median_of(ours).points_per_s == 50_000
    theirs = rounds(THINGSBOARD, (4_000, 50.0), (4_000, 60.0), (4_000, 40.0))
    ratios = _round_ratios(Result.median_of(ours), Result.median_of(theirs))
    assert ratios == ["n/a", "9.5", "5.6"]
    assert _median_ratio(ratios) == "7.5"  # of the rounds that have one
    assert _median_ratio(["n/a"]) == "n/a"


def test_a_result_without_rounds_is_its_own_round() -> None:
    one, other = Result(CITYEDGE, 1, 10_000, 50.0), Result(THINGSBOARD, 1, 100, 10.0)
    assert _round_ratios(one, other) == ["20.0"]
