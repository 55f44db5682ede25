"""Property tests of the host codec: round trips of any body and any field values,
and arbitrary byte streams that never make the decoder raise or depend on how the
bytes were chunked."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from host.wire import framing, messages
from protocol import catalog, layout

bodies = st.binary(min_size=catalog.HEADER_LEN, max_size=catalog.MAX_BODY)
streams = st.lists(
    st.one_of(
        bodies.map(framing.encode_frame),
        st.binary(max_size=400),
        st.just(b"\x00"),
        bodies.map(lambda b: framing.encode_frame(b)[: len(b) // 2]),
    ),
    max_size=8,
).map(b"".join)


@given(bodies)
def test_any_body_round_trips(body: bytes) -> None:
    wire = framing.encode_frame(body)
    assert wire.count(0) == 1 and wire.endswith(b"\x00")
    assert len(wire) <= catalog.MAX_ENCODED + 1
    assert framing.StreamDecoder().feed(wire) == [body]


@given(streams, st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8))
def test_stream_decoder_never_raises_and_ignores_chunking(stream: bytes, cuts: list[int]) -> None:
    whole = framing.StreamDecoder()
    expected = whole.feed_classified(stream)
    pieces = framing.StreamDecoder()
    got: list[tuple[framing.Verdict, bytes | None]] = []
    position, i = 0, 0
    while position < len(stream):
        step = cuts[i % len(cuts)]
        got += pieces.feed_classified(stream[position : position + step])
        position += step
        i += 1
    assert got == expected
    for verdict, body in expected:
        assert (verdict is framing.Verdict.GOOD) == (body is not None)
        if body is not None:
            assert catalog.HEADER_LEN <= len(body) <= catalog.MAX_BODY


def _strategy_for(compiled: layout.Compiled) -> st.SearchStrategy[dict[str, Any]]:
    fixed: dict[str, st.SearchStrategy[Any]] = {}
    for name, code in zip(compiled.names, compiled.codes, strict=True):
        if code in layout.RANGES:
            low, high = layout.RANGES[code]
            fixed[name] = st.integers(low, high)
        else:
            fixed[name] = st.binary(min_size=int(code[:-1]), max_size=int(code[:-1]))
    base = st.fixed_dictionaries(fixed)
    if compiled.group is not None:
        group_name, count_index, element = compiled.group
        count_name = compiled.names[count_index]
        room = (catalog.MAX_BODY - catalog.HEADER_LEN - catalog.AUTH_LEN - compiled.size) // element.size
        items = st.lists(_strategy_for(element), max_size=min(room, 10))
        return st.tuples(base, items).map(lambda t: {**t[0], count_name: len(t[1]), group_name: t[1]})
    if compiled.tail is not None:
        tail_name = compiled.tail
        room = catalog.MAX_BODY - catalog.HEADER_LEN - compiled.size
        return st.tuples(base, st.binary(max_size=room)).map(lambda t: {**t[0], tail_name: t[1]})
    return base


LAYOUTS = [
    (message, response, compiled)
    for message in messages.MESSAGES.values()
    for response, compiled in ((False, message.request), (True, message.response))
    if compiled is not None
]


@given(st.data())
@settings(max_examples=300)
def test_every_layout_round_trips_any_values(data: st.DataObject) -> None:
    message, response, compiled = data.draw(st.sampled_from(LAYOUTS))
    fields = data.draw(_strategy_for(compiled))
    payload = messages.encode_payload(message, fields, response=response)
    assert compiled.unpack(payload, 0, len(payload)) == fields
    flags = catalog.FLAG_RESPONSE if response else 0
    frame = messages.Frame(1, 0, message.type, 7, payload, flags)
    assert messages.parse_body(frame.to_body()).fields() == fields


@given(st.integers(), st.sampled_from(sorted(layout.RANGES)))
def test_out_of_range_values_are_refused_not_truncated(value: int, code: str) -> None:
    low, high = layout.RANGES[code]
    if low <= value <= high:
        assert layout.check_value("x", code, value) == value
    else:
        try:
            layout.check_value("x", code, value)
        except layout.LayoutError as exc:
            assert "x=" in str(exc)
        else:
            raise AssertionError("an out-of-range value was accepted")
