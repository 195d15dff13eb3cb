"""The Modbus wire codec: byte tables from the specifications, checked whole, byte by byte,
glued and with garbage; a round-trip property over random requests and replies.

PDU vectors are the examples of the Modbus Application Protocol Specification V1.1b3 (section
in each row); MBAP as the Modbus Messaging on TCP/IP Implementation Guide V1.0b 3.1.3 lays it
out; the RTU CRC as Modbus over Serial Line V1.02 6.2.2 computes it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.modbus import EXCEPTION_CODES, describe_exception
from protocols.modbus_wire import (
    MAX_COUNT,
    Answer,
    ExceptionReply,
    FramingError,
    MbapClient,
    ReadReply,
    Reply,
    Request,
    WriteReply,
    crc16,
    decode_reply,
    decode_rtu,
    encode_mbap,
    encode_reply,
    encode_rtu,
    pack_bits,
    rtu_reply_size,
    unpack_bits,
)

H = bytes.fromhex

# (AP section, request, request PDU, reply PDU, the reply decoded)
SPEC_EXAMPLES: list[tuple[str, Request, str, str, Reply]] = [
    ("6.1", Request(1, 1, 0x13, 0x13), "01 0013 0013", "01 03 CD6B05", ReadReply(1, H("CD6B05"))),
    ("6.2", Request(1, 2, 0xC4, 0x16), "02 00C4 0016", "02 03 ACDB35", ReadReply(2, H("ACDB35"))),
    (
        "6.3",
        Request(1, 3, 0x6B, 3),
        "03 006B 0003",
        "03 06 022B00000064",
        ReadReply(3, H("022B00000064")),
    ),
    ("6.4", Request(1, 4, 0x08, 1), "04 0008 0001", "04 02 000A", ReadReply(4, H("000A"))),
    ("6.5", Request(1, 5, 0xAC, 1, (1,)), "05 00AC FF00", "05 00AC FF00", WriteReply(5, 0xAC, 0xFF00)),
    ("6.6", Request(1, 6, 0x01, 1, (3,)), "06 0001 0003", "06 0001 0003", WriteReply(6, 1, 3)),
    (
        "6.11",
        Request(1, 15, 0x13, 10, (1, 0, 1, 1, 0, 0, 1, 1, 1, 0)),
        "0F 0013 000A 02 CD01",
        "0F 0013 000A",
        WriteReply(15, 0x13, 10),
    ),
    (
        "6.12",
        Request(1, 16, 0x01, 2, (0x000A, 0x0102)),
        "10 0001 0002 04 000A0102",
        "10 0001 0002",
        WriteReply(16, 1, 2),
    ),
    ("7", Request(1, 1, 0x04A1, 1), "01 04A1 0001", "81 02", ExceptionReply(1, 2)),
]  # fmt: skip
IDS = [row[0] for row in SPEC_EXAMPLES]


def hx(text: str) -> bytes:
    return H(text.replace(" ", ""))


@pytest.mark.parametrize(("section", "req", "pdu", "reply", "decoded"), SPEC_EXAMPLES, ids=IDS)
def test_spec_examples_encode_and_decode(
    section: str, req: Request, pdu: str, reply: str, decoded: Reply
) -> None:
    assert req.pdu == hx(pdu), section
    assert decode_reply(req, hx(reply)) == decoded
    assert encode_reply(decoded) == hx(reply)


def test_the_spec_coil_examples_unpack_to_their_bits() -> None:
    # AP 6.1: coils 27-20 are CD (1100 1101), the first coil in the lowest bit
    bits = ReadReply(1, hx("CD6B05")).bits(19)
    assert bits[:8] == [True, False, True, True, False, False, True, True]
    assert pack_bits(bits) == hx("CD6B05")
    assert ReadReply(3, hx("022B00000064")).registers() == [0x022B, 0, 0x64]


@pytest.mark.parametrize("code", sorted(EXCEPTION_CODES))
def test_every_exception_code_decodes_and_has_a_hint(code: int) -> None:
    for function in (1, 2, 3, 4, 5, 6, 15, 16):
        req = Request(9, function, 0, 1, (1,) if function in (5, 6, 15, 16) else ())
        assert decode_reply(req, bytes((function | 0x80, code))) == ExceptionReply(function, code)
    name, hint = describe_exception(code)
    assert name and hint and not name.startswith("exception code")


# (request, reply PDU that cannot answer it, what the error says)
REFUSED_REPLIES = [
    (Request(1, 3, 0, 2), "", "empty"),
    (Request(1, 3, 0, 2), "04 04 00000000", "has function 4"),
    (Request(1, 3, 0, 2), "03 02 0000", "byte count 2"),
    (Request(1, 3, 0, 2), "03 04 000000", "3 data bytes"),
    (Request(1, 3, 0, 2), "03 04 0000000000", "5 data bytes"),
    (Request(1, 3, 0, 2), "03", "byte count no"),
    (Request(1, 1, 0, 9), "01 01 FF", "byte count 1"),
    (Request(1, 3, 0, 2), "83", "exception reply of 1 bytes"),
    (Request(1, 3, 0, 2), "83 02 00", "exception reply of 3 bytes"),
    (Request(1, 6, 1, 1, (3,)), "06 0001 0004", "echoes"),
    (Request(1, 6, 1, 1, (3,)), "06 0002 0003", "address 2"),
    (Request(1, 16, 1, 2, (1, 2)), "10 0001 0003", "confirms 3"),
    (Request(1, 16, 1, 2, (1, 2)), "10 0001", "3 bytes"),
]


@pytest.mark.parametrize(("req", "pdu", "message"), REFUSED_REPLIES)
def test_replies_that_cannot_answer_the_request_are_decode_errors(
    req: Request, pdu: str, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_reply(req, hx(pdu))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unit": 256, "function": 3, "address": 0}, "unit id 256"),
        ({"unit": 1, "function": 3, "address": 65536}, "address 65536"),
        ({"unit": 1, "function": 3, "address": 0, "count": 0}, "count 0 is not 1-125"),
        ({"unit": 1, "function": 3, "address": 0, "count": 126}, "count 126 is not 1-125"),
        ({"unit": 1, "function": 1, "address": 0, "count": 2001}, "count 2001 is not 1-2000"),
        ({"unit": 1, "function": 4, "address": 65535, "count": 2}, "goes past 65535"),
        ({"unit": 1, "function": 3, "address": 0, "values": (1,)}, "takes no values"),
        ({"unit": 1, "function": 5, "address": 0, "values": (2,)}, "a coil is 0 or 1"),
        ({"unit": 1, "function": 6, "address": 0, "values": (65536,)}, "not 16-bit"),
        ({"unit": 1, "function": 6, "address": 0, "count": 2, "values": (1, 2)}, "exactly one"),
        ({"unit": 1, "function": 16, "address": 0, "count": 3, "values": (1,)}, "1 values"),
        ({"unit": 1, "function": 16, "address": 0, "count": 124, "values": (0,) * 124}, "1-123"),
        ({"unit": 1, "function": 15, "address": 0, "count": 2, "values": (1, 5)}, "0 or 1"),
        ({"unit": 1, "function": 8, "address": 0}, "function code 8"),
    ],
)
def test_impossible_requests_are_encode_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        Request(**kwargs)  # type: ignore[arg-type]


# -- MBAP --------------------------------------------------------------------------------------


def test_mbap_frame_layout() -> None:
    # transaction 0x0001, protocol 0, length 6 (unit + 5 PDU bytes), unit 0x11
    client = MbapClient()
    tid, frame = client.send(Request(0x11, 3, 0x6B, 3))
    assert (tid, frame) == (1, hx("0001 0000 0006 11 03006B0003"))
    assert encode_mbap(1, 0x11, hx("03006B0003")) == frame


def three_pending() -> tuple[MbapClient, list[Request]]:
    client = MbapClient()
    reqs = [Request(1, 3, 0x6B, 3), Request(2, 4, 8, 1), Request(3, 1, 0x04A1, 1)]
    for r in reqs:
        client.send(r)
    return client, reqs


REPLY_FRAMES = hx(
    "0002 0000 0005 02 04 02 000A"  # transaction 2 first: replies may come in any order
    "0001 0000 0009 01 03 06 022B00000064"
    "0003 0000 0003 03 81 02"
)
EXPECTED = [
    (2, ReadReply(4, hx("000A"))),
    (1, ReadReply(3, hx("022B00000064"))),
    (3, ExceptionReply(1, 2)),
]


def outcomes(answers: list[Answer]) -> list[tuple[int, Reply | DecodeError]]:
    return [(a.transaction, a.reply) for a in answers]


def test_glued_frames_in_any_order_whole() -> None:
    client, _ = three_pending()
    assert outcomes(client.receive(REPLY_FRAMES)) == EXPECTED
    assert client.pending == {}


def test_frames_byte_by_byte() -> None:
    client, _ = three_pending()
    got: list[Answer] = []
    for i in range(len(REPLY_FRAMES)):
        got += client.receive(REPLY_FRAMES[i : i + 1])
    assert outcomes(got) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(REPLY_FRAMES)))
def test_frames_split_anywhere(cut: int) -> None:
    client, _ = three_pending()
    got = client.receive(REPLY_FRAMES[:cut]) + client.receive(REPLY_FRAMES[cut:])
    assert outcomes(got) == EXPECTED


def test_a_late_reply_to_a_forgotten_request_is_stray_and_taken_for_nothing_else() -> None:
    client = MbapClient()
    late, _ = client.send(Request(1, 3, 0, 1))
    client.forget(late)  # the caller timed out
    now, _ = client.send(Request(1, 3, 0, 1))
    got = client.receive(
        encode_mbap(late, 1, hx("03 02 1111")) + encode_mbap(now, 1, hx("03 02 2222"))
    )
    assert outcomes(got) == [(now, ReadReply(3, hx("2222")))]
    assert client.stray == 1


def test_a_reply_from_another_unit_ends_its_request_with_an_error() -> None:
    client = MbapClient()
    tid, _ = client.send(Request(1, 3, 0, 1))
    (answer,) = client.receive(encode_mbap(tid, 2, hx("03 02 0000")))
    assert isinstance(answer.reply, DecodeError) and "unit 2" in str(answer.reply)
    assert client.pending == {}


def test_a_reply_that_does_not_fit_is_an_answer_with_its_error() -> None:
    client = MbapClient()
    tid, _ = client.send(Request(1, 3, 0, 2))
    (answer,) = client.receive(encode_mbap(tid, 1, hx("03 02 0000")))
    assert isinstance(answer.reply, DecodeError) and "byte count 2" in str(answer.reply)


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        ("0001 0001 0005 01 03 02 0000", "protocol id 1"),
        ("0001 0000 0000 01", "length 0"),
        ("0001 0000 0002 01 03", "length 2"),
        ("0001 0000 00FF 01", "length 255"),
        ("4854 5450 2F31 2E31 2032 3030", "protocol id 21584"),  # "HTTP/1.1 200": wrong port
    ],
)
def test_garbage_breaks_the_stream_for_good(garbage: str, message: str) -> None:
    client, _ = three_pending()
    good = REPLY_FRAMES[: 7 + 4]  # the first frame whole
    assert len(client.receive(good)) == 1
    with pytest.raises(FramingError, match=message):
        client.receive(hx(garbage) + REPLY_FRAMES[11:])
    with pytest.raises(FramingError):  # no resync on a stream: the connection must go
        client.receive(REPLY_FRAMES)


def test_transaction_ids_wrap_and_skip_pending_ones() -> None:
    client = MbapClient()
    first, _ = client.send(Request(1, 3, 0, 1))
    for _ in range(65534):
        tid, _ = client.send(Request(1, 3, 0, 1))
        client.forget(tid)
    assert tid == 65535
    again, _ = client.send(Request(1, 3, 0, 1))
    assert (first, again) == (1, 2)  # 1 is still pending: skipped


def test_pending_requests_are_bounded() -> None:
    client = MbapClient(max_pending=2)
    client.send(Request(1, 3, 0, 1))
    client.send(Request(1, 3, 0, 1))
    with pytest.raises(EncodeError, match="2 requests are pending"):
        client.send(Request(1, 3, 0, 1))


# -- RTU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "crc"),
    [
        ("01 03 0000 0001", "84 0A"),
        ("01 03 0000 000A", "C5 CD"),
        ("11 03 006B 0003", "76 87"),  # AP 6.3's request to unit 17
    ],
)
def test_rtu_crc_low_byte_first(body: str, crc: str) -> None:
    frame = encode_rtu(hx(body)[0], hx(body)[1:])
    assert frame == hx(body) + hx(crc)
    assert crc16(frame) == 0  # a frame with its CRC checks to zero


def test_rtu_reply_size_from_the_first_bytes() -> None:
    req = Request(0x11, 3, 0x6B, 3)
    assert rtu_reply_size(req, hx("11")) is None
    assert rtu_reply_size(req, hx("11 03")) is None
    assert rtu_reply_size(req, hx("11 03 06")) == 11
    assert rtu_reply_size(req, hx("11 83")) == 5
    assert rtu_reply_size(Request(0x11, 6, 1, 1, (3,)), hx("11 06")) == 8


def test_rtu_reply_decodes_and_refuses_noise_and_other_units() -> None:
    req = Request(0x11, 3, 0x6B, 3)
    frame = encode_rtu(0x11, hx("03 06 022B00000064"))
    assert decode_rtu(req, frame) == ReadReply(3, hx("022B00000064"))
    noisy = frame[:4] + bytes((frame[4] ^ 0x10,)) + frame[5:]
    with pytest.raises(DecodeError, match="CRC"):
        decode_rtu(req, noisy)
    with pytest.raises(DecodeError, match="unit 18"):
        decode_rtu(req, encode_rtu(0x12, hx("03 06 022B00000064")))
    with pytest.raises(DecodeError, match="4"):
        decode_rtu(req, b"\x11")


# -- round trip --------------------------------------------------------------------------------


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[Request, Reply]:
    """A valid request and a valid reply to it (a normal one or an exception)."""
    unit = draw(st.integers(0, 255))
    function = draw(st.sampled_from((1, 2, 3, 4, 5, 6, 15, 16)))
    count = 1
    values: tuple[int, ...] = ()
    if function in (1, 2, 3, 4, 15, 16):
        count = draw(st.integers(1, MAX_COUNT[function]))
    address = draw(st.integers(0, 0x10000 - count))
    if function in (5, 15):
        values = tuple(draw(st.lists(st.integers(0, 1), min_size=count, max_size=count)))
    elif function in (6, 16):
        values = tuple(draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count)))
    req = Request(unit, function, address, count, values)
    if draw(st.booleans()):
        return req, ExceptionReply(function, draw(st.integers(0, 255)))
    if function in (1, 2, 3, 4):
        return req, ReadReply(
            function, draw(st.binary(min_size=req.reply_data_size, max_size=req.reply_data_size))
        )
    if function == 5:
        return req, WriteReply(5, address, 0xFF00 if values[0] else 0)
    if function == 6:
        return req, WriteReply(6, address, values[0])
    return req, WriteReply(function, address, count)  # fmt: skip


@settings(max_examples=300, derandomize=True, database=None)
@given(st.lists(exchanges(), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_round_trip_through_mbap_in_any_order_and_any_pieces(
    pairs: list[tuple[Request, Reply]], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    client = MbapClient()
    sent = [(client.send(req)[0], req, reply) for req, reply in pairs]
    order = sent[:]
    rnd.shuffle(order)
    stream = b"".join(encode_mbap(tid, req.unit, encode_reply(reply)) for tid, req, reply in order)
    cuts = sorted(rnd.sample(range(1, len(stream)), min(5, len(stream) - 1)))
    got: list[Answer] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += client.receive(stream[a:b])
    assert outcomes(got) == [(tid, reply) for tid, _req, reply in order]
    assert client.pending == {} and client.stray == 0
    for _tid, req, reply in order:  # and the same over RTU
        assert decode_rtu(req, encode_rtu(req.unit, encode_reply(reply))) == reply
        if isinstance(reply, ReadReply) and req.function in (1, 2):
            assert pack_bits(unpack_bits(reply.data, req.count)) == bytes(
                b & m for b, m in zip(reply.data, pack_bits([1] * req.count), strict=True)
            )
