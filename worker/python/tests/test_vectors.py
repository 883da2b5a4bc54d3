"""The SDK's encoders and decoders against the test vectors of PROTOCOL.md,
byte for byte, in both directions; and the ways a frame or payload is refused."""

import json
import os
import socket
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "src"))

from supervisor_worker import protocol  # noqa: E402
from supervisor_worker.protocol import (  # noqa: E402
    MAX_FRAME_LEN,
    Assign,
    AssignData,
    Cancel,
    Cancelled,
    Done,
    Failed,
    FrameDecoder,
    FrameTooLarge,
    Hello,
    ProtocolError,
    Stop,
    Welcome,
)

PROTOCOL_MD = os.path.join(HERE, os.pardir, os.pardir, os.pardir, "protocol", "PROTOCOL.md")

MESSAGES = {
    ("supervisor", "Welcome"): Welcome,
    ("supervisor", "Assign"): Assign,
    ("supervisor", "Cancel"): Cancel,
    ("supervisor", "Stop"): Stop,
    ("supervisor", "AssignData"): AssignData,
    ("worker", "Hello"): Hello,
    ("worker", "Done"): Done,
    ("worker", "Failed"): Failed,
    ("worker", "Cancelled"): Cancelled,
}


def read_vectors(markdown_text):
    """As the document says: the block with the info string `vectors`, one vector
    a line, `direction | name | fields | hex`; `fields` may hold `|`."""
    block = markdown_text.split("```vectors\n", 1)[1].split("```", 1)[0]
    for line in block.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        left, hex_text = line.rsplit("|", 1)
        direction, name, fields = (part.strip() for part in left.split("|", 2))
        yield direction, name, json.loads(fields), bytes.fromhex(hex_text.replace(" ", ""))


def build(direction, name, fields):
    """The message a vector's fields describe."""
    cls = MESSAGES[(direction, name)]
    kwargs = {}
    for key, value in fields.items():
        if key.endswith("_hex"):
            kwargs[key[: -len("_hex")]] = bytes.fromhex(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_vectors():
    with open(PROTOCOL_MD, encoding="utf-8") as f:
        return list(read_vectors(f.read()))


def decode(direction, payload):
    if direction == "supervisor":
        return protocol.decode_supervisor_message(payload)
    return protocol.decode_worker_message(payload)


class Vectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.vectors = load_vectors()

    def test_the_block_is_found_and_covers_every_message(self):
        self.assertGreaterEqual(len(self.vectors), 20)
        seen = {(direction, name) for direction, name, _, _ in self.vectors}
        self.assertEqual(seen, set(MESSAGES))

    def test_every_vector_encodes_to_its_bytes(self):
        for direction, name, fields, frame in self.vectors:
            with self.subTest(direction=direction, name=name, fields=fields):
                message = build(direction, name, fields)
                self.assertEqual(protocol.encode(message).hex(), frame.hex())

    def test_every_vector_decodes_to_its_fields(self):
        for direction, name, fields, frame in self.vectors:
            with self.subTest(direction=direction, name=name, fields=fields):
                decoder = FrameDecoder()
                decoder.feed(frame)
                payload = decoder.next_payload()
                self.assertIsNotNone(payload)
                self.assertEqual(decoder.buffered(), 0)
                self.assertEqual(len(payload), len(frame) - 4)
                message = decode(direction, payload)
                self.assertIs(type(message), MESSAGES[(direction, name)])
                self.assertEqual(message, build(direction, name, fields))
                for key, value in fields.items():
                    if key.endswith("_hex"):
                        self.assertEqual(getattr(message, key[:-4]).hex(), value)
                    else:
                        self.assertEqual(getattr(message, key), value)

    def test_the_fast_worker_encoders_give_the_same_bytes(self):
        for direction, name, fields, frame in self.vectors:
            if direction != "worker":
                continue
            with self.subTest(name=name, fields=fields):
                if name == "Hello":
                    got = protocol.encode_hello(fields["protocol_version"], fields["pid"])
                elif name == "Done":
                    got = protocol.encode_done(
                        fields["index"], fields["elapsed_ns"], bytes.fromhex(fields["output_hex"])
                    )
                elif name == "Failed":
                    got = protocol.encode_failed(fields["index"], fields["error"])
                else:
                    got = protocol.encode_cancelled(fields["index"])
                self.assertEqual(got.hex(), frame.hex())

    def test_frames_back_to_back_and_in_pieces_come_out_whole(self):
        stream = b"".join(frame for _, _, _, frame in self.vectors)
        expected = [frame[4:] for _, _, _, frame in self.vectors]
        for step in (1, 3, 7, 64, len(stream)):
            with self.subTest(step=step):
                decoder = FrameDecoder()
                got = []
                for at in range(0, len(stream), step):
                    decoder.feed(stream[at : at + step])
                    while True:
                        payload = decoder.next_payload()
                        if payload is None:
                            break
                        got.append(payload)
                self.assertEqual(got, expected)
                self.assertEqual(decoder.buffered(), 0)


def supervisor_payload(fields_hex):
    return bytes.fromhex(fields_hex.replace(" ", ""))


    def test_assigns_at_the_head_are_taken_whole_and_the_rest_left_in_order(self):
        first, second, third = Assign(1, 10, 20, 1, 10), Assign(2, 20, 30, 2, 20), Assign(3, 30, 40, 1, 30)
        stream = b"".join(protocol.encode(m) for m in (first, second, Cancel(2), third))
        decoder = FrameDecoder()
        decoder.feed(stream[:-5])
        taken = decoder.take_assigns()
        self.assertEqual([Assign(*t[2:]) for t in taken], [first, second])
        self.assertEqual(decoder.take_assigns(), [])
        self.assertEqual(protocol.decode_supervisor_message(decoder.next_payload()), Cancel(2))
        self.assertEqual(decoder.take_assigns(), [])  # the third is not whole yet
        decoder.feed(stream[-5:])
        self.assertEqual([Assign(*t[2:]) for t in decoder.take_assigns()], [third])
        self.assertEqual(decoder.buffered(), 0)


class Refusals(unittest.TestCase):
    def test_a_header_above_the_cap_is_refused_before_the_payload(self):
        decoder = FrameDecoder()
        decoder.feed((MAX_FRAME_LEN + 1).to_bytes(4, "little"))
        with self.assertRaises(FrameTooLarge) as caught:
            decoder.next_payload()
        self.assertEqual(caught.exception.length, MAX_FRAME_LEN + 1)
        self.assertIn("exceeds the limit", str(caught.exception))

        # On a socket: only the header is there, and no payload will ever come.
        # The read is refused at once instead of waiting for the payload.
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.settimeout(10)
            ours.sendall(b"\xff\xff\xff\xff")
            with self.assertRaises(FrameTooLarge):
                protocol.read_frame(theirs, FrameDecoder())

    def test_a_header_at_the_cap_waits_for_its_payload(self):
        decoder = FrameDecoder()
        decoder.feed(MAX_FRAME_LEN.to_bytes(4, "little") + b"\x03\x00\x00\x00")
        self.assertIsNone(decoder.next_payload())

    def test_trailing_bytes_are_refused(self):
        for direction, payload in [
            ("supervisor", supervisor_payload("03000000 00")),
            ("supervisor", supervisor_payload("02000000 0700000000000000 00")),
            ("supervisor", supervisor_payload("01000000" + "00" * 36 + "00")),
            ("supervisor", supervisor_payload("00000000 02000000 00000000 0000000000000000 00000000 ff")),
            ("worker", supervisor_payload("00000000 02000000 92100000 00")),
            ("worker", supervisor_payload("03000000 0700000000000000 0000")),
        ]:
            with self.subTest(direction=direction, payload=payload.hex()):
                with self.assertRaisesRegex(ProtocolError, "trailing"):
                    decode(direction, payload)

    def test_unknown_variants_are_refused(self):
        for direction, payload in [
            ("supervisor", supervisor_payload("05000000")),
            ("supervisor", supervisor_payload("ffffffff")),
            ("worker", supervisor_payload("04000000 0700000000000000")),
            # An Input variant beyond Stdin.
            ("supervisor", supervisor_payload("00000000 03000000 00000000 0000000000000000 04000000")),
        ]:
            with self.subTest(direction=direction, payload=payload.hex()):
                with self.assertRaisesRegex(ProtocolError, "unknown variant"):
                    decode(direction, payload)

    def test_invalid_utf8_is_refused(self):
        bad = [
            # params "\xff"
            ("supervisor", "00000000 02000000 00000000 0100000000000000 ff 00000000"),
            # input_path with a lone surrogate encoded as UTF-8
            ("supervisor", "00000000 02000000 00000000 0000000000000000 01000000 0300000000000000 eda080"),
            # Failed error "\xc3" (a character cut short)
            ("worker", "02000000 0500000000000000 0100000000000000 c3"),
        ]
        for direction, text in bad:
            with self.subTest(direction=direction, payload=text):
                with self.assertRaisesRegex(ProtocolError, "UTF-8"):
                    decode(direction, supervisor_payload(text))

    def test_short_payloads_and_lengths_past_the_end_are_refused(self):
        for direction, text in [
            ("supervisor", ""),
            ("supervisor", "0100"),
            ("supervisor", "01000000 0000000000000000"),
            ("supervisor", "02000000 07000000000000"),
            ("supervisor", "00000000 02000000 00000000 0500000000000000 7b7d"),
            ("supervisor", "00000000 02000000 00000000 ffffffffffffffff"),
            ("worker", "01000000 0300000000000000 0000000000000000 0300000000000000 3432"),
            ("worker", "00000000 02000000"),
        ]:
            with self.subTest(direction=direction, payload=text):
                with self.assertRaises(ProtocolError):
                    decode(direction, supervisor_payload(text))

    def test_an_empty_frame_is_an_error(self):
        decoder = FrameDecoder()
        decoder.feed(b"\x00\x00\x00\x00")
        payload = decoder.next_payload()
        self.assertEqual(payload, b"")
        with self.assertRaises(ProtocolError):
            protocol.decode_supervisor_message(payload)

    def test_a_done_too_large_for_a_frame_is_not_encoded(self):
        with self.assertRaises(FrameTooLarge):
            protocol.done_header(0, 0, protocol.MAX_DONE_OUTPUT + 1)
        header = protocol.done_header(0, 0, protocol.MAX_DONE_OUTPUT)
        self.assertEqual(int.from_bytes(header[:4], "little"), MAX_FRAME_LEN)

    def test_fields_out_of_range_are_not_encoded(self):
        with self.assertRaises(ValueError):
            protocol.encode(Hello(2, 2**32))
        with self.assertRaises(ValueError):
            protocol.encode(Assign(-1, 0, 0, 1, 0))
        with self.assertRaises(ValueError):
            protocol.encode(Welcome(2, 0, "{}", "Socket"))


if __name__ == "__main__":
    unittest.main()
