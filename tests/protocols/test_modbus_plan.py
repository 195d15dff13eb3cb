"""The read planner as a table: points in, requests out."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocols.modbus import DataType, PointSpec, RegisterType, plan_reads

H, INP, C, D = (
    RegisterType.HOLDING,
    RegisterType.INPUT,
    RegisterType.COIL,
    RegisterType.DISCRETE_INPUT,
)


def p(
    name: str,
    address: int,
    table: RegisterType = H,
    dtype: DataType = DataType.UINT16,
    bit: int | None = None,
) -> PointSpec:
    if table.is_bit:
        dtype = DataType.BOOL
    return PointSpec(name, address, table, dtype, bit=bit)


def shape(points: list[PointSpec], **kw: int) -> list[tuple[int, int, int, tuple[str, ...]]]:
    return [
        (b.function, b.start, b.count, tuple(x.name for x in b.points))
        for b in plan_reads(points, **kw)
    ]


CASES = [
    (
        "adjacent registers merge",
        [p("a", 0), p("b", 1), p("c", 2, dtype=DataType.FLOAT32)],
        {},
        [(3, 0, 4, ("a", "b", "c"))],
    ),
    (
        "order of input does not matter",
        [p("c", 2), p("a", 0), p("b", 1)],
        {},
        [(3, 0, 3, ("a", "b", "c"))],
    ),
    ("a gap splits by default", [p("a", 0), p("b", 5)], {}, [(3, 0, 1, ("a",)), (3, 5, 1, ("b",))]),
    ("max_gap reads across", [p("a", 0), p("b", 5)], {"max_gap": 4}, [(3, 0, 6, ("a", "b"))]),
    (
        "gap one larger than max_gap splits",
        [p("a", 0), p("b", 6)],
        {"max_gap": 4},
        [(3, 0, 1, ("a",)), (3, 6, 1, ("b",))],
    ),
    (
        "scattered points",
        [p("a", 0), p("b", 100), p("c", 1000), p("d", 1001)],
        {"max_gap": 10},
        [(3, 0, 1, ("a",)), (3, 100, 1, ("b",)), (3, 1000, 2, ("c", "d"))],
    ),
    (
        "mixed function codes never share a request",
        [p("h", 0), p("i", 0, INP), p("c", 0, C), p("d", 0, D), p("h2", 1)],
        {},
        [(1, 0, 1, ("c",)), (2, 0, 1, ("d",)), (3, 0, 2, ("h", "h2")), (4, 0, 1, ("i",))],
    ),
    (
        "bits of one status word share its register",
        [
            p("s0", 9, INP, DataType.BOOL, bit=0),
            p("s1", 9, INP, DataType.BOOL, bit=1),
            p("x", 7, INP, DataType.UINT32),
        ],
        {},
        [(4, 7, 3, ("x", "s0", "s1"))],
    ),
    (
        "125-register limit",
        [p(f"r{i}", i) for i in range(126)],
        {},
        [(3, 0, 125, tuple(f"r{i}" for i in range(125))), (3, 125, 1, ("r125",))],
    ),
    (
        "a 32-bit value is never split across requests",
        [p("a", 0, dtype=DataType.UINT16), p("b", 123, dtype=DataType.FLOAT32), p("c", 125)],
        {"max_gap": 200},
        [(3, 0, 125, ("a", "b")), (3, 125, 1, ("c",))],
    ),
    (
        "device-specific smaller limit",
        [p(f"r{i}", i) for i in range(10)],
        {"max_registers": 4},
        [
            (3, 0, 4, ("r0", "r1", "r2", "r3")),
            (3, 4, 4, ("r4", "r5", "r6", "r7")),
            (3, 8, 2, ("r8", "r9")),
        ],
    ),
    (
        "2000-coil limit",
        [p(f"c{i}", i * 100, C) for i in range(21)],
        {"max_gap": 100},
        [(1, 0, 1901, tuple(f"c{i}" for i in range(20))), (1, 2000, 1, ("c20",))],
    ),
    ("empty", [], {}, []),
]


@pytest.mark.parametrize(
    ("points", "kwargs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_planning_table(
    points: list[PointSpec],
    kwargs: dict[str, int],
    expected: list[tuple[int, int, int, tuple[str, ...]]],
) -> None:
    assert shape(points, **kwargs) == expected


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([p("a", 0)], max_gap=-1)
    with pytest.raises(ValueError, match="125"):
        plan_reads([p("a", 0)], max_registers=126)


def test_values_of_slices_the_response() -> None:
    (block,) = plan_reads([p("a", 10), p("b", 11, dtype=DataType.FLOAT32)])
    data = [1, 2, 3]
    assert block.values_of(block.points[0], data) == [1]
    assert block.values_of(block.points[1], data) == [2, 3]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2000),
            st.sampled_from([DataType.UINT16, DataType.FLOAT32, DataType.FLOAT64]),
        ),
        max_size=60,
    ),
    st.integers(0, 20),
    st.integers(1, 125),
)
def test_plan_covers_every_point_within_limits(
    pts: list[tuple[int, DataType]], gap: int, limit: int
) -> None:
    points = [p(f"p{i}", a, dtype=t) for i, (a, t) in enumerate(pts)]
    # two points sharing registers cannot always be read in blocks that do not overlap (a
    # float32 at 0 and a float64 at 1 need 5 registers; a limit of 4 forces two blocks)
    spans = sorted((x.address, x.end) for x in points)
    assume(all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)))
    blocks = plan_reads(points, max_gap=gap, max_registers=max(limit, 4))
    covered = [x.name for b in blocks for x in b.points]
    assert sorted(covered) == sorted(x.name for x in points)
    for b in blocks:
        assert 1 <= b.count <= max(limit, 4)
        for x in b.points:
            assert b.start <= x.address and x.end <= b.start + b.count
    # never more requests than points, and no two blocks of a table overlap — unless two
    # points share registers and together exceed the limit (float32 at 0 and float64 at 1
    # with 4 registers a read cannot be read by one request, nor by two disjoint ones)
    assert len(blocks) <= max(len(points), 0)
    spans = sorted((b.start, b.start + b.count) for b in blocks)
    by_address = sorted(points, key=lambda x: x.address)
    points_overlap = any(a.end > b.address for a, b in itertools.pairwise(by_address))
    if not points_overlap:
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


@pytest.mark.parametrize(
    ("profile", "per_point", "planned"),
    [("water-sonde", 8, 2), ("air-station", 9, 1), ("gate-controller", None, None)],
)
def test_shipped_profiles_requests_per_poll_before_and_after_planning(
    profile: str, per_point: int | None, planned: int | None
) -> None:
    from edge.profiles import ProfileLibrary

    specs = [p.spec() for p in ProfileLibrary().load(profile).points]
    blocks = plan_reads(specs)
    if per_point is not None:
        assert (len(specs), len(blocks)) == (per_point, planned)
    assert len(blocks) <= len({(s.register_type, s.address) for s in specs})


def test_rtu_timing_rules() -> None:
    from protocols.modbus import char_bits, rtu_frame_sizes, rtu_silence_s

    assert char_bits("E", 1) == 11 and char_bits("N", 2) == 11 and char_bits("N", 1) == 10
    assert rtu_silence_s(9600) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert rtu_silence_s(38400) == 0.00175  # fixed above 19200 baud (2.5.1.1)
    assert rtu_frame_sizes(3, 10) == (8, 25) and rtu_frame_sizes(1, 9) == (8, 7)
    assert rtu_frame_sizes(16, 2) == (13, 8)
    with pytest.raises(ValueError, match="baudrate"):
        rtu_silence_s(0)
