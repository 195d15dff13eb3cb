"""HJ 212 frames: byte tables from the standard's examples, split packets, answers, fuzzing."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import hj212
from protocols.errors import EncodeError
from protocols.hj212 import BadFrame, Cn, Cp, FrameReader, Hj212Error, Packet

MN = "010000A8900016F000169DC0"

# (source, whole frame as sent, what it decodes to)
FRAMES: list[tuple[str, bytes, Packet]] = [
    (
        # HJ 212-2017 6.3 / appendix A: the one example printed with its CRC (set RtdInterval)
        "HJ 212-2017 printed example, CN 1062",
        b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
        b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n",
        Packet(
            st=32,
            cn=1062,
            pw="100000",
            mn=MN,
            qn="20160801085857223",
            flag=5,
            cp=Cp.of(RtdInterval="30"),
        ),
    ),
    (
        # appendix C data answer; CRC C241 as computed by an independent Java implementation
        "HJ 212-2017 appendix C data answer, CN 9014",
        b"##0087QN=20160801085000001;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;"
        b"Flag=4;CP=&&&&C241\r\n",
        Packet(st=91, cn=9014, pw="123456", mn=MN, qn="20160801085000001", flag=4),
    ),
    (
        # appendix C request answer and execution result (CRC from appendix A's algorithm)
        "HJ 212-2017 appendix C request answer, CN 9011",
        b"##0094QN=20160801085857223;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;"
        b"Flag=4;CP=&&QnRtn=1&&%s\r\n"
        % b"%04X"
        % hj212.crc16(
            b"QN=20160801085857223;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&"
        ),
        Packet(
            st=91, cn=9011, pw="123456", mn=MN, qn="20160801085857223", flag=4, cp=Cp.of(QnRtn="1")
        ),
    ),
    (
        # HJ/T 212-2005 style (no QN, no Flag), lower-case CRC: still read
        "HJ/T 212-2005 real-time data, lower-case CRC",
        b"##0178ST=32;CN=2011;PW=123456;MN=0873HHMZWSLH02;CP=&&DataTime=20160103133030;"
        b"060-Rtd=3.0943,060-Flag=N;011-Rtd=18.0412,011-Flag=N;001-Rtd=8.2137,001-Flag=N;"
        b"B01-Rtd=10.9890,B01-Flag=N&&a9c1\r\n",
        Packet(
            st=32,
            cn=2011,
            pw="123456",
            mn="0873HHMZWSLH02",
            qn=None,
            flag=None,
            cp=Cp.of(DataTime="20160103133030").with_pollutants(
                {
                    "060": {"Rtd": "3.0943", "Flag": "N"},
                    "011": {"Rtd": "18.0412", "Flag": "N"},
                    "001": {"Rtd": "8.2137", "Flag": "N"},
                    "B01": {"Rtd": "10.9890", "Flag": "N"},
                }
            ),
        ),
    ),
]

IDS = [f[0] for f in FRAMES]


@pytest.mark.parametrize(("_src", "frame", "packet"), FRAMES, ids=IDS)
def test_frame_decodes_whole(_src: str, frame: bytes, packet: Packet) -> None:
    assert hj212.decode_frame(frame) == packet


@pytest.mark.parametrize(("_src", "frame", "packet"), FRAMES, ids=IDS)
def test_frame_encodes_to_the_same_bytes(_src: str, frame: bytes, packet: Packet) -> None:
    # we send upper-case CRCs; the 2005 vector came lower-case
    assert packet.encode() == frame[:-6] + frame[-6:-2].upper() + b"\r\n"


@pytest.mark.parametrize(("_src", "frame", "packet"), FRAMES, ids=IDS)
def test_frame_read_byte_by_byte_and_with_garbage(_src: str, frame: bytes, packet: Packet) -> None:
    reader = FrameReader()
    got: list[Packet | BadFrame] = []
    for b in b"\x00garbage#" + frame + b"tail##12" + frame:
        reader.feed(bytes([b]))
        got.extend(reader.events())
    packets = [e for e in got if isinstance(e, Packet)]
    assert packets == [packet, packet]
    assert all(isinstance(e, BadFrame) for e in got if not isinstance(e, Packet))
    assert reader.buffered == 0


def test_crc_is_the_appendix_a_algorithm_not_modbus() -> None:
    seg = FRAMES[0][1][6:-6]
    assert hj212.crc16(seg) == 0x1C80
    # CRC-16/MODBUS of the same bytes differs: a codec using it would refuse every frame
    crc = 0xFFFF
    for b in seg:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    assert crc != 0x1C80


OK = FRAMES[0][1]
MALFORMED = [
    ("no head", b"$" + OK[1:], "start with ##", 100),
    ("length not digits", OK[:2] + b"01a1" + OK[6:], "four decimal digits", 100),
    ("length too big", b"##2000" + OK[6:], "exceeds", 100),
    ("length disagrees", OK[:2] + b"0100" + OK[6:], "length field says", 100),
    ("bad CRC", OK[:-6] + b"1C81\r\n", "does not match", 9),
    ("CRC not hex", OK[:-6] + b"1CXZ\r\n", "hex digits", 9),
    ("no tail", OK[:-2] + b"\n\n", "end with", 100),
    ("non-ASCII byte", None, "non-ASCII", 100),
    ("no CP", None, "no CP", 100),
    ("unknown field", None, "unknown data segment field", 100),
    ("ST not digits", None, "ST='3x'", 5),
    ("QN too short", None, "QN=", 7),
    ("missing MN", None, "no MN", 4),
    ("Flag says split, no PNUM", None, "PNUM/PNO", 6),
    ("CP item without =", None, "not key=value", 100),
]
SEGMENTS = {
    "non-ASCII byte": "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=A1;Flag=5;CP=&&Rtd\u00e9=1&&".encode(
        "latin-1"
    ),
    "no CP": b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=A1;Flag=5",
    "unknown field": b"QN=20160801085857223;XX=1;ST=32;CN=1062;PW=100000;MN=A1;Flag=5;CP=&&&&",
    "ST not digits": b"ST=3x;CN=1062;PW=100000;MN=A1;CP=&&&&",
    "QN too short": b"QN=2016;ST=32;CN=1062;PW=100000;MN=A1;CP=&&&&",
    "missing MN": b"ST=32;CN=1062;PW=100000;CP=&&&&",
    "Flag says split, no PNUM": b"ST=32;CN=2011;PW=1;MN=A1;Flag=7;CP=&&&&",
    "CP item without =": b"ST=32;CN=2011;PW=1;MN=A1;Flag=4;CP=&&DataTime&&",
}


def _frame(seg: bytes) -> bytes:
    return b"##%04d%s%04X\r\n" % (len(seg), seg, hj212.crc16(seg))


@pytest.mark.parametrize(
    ("name", "frame", "message", "qn_rtn"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_frames_name_the_problem(
    name: str, frame: bytes | None, message: str, qn_rtn: int
) -> None:
    data = frame if frame is not None else _frame(SEGMENTS[name])
    with pytest.raises(Hj212Error, match=message) as info:
        hj212.decode_frame(data)
    assert info.value.qn_rtn == qn_rtn


def test_reader_skips_a_corrupt_frame_and_reads_the_next() -> None:
    bad = OK[:20] + b"X" + OK[21:]
    reader = FrameReader()
    reader.feed(bad + OK)
    events = list(reader.events())
    assert isinstance(events[0], BadFrame) and "does not match" in str(events[0].error)
    assert events[-1] == FRAMES[0][2]


def test_reader_resyncs_when_a_frame_was_cut_short() -> None:
    reader = FrameReader()
    reader.feed(OK[:50] + b"\r\n" + OK)
    events = list(reader.events())
    assert [type(e) for e in events] == [BadFrame, Packet]


# -- split packets ------------------------------------------------------------------------


def _hour_packet(n: int) -> Packet:
    values = {
        f"w{i:05d}": {"Avg": f"{i}.5", "Min": "1", "Max": "99.25", "Flag": "N"} for i in range(n)
    }
    return hj212.data_packet(
        cn=Cn.HOUR_DATA,
        st=21,
        mn="RIVER01",
        pw="123456",
        qn="20260101120000000",
        when=datetime(2026, 1, 1, 12),
        values=values,
    )


SPLITS = [
    # (pollutant groups, largest segment, expected parts)
    (3, 1024, 1),
    (30, 1024, 2),
    (30, 400, 8),  # 5 groups of 59 characters per part
    (60, 1024, 4),  # 16 groups per part: a 17th would pass 1024
]


@pytest.mark.parametrize(("groups", "limit", "parts"), SPLITS)
def test_split_table(groups: int, limit: int, parts: int) -> None:
    packet = _hour_packet(groups)
    split = hj212.split(packet, limit)
    assert len(split) == parts
    for i, p in enumerate(split, 1):
        assert len(p.segment()) <= limit
        if i < parts:  # greedy: the next part's first group would not have fitted
            grown = replace(p, cp=Cp(p.cp.groups + split[i].cp.groups[1:2]))
            assert not hj212._fits(grown, limit)
        if parts > 1:
            assert (p.flag, p.pnum, p.pno) == (7, parts, i)  # 2017, split, answer wanted
            assert p.cp.get("DataTime") == "20260101120000"  # every part reads alone
            assert hj212.decode_frame(p.encode()) == p
    reassembler = hj212.Reassembler()
    results = [reassembler.add(p) for p in reversed(split)]  # arrival order does not matter
    assert results[:-1] == [None] * (parts - 1)
    assert results[-1] == packet


def test_split_frame_bytes() -> None:
    """The exact second part of a two-part hour message (checked against a hand-built string)."""
    packet = hj212.data_packet(
        cn=Cn.HOUR_DATA,
        st=21,
        mn="RIVER01",
        pw="123456",
        qn="20260101120000000",
        when=datetime(2026, 1, 1, 12),
        values={"w01001": {"Avg": "7.41", "Flag": "N"}, "w01009": {"Avg": "8.2", "Flag": "N"}},
    )
    seg = b"QN=20260101120000000;ST=21;CN=2061;PW=123456;MN=RIVER01;Flag=7;PNUM=2;PNO=2;CP=&&DataTime=20260101120000;w01009-Avg=8.2,w01009-Flag=N&&"
    first, second = hj212.split(packet, len(seg) + 1)  # part 1 is one character longer
    assert first.cp.get("DataTime") == "20260101120000" and len(first.cp.groups) == 2
    assert second.encode() == b"##%04d%s%04X\r\n" % (len(seg), seg, hj212.crc16(seg))


def test_a_group_too_large_for_any_part_is_refused() -> None:
    with pytest.raises(EncodeError, match="one CP group"):
        hj212.split(_hour_packet(3), 120)


def test_reassembler_bounds_waiting_messages() -> None:
    r = hj212.Reassembler(max_pending=2)
    for qn in range(5):
        p = hj212.split(_hour_packet(30), 1024)[0]
        assert r.add(replace(p, qn=f"2026010112000000{qn}")) is None
    assert r.dropped == 3


# -- answers -------------------------------------------------------------------------------

REQUEST = FRAMES[0][2]
ANSWERS = [
    (
        hj212.data_answer(REQUEST),
        "QN=20160801085857223;ST=91;CN=9014;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&",
    ),
    (
        hj212.request_answer(REQUEST, 1),
        "QN=20160801085857223;ST=91;CN=9011;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&",
    ),
    (
        hj212.request_answer(REQUEST, 9),
        "QN=20160801085857223;ST=91;CN=9011;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=9&&",
    ),
    (
        hj212.execute_result(REQUEST, 1),
        "QN=20160801085857223;ST=91;CN=9012;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&",
    ),
]


@pytest.mark.parametrize(("packet", "segment"), ANSWERS)
def test_answer_table(packet: Packet, segment: str) -> None:
    assert packet.segment() == segment
    assert not packet.wants_ack  # answers are never answered
    assert hj212.decode_frame(packet.encode()) == packet


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (Packet(st=21, cn=2011, pw="123456", mn="A" * 25), "MN"),
        (Packet(st=21, cn=2011, pw="1234567", mn="A1"), "PW"),
        (Packet(st=21, cn=2011, pw="1", mn="A1", qn="123"), "QN"),
        (Packet(st=21, cn=2011, pw="1", mn="A1", cp=Cp.of(DataTime="1;2")), "holds one of"),
        (Packet(st=21, cn=2011, pw="1", mn="A1", flag=7), "PNUM"),
        (_hour_packet(40), "split"),
    ],
)
def test_unencodable_packets_say_why(packet: Packet, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        packet.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (7.4, "7.4"),
        (7.0, "7"),
        (0.00049, "0"),
        (-0.0001, "0"),
        (123.4567, "123.457"),
        (1e-3, "0.001"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert hj212.format_value(value) == text


# -- properties and fuzzing ----------------------------------------------------------------

_code = st.from_regex(r"[a-z][0-9]{5}", fullmatch=True)
_val = st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{1,4})?", fullmatch=True)
_packets = st.builds(
    lambda qn, stc, cn, mn, flag, values: hj212.data_packet(
        cn=cn, st=stc, mn=mn, pw="123456", qn=qn, when=datetime(2026, 1, 1), values=values, ack=flag
    ),
    st.from_regex(r"20[0-9]{15}", fullmatch=True),
    st.integers(0, 99),
    st.integers(0, 9999),
    st.from_regex(r"[A-Z0-9]{1,24}", fullmatch=True),
    st.booleans(),
    st.dictionaries(
        _code,
        st.fixed_dictionaries({"Rtd": _val, "Flag": st.sampled_from("NFMSDCTB")}),
        max_size=40,
    ),
)


@given(_packets)
def test_round_trip_through_split_frames_and_the_reader(packet: Packet) -> None:
    parts = hj212.split(packet)
    reader = FrameReader()
    reader.feed(hj212.frames(parts))
    r = hj212.Reassembler()
    out = [r.add(p) for p in reader.events() if isinstance(p, Packet)]
    assert out[-1] == packet


@settings(max_examples=400)
@given(st.binary(max_size=1200))
def test_fuzz_decode_frame_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(Hj212Error):
        assert isinstance(hj212.decode_frame(data), Packet)


@settings(max_examples=300)
@given(
    st.lists(
        st.binary(max_size=80) | st.sampled_from([OK, OK[:40], b"##", b"\r\n", b"##0010"]),
        max_size=20,
    )
)
def test_fuzz_reader_yields_only_packets_and_bad_frames(chunks: list[bytes]) -> None:
    reader = FrameReader()
    for c in chunks:
        reader.feed(c)
        for e in reader.events():
            assert isinstance(e, Packet | BadFrame)
        assert reader.buffered <= hj212.MAX_SEGMENT + 12 + max((len(c) for c in chunks), default=0)


@settings(max_examples=300)
@given(st.integers(0, len(OK) - 1), st.integers(0, 255))
def test_fuzz_any_single_byte_change_is_caught(pos: int, byte: int) -> None:
    data = bytearray(OK)
    if data[pos] == byte:
        return
    data[pos] = byte
    try:
        p = hj212.decode_frame(bytes(data))
    except Hj212Error:
        return
    # the only changes a CRC cannot see are outside the segment and still valid (CRC hex case)
    assert p == FRAMES[0][2]
