"""Protobuf fields newer than the generated classes we have, added at the wire level.

``xds-protos`` can lag behind the Envoy binary: a field Envoy 1.40 reads may
be missing from the Python class. Serialised protobuf messages concatenate
(a later field is simply merged in), so such fields are appended as raw
length-delimited or varint fields to the serialised message. Envoy parses
them with its own, newer schema.
"""

from __future__ import annotations

from google.protobuf.message import Message

SMALL_VARINTS = [bytes((i,)) for i in range(128)]  # the one-byte varints, made once


def varint(value: int) -> bytes:
    """``value`` (non-negative) as a protobuf base-128 varint."""
    if value < 128:
        return SMALL_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return varint((field_number << 3) | 2) + varint(len(payload)) + payload


def field_head(field_number: int, size: int) -> bytes:
    """The tag and length of a length-delimited field of ``size`` bytes (the payload is
    written after it: ``length_delimited`` without copying the payload)."""
    return varint((field_number << 3) | 2) + varint(size)


def message_field(field_number: int, message: Message) -> bytes:
    return length_delimited(field_number, message.SerializeToString(deterministic=True))


def string_field(field_number: int, value: str) -> bytes:
    return length_delimited(field_number, value.encode())
