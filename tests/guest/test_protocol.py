"""The wire protocol: every frame round-trips; malformed frames are rejected, never acted on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxvm.guest.protocol import (
    MAX_CHUNK,
    MAX_FRAME_BYTES,
    Error,
    Exec,
    Exit,
    Output,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Run,
    Shutdown,
    Signal,
    Status,
    StatusRequest,
    decode_guest_frame,
    decode_host_frame,
    encode,
)

HOST_SAMPLES = [
    Run(id="m1", argv=["sh", "-c", "echo hi"], env={"A": "b"}, cwd="/tmp"),
    Exec(id="e1", argv=["uname", "-r"]),
    Signal(id="e1", signal=15),
    StatusRequest(),
    Ping(nonce="n"),
    Shutdown(grace_s=2.5),
]
GUEST_SAMPLES = [
    Ready(agent_version="0.1.0", protocol=1, kernel="6.1", boot_s=1.5, warnings=["w"]),
    Output.of("m1", "stderr", b"\x00\xffbinary"),
    Exit(id="m1", code=127, error="x: No such file or directory"),
    Exit(id="m1", code=143, signal=15),
    Status(main_id="m1", main_state="exited", main_code=3, running=["e2"], uptime_s=9.0),
    Pong(nonce="n", agent_version="0.1.0", protocol=1, kernel="6.1", boot_s=1.0, uptime_s=2),
    Error(message="duplicate command id", id="e1"),
]


@pytest.mark.parametrize("frame", HOST_SAMPLES, ids=lambda f: f.type)
def test_host_frames_round_trip(frame: Any) -> None:
    line = encode(frame)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_host_frame(line) == frame


@pytest.mark.parametrize("frame", GUEST_SAMPLES, ids=lambda f: f.type)
def test_guest_frames_round_trip(frame: Any) -> None:
    assert decode_guest_frame(encode(frame)) == frame


@given(st.binary(max_size=MAX_CHUNK), st.sampled_from(["stdout", "stderr"]))
def test_output_carries_any_bytes(raw: bytes, stream: Any) -> None:
    frame = decode_guest_frame(encode(Output.of("c", stream, raw)))
    assert isinstance(frame, Output)
    assert frame.raw() == raw and frame.stream == stream


@given(
    st.lists(st.text(min_size=1), min_size=1, max_size=5),
    st.dictionaries(st.text(), st.text(), max_size=3),
)
def test_run_carries_any_argv_and_env(argv: list[str], env: dict[str, str]) -> None:
    frame = Run(id="x", argv=argv, env=env)
    assert decode_host_frame(encode(frame)) == frame


MALFORMED = {
    "not json": b"{nope",
    "not an object": b"[1, 2]",
    "no type": b'{"id": "x"}',
    "unknown type": b'{"type": "format_disk"}',
    "missing field": b'{"type": "exec", "id": "x"}',
    "wrong type": b'{"type": "exec", "id": "x", "argv": "ls"}',
    "argv of non-strings": b'{"type": "exec", "id": "x", "argv": ["ls", 1]}',
    "empty argv": b'{"type": "run", "id": "x", "argv": []}',
    "empty id": b'{"type": "run", "id": "", "argv": ["ls"]}',
    "unknown field": b'{"type": "ping", "nonce": "", "sudo": true}',
    "bool for int": b'{"type": "signal", "id": "x", "signal": true}',
    "signal out of range": b'{"type": "signal", "id": "x", "signal": 99}',
    "env with non-string": b'{"type": "exec", "id": "x", "argv": ["ls"], "env": {"A": 1}}',
    "guest frame sent to guest": encode(Exit(id="x", code=0)).strip(),
}


@pytest.mark.parametrize("line", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_host_frames_are_rejected(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_host_frame(line)


def test_oversized_frames_are_rejected() -> None:
    line = json.dumps({"type": "ping", "nonce": "x" * MAX_FRAME_BYTES}).encode()
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_host_frame(line)
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(Ping(nonce="x" * MAX_FRAME_BYTES))


def test_output_must_be_base64_of_at_most_one_chunk() -> None:
    bad = b'{"type": "output", "id": "x", "stream": "stdout", "data": "***"}'
    with pytest.raises(ProtocolError, match="base64"):
        decode_guest_frame(bad)
    with pytest.raises(ProtocolError, match="chunk"):
        decode_guest_frame(encode(Output.of("x", "stdout", b"a" * (MAX_CHUNK + 1))))
    with pytest.raises(ProtocolError):
        decode_guest_frame(b'{"type": "output", "id": "x", "stream": "stdin", "data": ""}')
