"""`gateway.ws_frames`: the audio path's frames, read and written, against websockets' own core."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from gateway.ws_frames import MaskKeys, frame_bounds, masked_text_frame, unmasked


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_frame_written_here_is_read_by_websockets_as_the_same_text(size: int) -> None:
    payload = os.urandom(size // 2).hex().encode()[:size]
    server = Protocol(Side.SERVER)
    server.receive_data(masked_text_frame(payload, MaskKeys().next()))
    [frame] = server.events_received()
    assert isinstance(frame, Frame) and frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data == payload


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 100_000])
def test_the_bounds_and_payload_of_a_websockets_client_frame(size: int) -> None:
    client = Protocol(Side.CLIENT)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    client.send_binary(payload)
    data = b"junk" + b"".join(client.data_to_send())
    bounds = frame_bounds(data, 4)
    assert bounds is not None
    start, end = bounds
    assert end == len(data)
    assert unmasked(data, start, end) == payload


def test_bounds_wait_for_the_whole_header_then_tell_where_the_frame_ends() -> None:
    client = Protocol(Side.CLIENT)
    client.send_text(b"y" * 70_000)
    data = b"".join(client.data_to_send())
    assert frame_bounds(data[:1], 0) is None
    assert frame_bounds(data[:9], 0) is None  # a 64-bit length needs ten bytes
    assert frame_bounds(data[:10], 0) == (14, 14 + 70_000)  # known before the payload is in


def test_mask_keys_are_four_fresh_bytes_each_and_the_pool_refills() -> None:
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(MaskKeys.PAGE // 4 * 2 + 3)]
    assert all(len(key) == 4 for key in drawn)
    assert len(set(drawn)) > len(drawn) * 0.99  # random: a repeat among 2051 is unlikely, not impossible
