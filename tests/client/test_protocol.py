"""Wire protocol v1: round trips, refusals, and fuzzing that only ProtocolError ever escapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeroembed.client import errors
from zeroembed.client.protocol import (
    PROTOCOL_VERSION,
    EncodeOptions,
    ErrorCode,
    Op,
    Output,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    status_request,
)

pytestmark = pytest.mark.timeout(60)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_encode_request_round_trip():
    options = EncodeOptions(Output.TOKENS, normalize=False, truncate=False, show_tokens=True)
    request = decode_request(encode_request("id-1", ["héllo", "", "✓ wörld"], options))
    assert request.id == "id-1" and request.op == Op.ENCODE
    assert request.texts == ["héllo", "", "✓ wörld"]
    assert request.header == {
        "v": PROTOCOL_VERSION, "id": "id-1", "op": "encode",
        "output": "tokens", "normalize": False, "truncate": False, "show_tokens": True,
    }


def test_status_request_round_trip():
    request = decode_request(status_request("s"))
    assert (request.id, request.op, request.texts) == ("s", Op.STATUS, [])


def test_reply_round_trip_with_fields_and_dtypes():
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], np.int64), np.zeros((0, 4), np.float16)]
    reply = decode_reply(encode_reply("r", arrays, lengths=[1, 2], num_tokens=3))
    assert reply.ok and reply.id == "r" and reply.error is None
    assert reply.header["lengths"] == [1, 2] and reply.header["num_tokens"] == 3
    for sent, got in zip(arrays, reply.arrays):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)


@pytest.mark.parametrize("index", [None, 4])
def test_error_round_trip(index):
    reply = decode_reply(encode_error("e", ErrorCode.TEXT_TOO_LONG, "text 4 is too long", index))
    assert not reply.ok and reply.arrays == []
    assert reply.error == {"code": "text_too_long", "message": "text 4 is too long", **({"index": 4} if index else {})}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_to_an_exception(code):
    exc = errors.error_for(code.value, "m", 2)
    assert isinstance(exc, errors.ZeroEmbedError) and exc.code == code and exc.index == 2
    assert isinstance(errors.error_for("no_such_code", "m"), errors.ServerError)


@pytest.mark.parametrize("dtype", [">f4", "<f4"])
def test_big_endian_and_strided_arrays_go_on_the_wire_little_endian_c_order(dtype):
    array = np.arange(6, dtype=dtype).reshape(2, 3).T
    header, buffer = encode_reply("b", [array])
    assert json.loads(header)["arrays"] == [{"dtype": "<f4", "shape": [3, 2]}]
    assert bytes(buffer) == np.ascontiguousarray(array, dtype="<f4").tobytes()
    np.testing.assert_array_equal(decode_reply([header, buffer]).arrays[0], array)


def test_encode_reply_refuses_dtypes_off_the_wire():
    with pytest.raises(ValueError, match="cannot go on the wire"):
        encode_reply("x", [np.zeros(2, np.float64)])


def _reply(arrays, *buffers):
    return [json.dumps({"v": 1, "id": "x", "ok": True, "arrays": arrays}).encode(), *buffers]


@pytest.mark.parametrize(
    "frames",
    [
        _reply([{"dtype": "<f4", "shape": [2, 2]}], b"\0" * 12),  # buffer too short
        _reply([{"dtype": "<f4", "shape": [1]}], b"\0" * 3),  # not a whole element
        _reply([{"dtype": "<f8", "shape": [1]}], b"\0" * 8),  # dtype not allowed
        _reply([{"dtype": ">f4", "shape": [1]}], b"\0" * 4),  # big-endian on the wire
        _reply([{"dtype": "<f4", "shape": [-1]}], b"\0" * 4),
        _reply([{"dtype": "<f4", "shape": [True]}], b"\0" * 4),
        _reply([{"dtype": "<f4", "shape": [2**70]}], b"\0" * 4),
        _reply([{"dtype": "<f4", "shape": [1] * 70}], b"\0" * 4),
        _reply([{"dtype": "<f4", "shape": [1]}]),  # array without its buffer
        _reply([], b"extra"),
        _reply(None),
        _reply({"dtype": "<f4"}),
        [b'{"v":2,"id":"x","ok":true,"arrays":[]}'],
        [b'{"v":true,"id":"x","ok":true,"arrays":[]}'],
        [b'{"v":1,"id":"x","ok":false}'],
        [b'{"v":1,"id":"x","ok":false,"error":{"code":"busy","index":"3"}}'],
        [b"not json"],
        [],
    ],
)
def test_bad_replies_are_refused(frames):
    with pytest.raises(ProtocolError):
        decode_reply(frames)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([], ErrorCode.MALFORMED),
        ([b"\xff"], ErrorCode.MALFORMED),
        ([b"[1]"], ErrorCode.MALFORMED),
        ([b'{"v":2,"id":"a","op":"status"}'], ErrorCode.UNSUPPORTED_VERSION),
        ([b'{"id":"a","op":"status"}'], ErrorCode.UNSUPPORTED_VERSION),
        ([b'{"v":true,"id":"a","op":"status"}'], ErrorCode.UNSUPPORTED_VERSION),
        ([b'{"v":1,"id":"","op":"status"}'], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"' + b"a" * 65 + b'","op":"status"}'], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"a","op":"train"}'], ErrorCode.INVALID_REQUEST),
        ([b'{"v":1,"id":"a","op":["encode"]}'], ErrorCode.INVALID_REQUEST),
        ([b'{"v":1,"id":"a","op":"status"}', b"[]"], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"a","op":"encode"}'], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"a","op":"encode"}', b'{"a":1}'], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"a","op":"encode"}', b'["a",1]'], ErrorCode.INVALID_REQUEST),
        ([b'{"v":1,"id":"a","op":"encode"}', b"1" * 5000], ErrorCode.MALFORMED),
        ([b'{"v":1,"id":"a","op":"encode"}', b"[" * 100000], ErrorCode.MALFORMED),
    ],
)
def test_malformed_requests_raise_protocol_error_with_code(frames, code):
    with pytest.raises(ProtocolError) as info:
        decode_request(frames)
    assert info.value.code == code


def test_protocol_error_names_the_request_when_the_header_does():
    with pytest.raises(ProtocolError) as info:
        decode_request([b'{"v":2,"id":"abc","op":"encode"}', b"[]"])
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION and info.value.request_id == "abc"
    with pytest.raises(ProtocolError) as info:
        decode_request([b"not json"])
    assert info.value.request_id is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
# Headers close enough to valid that the fuzz gets past the first checks.
headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 2, True, 1.0, "1", None]),
        "id": st.text(max_size=70) | json_values,
        "op": st.sampled_from(["encode", "status"]) | json_values,
        "ok": st.booleans() | json_values,
        "arrays": st.lists(
            st.fixed_dictionaries({}, optional={"dtype": st.sampled_from(["<f4", "<i8", "<f8", "x"]) | json_values,
                                                "shape": st.lists(st.integers(-2, 2**66), max_size=3) | json_values}),
            max_size=3,
        ) | json_values,
        "error": st.fixed_dictionaries({}, optional={"code": st.text(max_size=6) | json_values,
                                                     "message": json_values, "index": json_values}) | json_values,
    },
).map(lambda h: json.dumps(h).encode())
frames_lists = st.lists(st.binary(max_size=40) | headers | json_values.map(lambda v: json.dumps(v).encode()), max_size=4)


@FUZZ
@given(frames_lists)
def test_fuzz_decode_request_raises_only_protocol_error(frames):
    try:
        decode_request(frames)
    except ProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=4))
def test_fuzz_decode_request_on_random_bytes(frames):
    try:
        decode_request(frames)
    except ProtocolError:
        pass


@FUZZ
@given(headers, st.lists(st.binary(max_size=24), max_size=3))
def test_fuzz_decode_reply_raises_only_protocol_error(header, buffers):
    try:
        decode_reply([header, *buffers])
    except ProtocolError:
        pass
