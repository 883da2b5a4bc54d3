"""The wire protocol, version 3: every byte of the layout lives in this module.

See ``protocol/PROTOCOL.md`` in the repository (normative). A frame is a u32
little-endian payload length ``N`` (at most :data:`MAX_FRAME_LEN`) followed by
``N`` bytes holding exactly one message: bincode's fixed-width little-endian
encoding, that is an enum's variant index as a u32 and then its fields; strings
and bytes are a u64 length then the bytes.

Both directions have an encoder and a decoder, so that the test vectors can be
checked both ways; the worker itself only encodes :class:`WorkerMessage` values
and decodes :class:`SupervisorMessage` values.
"""

from __future__ import annotations

import struct

# Annotations only: `typing` and `dataclasses` (with the `inspect`, `enum`
# and `re` they pull in) would add tens of milliseconds to every worker's
# start, which a short job pays once per worker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_FRAME_LEN",
    "WORKER_FD_ENV",
    "MAX_DONE_OUTPUT",
    "MAX_FAILED_ERROR",
    "ProtocolError",
    "FrameTooLarge",
    "Welcome",
    "Assign",
    "Cancel",
    "Stop",
    "AssignData",
    "Hello",
    "Done",
    "Failed",
    "Cancelled",
    "INPUTS",
    "encode",
    "encode_payload",
    "encode_hello",
    "encode_done",
    "encode_failed",
    "encode_cancelled",
    "decode_supervisor_message",
    "decode_worker_message",
    "FrameDecoder",
    "read_frame",
]

PROTOCOL_VERSION = 3
#: The largest payload a frame may carry: 64 MiB.
MAX_FRAME_LEN = 64 * 1024 * 1024
#: The environment variable naming the worker's end of the socket.
WORKER_FD_ENV = "SUPERVISOR_WORKER_FD"

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Header and the fixed part of each message, the frame length included where
# the message has a fixed size.
_HELLO = struct.Struct("<III")  # variant, protocol_version, pid
_HELLO_FRAME = struct.Struct("<IIII")
_DONE_HEAD = struct.Struct("<IIQQQ")  # frame len, variant, index, elapsed_ns, output len
_FAILED_HEAD = struct.Struct("<IIQQ")  # frame len, variant, index, error len
_CANCELLED_FRAME = struct.Struct("<IIQ")  # frame len, variant, index
_WELCOME_HEAD = struct.Struct("<IIIQ")  # variant, protocol_version, worker_id, params len
_ASSIGN = struct.Struct("<IQQQIQ")  # variant, index, start, end, attempt, first_item
_ASSIGN_FRAME = struct.Struct("<IIQQQIQ")
_ASSIGN_DATA_HEAD = struct.Struct("<IQQQIQQ")  # variant, the Assign's fields, data len
_CANCEL = struct.Struct("<IQ")
_CANCEL_FRAME = struct.Struct("<IIQ")

_DONE_FIXED = _DONE_HEAD.size - 4  # 28
_FAILED_FIXED = _FAILED_HEAD.size - 4  # 20
#: The largest ``output`` a Done can carry.
MAX_DONE_OUTPUT = MAX_FRAME_LEN - _DONE_FIXED
#: The largest ``error`` (in UTF-8 bytes) a Failed can carry.
MAX_FAILED_ERROR = MAX_FRAME_LEN - _FAILED_FIXED
#: The most bytes an AssignData can carry.
MAX_ASSIGN_DATA = MAX_FRAME_LEN - _ASSIGN_DATA_HEAD.size

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

#: The variants of ``Input``, by index; only File and Lines have a path.
INPUTS = ("Range", "File", "Lines", "Stdin")
_INPUTS_WITH_PATH = ("File", "Lines")


class ProtocolError(Exception):
    """Bytes that are not a valid frame or message."""


class FrameTooLarge(ProtocolError):
    """A frame header announcing more than :data:`MAX_FRAME_LEN` bytes."""

    def __init__(self, length: int):
        super().__init__(
            f"a frame of {length} bytes exceeds the limit of {MAX_FRAME_LEN} bytes"
        )
        self.length = length


# Supervisor -> worker ------------------------------------------------------


class _Message:
    """Equality and repr over ``__slots__``, as a dataclass would give them."""

    __slots__ = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None

    def __repr__(self):
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Welcome(_Message):
    """``input`` is "Range", "File", "Lines" or "Stdin", as the variant is named
    in the document; ``input_path`` the input file of a File or Lines job, else
    None."""

    __slots__ = ("protocol_version", "worker_id", "params", "input", "input_path")

    def __init__(self, protocol_version: int, worker_id: int, params: str,
                 input: str = "Range", input_path: "Optional[str]" = None):
        self.protocol_version = protocol_version
        self.worker_id = worker_id
        self.params = params
        self.input = input
        self.input_path = input_path


class Assign(_Message):
    __slots__ = ("index", "start", "end", "attempt", "first_item")

    def __init__(self, index: int, start: int, end: int, attempt: int, first_item: int):
        self.index = index
        self.start = start
        self.end = end
        self.attempt = attempt
        self.first_item = first_item


class AssignData(_Message):
    """An Assign with the chunk's bytes (a ``stdin`` job): ``data``."""

    __slots__ = ("index", "start", "end", "attempt", "first_item", "data")

    def __init__(self, index: int, start: int, end: int, attempt: int, first_item: int,
                 data: bytes):
        self.index = index
        self.start = start
        self.end = end
        self.attempt = attempt
        self.first_item = first_item
        self.data = data


class Cancel(_Message):
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


class Stop(_Message):
    __slots__ = ()


# Worker -> supervisor ------------------------------------------------------


class Hello(_Message):
    __slots__ = ("protocol_version", "pid")

    def __init__(self, protocol_version: int, pid: int):
        self.protocol_version = protocol_version
        self.pid = pid


class Done(_Message):
    __slots__ = ("index", "elapsed_ns", "output")

    def __init__(self, index: int, elapsed_ns: int, output: bytes):
        self.index = index
        self.elapsed_ns = elapsed_ns
        self.output = output


class Failed(_Message):
    __slots__ = ("index", "error")

    def __init__(self, index: int, error: str):
        self.index = index
        self.error = error


class Cancelled(_Message):
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


SupervisorMessage = "Union[Welcome, Assign, Cancel, Stop, AssignData]"
WorkerMessage = "Union[Hello, Done, Failed, Cancelled]"


# Encoding ------------------------------------------------------------------


def _check(value: int, limit: int, what: str) -> None:
    if not 0 <= value <= limit:
        raise ValueError(f"{what} {value} does not fit in {limit.bit_length()} bits")


def _frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LEN:
        raise FrameTooLarge(len(payload))
    return _U32.pack(len(payload)) + payload


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U64.pack(len(data)) + data


def encode_hello(protocol_version: int, pid: int) -> bytes:
    """The whole Hello frame: always 16 bytes."""
    return _HELLO_FRAME.pack(_HELLO.size, 0, protocol_version, pid)


def done_header(index: int, elapsed_ns: int, output_len: int) -> bytes:
    """The frame header and fixed fields of a Done; the output follows it.

    Raises :class:`FrameTooLarge` when the output does not fit in a frame.
    """
    if output_len > MAX_DONE_OUTPUT:
        raise FrameTooLarge(_DONE_FIXED + output_len)
    return _DONE_HEAD.pack(_DONE_FIXED + output_len, 1, index, elapsed_ns, output_len)


def encode_done(index: int, elapsed_ns: int, output: bytes) -> bytes:
    return done_header(index, elapsed_ns, len(output)) + output


def encode_failed(index: int, error: str) -> bytes:
    data = error.encode("utf-8")
    if len(data) > MAX_FAILED_ERROR:
        raise FrameTooLarge(_FAILED_FIXED + len(data))
    return _FAILED_HEAD.pack(_FAILED_FIXED + len(data), 2, index, len(data)) + data


def encode_cancelled(index: int) -> bytes:
    return _CANCELLED_FRAME.pack(_CANCELLED_FRAME.size - 4, 3, index)


def encode_payload(message) -> bytes:
    """The payload of one message of either direction (no frame header).

    Raises ValueError for a field out of its type's range or an unknown input.
    """
    kind = type(message)
    if kind is Welcome:
        _check(message.protocol_version, _U32_MAX, "protocol_version")
        _check(message.worker_id, _U32_MAX, "worker_id")
        parts = [
            _U32.pack(0),
            _U32.pack(message.protocol_version),
            _U32.pack(message.worker_id),
            _string(message.params),
        ]
        try:
            variant = INPUTS.index(message.input)
        except ValueError:
            raise ValueError(f"unknown input {message.input!r}; one of {INPUTS}") from None
        parts.append(_U32.pack(variant))
        if message.input in _INPUTS_WITH_PATH:
            if message.input_path is None:
                raise ValueError(f"a {message.input} input needs input_path")
            parts.append(_string(message.input_path))
        elif message.input_path is not None:
            raise ValueError(f"a {message.input} input has no input_path")
        return b"".join(parts)
    if kind is Assign:
        for name in ("index", "start", "end", "first_item"):
            _check(getattr(message, name), _U64_MAX, name)
        _check(message.attempt, _U32_MAX, "attempt")
        return _ASSIGN.pack(
            1, message.index, message.start, message.end, message.attempt, message.first_item
        )
    if kind is Cancel:
        _check(message.index, _U64_MAX, "index")
        return _CANCEL.pack(2, message.index)
    if kind is Stop:
        return _U32.pack(3)
    if kind is AssignData:
        for name in ("index", "start", "end", "first_item"):
            _check(getattr(message, name), _U64_MAX, name)
        _check(message.attempt, _U32_MAX, "attempt")
        data = bytes(message.data)
        return _ASSIGN_DATA_HEAD.pack(
            4, message.index, message.start, message.end, message.attempt,
            message.first_item, len(data),
        ) + data
    if kind is Hello:
        _check(message.protocol_version, _U32_MAX, "protocol_version")
        _check(message.pid, _U32_MAX, "pid")
        return _HELLO.pack(0, message.protocol_version, message.pid)
    if kind is Done:
        _check(message.index, _U64_MAX, "index")
        _check(message.elapsed_ns, _U64_MAX, "elapsed_ns")
        return _U32.pack(1) + _U64.pack(message.index) + _U64.pack(message.elapsed_ns) + (
            _U64.pack(len(message.output)) + bytes(message.output)
        )
    if kind is Failed:
        _check(message.index, _U64_MAX, "index")
        return _U32.pack(2) + _U64.pack(message.index) + _string(message.error)
    if kind is Cancelled:
        _check(message.index, _U64_MAX, "index")
        return _U32.pack(3) + _U64.pack(message.index)
    raise TypeError(f"not a protocol message: {message!r}")


def encode(message) -> bytes:
    """The whole frame of one message of either direction, header included."""
    return _frame(encode_payload(message))


# Decoding ------------------------------------------------------------------


class _Reader:
    """A cursor over one payload; every read checks the payload's end."""

    __slots__ = ("data", "pos")

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def _take(self, n: int, what: str) -> int:
        pos = self.pos
        if n > len(self.data) - pos:
            raise ProtocolError(
                f"malformed message: the payload ends early (at byte {len(self.data)}, "
                f"reading {what}, {n} bytes at byte {pos})"
            )
        self.pos = pos + n
        return pos

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.data, self._take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.data, self._take(8, what))[0]

    def raw(self, what: str) -> bytes:
        length = self.u64(f"the length of {what}")
        if length > len(self.data) - self.pos:
            raise ProtocolError(
                f"malformed message: the length of {what} ({length} bytes) points past "
                f"the end of the payload ({len(self.data)} bytes)"
            )
        pos = self._take(length, what)
        return bytes(self.data[pos : pos + length])

    def string(self, what: str) -> str:
        data = self.raw(what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"malformed message: {what} is not UTF-8 ({e})") from None

    def variant(self, enum: str, count: int) -> int:
        variant = self.u32(f"the variant of {enum}")
        if variant >= count:
            raise ProtocolError(
                f"malformed message: unknown variant {variant} of {enum} "
                f"(it has {count})"
            )
        return variant

    def end(self) -> None:
        extra = len(self.data) - self.pos
        if extra:
            raise ProtocolError(
                f"malformed message: {extra} trailing bytes after a message of {self.pos} bytes"
            )


def decode_supervisor_message(payload) -> SupervisorMessage:
    """Decodes one payload from the supervisor; raises :class:`ProtocolError`."""
    # The hot path first: an Assign is 40 bytes exactly.
    if len(payload) == _ASSIGN.size:
        variant, index, start, end, attempt, first_item = _ASSIGN.unpack(payload)
        if variant == 1:
            return Assign(index, start, end, attempt, first_item)
    r = _Reader(payload)
    variant = r.variant("SupervisorMessage", 5)
    if variant == 0:
        version = r.u32("protocol_version")
        worker_id = r.u32("worker_id")
        params = r.string("params")
        input_name = INPUTS[r.variant("Input", len(INPUTS))]
        path = r.string("input_path") if input_name in _INPUTS_WITH_PATH else None
        message = Welcome(version, worker_id, params, input_name, path)
    elif variant == 1:
        message = Assign(
            r.u64("index"),
            r.u64("start"),
            r.u64("end"),
            r.u32("attempt"),
            r.u64("first_item"),
        )
    elif variant == 2:
        message = Cancel(r.u64("index"))
    elif variant == 3:
        message = Stop()
    else:
        message = AssignData(
            r.u64("index"),
            r.u64("start"),
            r.u64("end"),
            r.u32("attempt"),
            r.u64("first_item"),
            r.raw("data"),
        )
    r.end()
    return message


def decode_worker_message(payload) -> WorkerMessage:
    """Decodes one payload from a worker; raises :class:`ProtocolError`."""
    r = _Reader(payload)
    variant = r.variant("WorkerMessage", 4)
    if variant == 0:
        message = Hello(r.u32("protocol_version"), r.u32("pid"))
    elif variant == 1:
        message = Done(r.u64("index"), r.u64("elapsed_ns"), r.raw("output"))
    elif variant == 2:
        message = Failed(r.u64("index"), r.string("error"))
    else:
        message = Cancelled(r.u64("index"))
    r.end()
    return message


# Framing -------------------------------------------------------------------


class FrameDecoder:
    """Cuts a byte stream into frame payloads.

    :meth:`feed` appends bytes as they arrive; :meth:`next_payload` returns the
    next complete payload, or None while it is incomplete. The header is checked
    against the cap as soon as its 4 bytes are in, before anything of the
    payload is awaited or buffered.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data) -> None:
        self._buf += data

    def buffered(self) -> int:
        """Bytes received and not yet returned as payloads."""
        return len(self._buf) - self._pos

    def take_assigns(self) -> list:
        """Consumes the Assign frames at the head of the buffer, returning
        each one's ``(frame length, variant, index, start, end, attempt,
        first_item)``: the worker's hot path, without a payload copy or a
        message object per chunk. Stops at the first frame that is not a
        whole Assign, for :meth:`next_payload`."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        size = _ASSIGN_FRAME.size
        unpack = _ASSIGN_FRAME.unpack_from
        taken = []
        while end - pos >= size:
            fields = unpack(buf, pos)
            if fields[0] != _ASSIGN.size or fields[1] != 1:
                break
            taken.append(fields)
            pos += size
        if taken:
            if pos == end:
                buf.clear()
                self._pos = 0
            else:
                self._pos = pos
        return taken

    def next_payload(self) -> Optional[bytes]:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available >= 4:
            (length,) = _U32.unpack_from(buf, pos)
            if length > MAX_FRAME_LEN:
                raise FrameTooLarge(length)
            if available >= 4 + length:
                end = pos + 4 + length
                payload = bytes(buf[pos + 4 : end])
                if end == len(buf):
                    buf.clear()
                    self._pos = 0
                else:
                    self._pos = end
                return payload
        if pos:
            del buf[:pos]
            self._pos = 0
        return None


def read_frame(sock, decoder: FrameDecoder, bufsize: int = 65536) -> Optional[bytes]:
    """Blocks until a whole frame's payload is in and returns it; None at the end
    of the stream (also in the middle of a frame: the peer is gone either way).

    ``sock`` needs ``recv``. Raises :class:`FrameTooLarge` as soon as a header
    above the cap is seen, without reading the payload.
    """
    while True:
        payload = decoder.next_payload()
        if payload is not None:
            return payload
        data = sock.recv(bufsize)
        if not data:
            return None
        decoder.feed(data)
