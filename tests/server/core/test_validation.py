"""Request options and limits, as the broker checks them before it queues anything."""

from __future__ import annotations

import pytest

from zeroembed.client.protocol import ErrorCode, Request
from zeroembed.server.core.validation import RequestRejected, check_limits, parse_options


def options(**fields):
    return parse_options(Request({"v": 1, "id": "r", "op": "encode", **fields}))


def test_absent_options_take_their_defaults():
    got = options()
    assert (got.output, got.normalize, got.truncate, got.show_tokens, got.is_tokenized) == \
        ("sentence", None, True, False, False)


def test_given_options_are_read():
    got = options(output="tokens", normalize=False, truncate=False, show_tokens=True, is_tokenized=True)
    assert (got.output, got.normalize, got.truncate, got.show_tokens, got.is_tokenized) == \
        ("tokens", False, False, True, True)


@pytest.mark.parametrize(("field", "value"), [
    ("truncate", 1), ("truncate", "yes"), ("normalize", 0), ("output", "words"), ("output", None),
    ("show_tokens", [True]), ("is_tokenized", {"a": 1}),
])
def test_a_bad_value_is_refused_naming_its_field(field, value):
    with pytest.raises(RequestRejected) as caught:
        options(**{field: value})
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    assert repr(field) in caught.value.message


def test_limits_name_the_limit_and_the_text():
    assert check_limits(["ab", "cde", ["fg", "h"]], max_texts=3, max_chars=3) == 8
    with pytest.raises(RequestRejected) as caught:
        check_limits(["a"] * 4, max_texts=3, max_chars=10)
    assert caught.value.code == ErrorCode.LIMIT_EXCEEDED and "limit is 3" in caught.value.message
    with pytest.raises(RequestRejected) as caught:
        check_limits(["ok", "too long"], max_texts=3, max_chars=5)
    assert caught.value.index == 1 and "texts[1] has 8 characters" in caught.value.message
