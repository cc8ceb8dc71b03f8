"""The host <-> guest wire protocol: newline-delimited JSON frames over one byte stream.

Shared by the guest agent (inside the VM, stdlib only: this module must never import a
third-party package) and the host client. Every frame is one JSON object on one line with a
`type` field; decoding validates every field, so neither side acts on a malformed frame.

Host -> guest: run, exec, signal, status, ping, shutdown.
Guest -> host: ready, output, exit, status, pong, error.

Output bytes travel base64-encoded in chunks of at most MAX_CHUNK raw bytes, which keeps
every frame far below MAX_FRAME_BYTES.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import json
import types
import typing
from dataclasses import field
from typing import Any, ClassVar, Literal, Union

PROTOCOL_VERSION = 1
AGENT_VERSION = "0.1.0"
PORT_NAME = "org.mxvm.guest.0"
MAX_CHUNK = 16 * 1024
MAX_FRAME_BYTES = 64 * 1024

Stream = Literal["stdout", "stderr"]
MainState = Literal["none", "running", "exited"]


class ProtocolError(ValueError):
    """A frame that is not valid JSON, too large, of an unknown type, or has a bad field."""


_MISSING: Any = object()


@typing.dataclass_transform(frozen_default=True, field_specifiers=(field,))
class _Frame:
    """Base of every frame: an immutable record declared like a dataclass. Not @dataclass
    itself, which compiles six methods per class: a third of a second of a TCG guest's boot
    for the dozen frames here. Fields are the class's annotations, in order."""

    _fields: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = inspect.get_annotations(cls)
        cls._fields = tuple((name, cls.__dict__.get(name, _MISSING)) for name in names)

    def __init__(self, **values: Any) -> None:
        for name, default in self._fields:
            if name in values:
                value = values.pop(name)
            elif isinstance(default, dataclasses.Field):
                value = default.default_factory()  # type: ignore[operator]
            elif default is _MISSING:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
            else:
                value = default
            object.__setattr__(self, name, value)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Frame) or type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # frames hold lists and dicts

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({body})"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self._fields}


class Run(_Frame):
    """Start the allocation's main command (at most one per guest boot)."""

    id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    type: Literal["run"] = "run"


class Exec(_Frame):
    """Run a further command in the running guest."""

    id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    type: Literal["exec"] = "exec"


class Signal(_Frame):
    """Send a signal to the process group of a running command."""

    id: str
    signal: int
    type: Literal["signal"] = "signal"


class StatusRequest(_Frame):
    """Ask for the main command's state (a re-connecting host uses this)."""

    type: Literal["status_request"] = "status_request"


class Ping(_Frame):
    """Liveness probe; answered by Pong (also how a re-connecting host learns the agent is up)."""

    nonce: str = ""
    type: Literal["ping"] = "ping"


class Shutdown(_Frame):
    """Stop every command, sync and power the guest off (the graceful stop path)."""

    grace_s: float = 5.0
    type: Literal["shutdown"] = "shutdown"


class Ready(_Frame):
    """Sent once when the agent starts serving; `boot_s` is the guest uptime at that moment."""

    agent_version: str
    protocol: int
    kernel: str
    boot_s: float
    warnings: list[str] = field(default_factory=list)
    type: Literal["ready"] = "ready"


class Output(_Frame):
    """A chunk of a command's stdout or stderr."""

    id: str
    stream: Stream
    data: str  # base64 of at most MAX_CHUNK bytes
    type: Literal["output"] = "output"

    @classmethod
    def of(cls, cmd_id: str, stream: Stream, raw: bytes) -> Output:
        return cls(id=cmd_id, stream=stream, data=base64.b64encode(raw).decode("ascii"))

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


class Exit(_Frame):
    """A command ended. `code` is 128+N when killed by signal N (then `signal` is N);
    127/126 with `error` set when it could not start (not found / not executable)."""

    id: str
    code: int
    signal: int | None = None
    error: str | None = None
    type: Literal["exit"] = "exit"


class Status(_Frame):
    """Reply to StatusRequest. `main_code` is set once the main command has exited."""

    main_id: str | None
    main_state: MainState
    main_code: int | None
    running: list[str]
    uptime_s: float
    type: Literal["status"] = "status"


class Pong(_Frame):
    """Reply to Ping, with what Ready carries plus the current uptime."""

    nonce: str
    agent_version: str
    protocol: int
    kernel: str
    boot_s: float
    uptime_s: float
    type: Literal["pong"] = "pong"


class Error(_Frame):
    """A request could not be honoured; `id` names the command when there is one."""

    message: str
    id: str | None = None
    type: Literal["error"] = "error"


HostFrame = Run | Exec | Signal | StatusRequest | Ping | Shutdown
GuestFrame = Ready | Output | Exit | Status | Pong | Error
Frame = HostFrame | GuestFrame

HOST_FRAMES: dict[str, type[Any]] = {
    c.type: c for c in (Run, Exec, Signal, StatusRequest, Ping, Shutdown)
}
GUEST_FRAMES: dict[str, type[Any]] = {c.type: c for c in (Ready, Output, Exit, Status, Pong, Error)}


def encode(frame: Frame) -> bytes:
    """One frame as one line of compact JSON, newline included."""
    data = json.dumps(frame.to_dict(), separators=(",", ":"), ensure_ascii=True)
    line = data.encode("ascii") + b"\n"
    if len(line) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(line)} bytes exceeds {MAX_FRAME_BYTES}")
    return line


def decode_host_frame(line: bytes) -> HostFrame:
    frame: HostFrame = _decode(line, HOST_FRAMES)
    return frame


def decode_guest_frame(line: bytes) -> GuestFrame:
    frame: GuestFrame = _decode(line, GUEST_FRAMES)
    if isinstance(frame, Output):
        _check_chunk(frame.data)
    return frame


def _decode(line: bytes, registry: dict[str, type[Any]]) -> Any:
    if len(line) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(line)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("a frame must be a JSON object")
    kind = obj.get("type")
    cls = registry.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown frame type {kind!r}")
    hints = _hints(cls)
    unknown = set(obj) - set(hints)
    if unknown:
        raise ProtocolError(f"{kind}: unknown fields {sorted(unknown)}")
    for name, default in cls._fields:
        if name not in obj:
            if default is _MISSING:
                raise ProtocolError(f"{kind}: missing field {name!r}")
            continue
        if not _conforms(obj[name], hints[name]):
            raise ProtocolError(f"{kind}: bad value for {name!r}: {obj[name]!r:.80}")
    _check_semantics(obj)
    return cls(**obj)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[_Frame]) -> dict[str, Any]:
    """Field name -> type, evaluated once per class (get_type_hints is slow)."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {name: hints[name] for name, _ in cls._fields}
    return _HINTS[cls]


def _conforms(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False


def _check_semantics(obj: dict[str, Any]) -> None:
    """Rules beyond types: a command needs a non-empty argv and ids must be short."""
    if "argv" in obj and not obj["argv"]:
        raise ProtocolError(f"{obj['type']}: argv must not be empty")
    cmd_id = obj.get("id")
    if isinstance(cmd_id, str) and not 0 < len(cmd_id) <= 128:
        raise ProtocolError(f"{obj['type']}: id must be 1..128 characters")
    if obj.get("type") == "signal" and not 0 < obj["signal"] < 65:
        raise ProtocolError("signal: signal number out of range")


def _check_chunk(data: str) -> None:
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ProtocolError(f"output: data is not base64: {exc}") from exc
    if len(raw) > MAX_CHUNK:
        raise ProtocolError(f"output: chunk of {len(raw)} bytes exceeds {MAX_CHUNK}")
