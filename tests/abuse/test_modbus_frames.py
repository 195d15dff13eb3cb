"""The Modbus wire codec under hostile bytes: a device (or whatever answers on its port) may
send anything; the client gets answers, its own errors, or a broken stream — nothing else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.modbus_wire import (
    ExceptionReply,
    FramingError,
    MbapClient,
    ReadReply,
    Reply,
    Request,
    WriteReply,
    decode_rtu,
    encode_mbap,
    encode_reply,
    encode_rtu,
    rtu_reply_size,
)
from tests.abuse.fuzz import FUZZ, fuzz_input

REQUESTS = [
    Request(1, 3, 0, 10),
    Request(1, 4, 100, 2),
    Request(2, 1, 0, 19),
    Request(3, 16, 5, 2, (1, 2)),
    Request(4, 5, 7, 1, (1,)),
]
REPLIES: list[Reply] = [
    ReadReply(3, bytes(range(20))),
    ReadReply(4, b"\x42\xf6\xe9\x79"),
    ReadReply(1, b"\xcd\x6b\x05"),
    WriteReply(16, 5, 2),
    ExceptionReply(5, 2),
]
# a stream of replies to the requests above, as sent in order (transaction ids 1..5)
SEED = b"".join(
    encode_mbap(tid, req.unit, encode_reply(reply))
    for tid, (req, reply) in enumerate(zip(REQUESTS, REPLIES, strict=True), start=1)
)
RTU_SEEDS = [
    encode_rtu(req.unit, encode_reply(r)) for req, r in zip(REQUESTS, REPLIES, strict=True)
]


@FUZZ
@given(fuzz_input([SEED]), st.integers(1, 64))
def test_fuzz_mbap_stream(data: bytes, piece: int) -> None:
    client = MbapClient()
    for req in REQUESTS:
        client.send(req)
    answered = 0
    try:
        for i in range(0, len(data), piece):
            for answer in client.receive(data[i : i + piece]):
                assert isinstance(
                    answer.reply, ReadReply | WriteReply | ExceptionReply | DecodeError
                )
                answered += 1
    except FramingError:
        return
    # every complete frame ended one pending request or was counted as stray
    assert answered + len(client.pending) == len(REQUESTS)


@FUZZ
@given(fuzz_input(RTU_SEEDS), st.sampled_from(REQUESTS))
def test_fuzz_rtu_frames(frame: bytes, req: Request) -> None:
    size = rtu_reply_size(req, frame[:3])
    assert size is None or 4 <= size <= 260
    try:
        reply = decode_rtu(req, frame)
    except DecodeError:
        return
    assert isinstance(reply, ReadReply | WriteReply | ExceptionReply)
