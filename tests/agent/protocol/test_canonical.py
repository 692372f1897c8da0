"""Canonical JSON: the exact bytes that are signed, and the strict parser."""

import hashlib

import pytest

from agent.protocol.canonical import DEFAULT_MAX_BYTES, MAX_DEPTH, canonical_bytes, canonical_sha256, parse_json
from agent.protocol.errors import DocumentTooLargeError, DuplicateKeyError, MalformedDocumentError


def test_canonical_bytes_sort_keys_and_drop_whitespace() -> None:
    assert canonical_bytes({"b": [1, {"d": None, "c": True}], "a": "x"}) == b'{"a":"x","b":[1,{"c":true,"d":null}]}'


def test_canonical_bytes_are_utf8_not_escaped() -> None:
    assert canonical_bytes({"name": "café ✓"}) == '{"name":"café ✓"}'.encode()


def test_canonical_sha256_is_the_hash_of_the_canonical_bytes() -> None:
    document = {"z": 1, "a": [2, 3]}
    assert canonical_sha256(document) == hashlib.sha256(b'{"a":[2,3],"z":1}').hexdigest()


def test_canonical_bytes_ignore_insertion_order() -> None:
    assert canonical_bytes({"a": 1, "b": 2}) == canonical_bytes({"b": 2, "a": 1})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"bytes", "\ud800"])
def test_canonical_bytes_refuse_what_json_cannot_carry(value: object) -> None:
    with pytest.raises(MalformedDocumentError):
        canonical_bytes({"value": value})


def test_parse_round_trips_canonical_bytes() -> None:
    document = {"a": [1, 2.5, None, True, "é"], "b": {"c": -3}}
    assert parse_json(canonical_bytes(document)) == document
    assert parse_json(canonical_bytes(document).decode()) == document


@pytest.mark.parametrize("data", [b'{"a":1,"a":2}', b'{"x":{"k":1,"k":1}}', b'[{"a":1},{"b":1,"b":2}]'])
def test_duplicate_keys(data: bytes) -> None:
    with pytest.raises(DuplicateKeyError):
        parse_json(data)


@pytest.mark.parametrize("data", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'[1e400]', b'[-1e999]'])
def test_non_finite_numbers(data: bytes) -> None:
    with pytest.raises(MalformedDocumentError, match="non-finite"):
        parse_json(data)


def test_integers_too_long_to_convert() -> None:
    with pytest.raises(MalformedDocumentError):
        parse_json(b"[" + b"9" * 5000 + b"]")


@pytest.mark.parametrize("data", [b'["\\ud800"]', b'{"\\udfff":1}'])
def test_lone_surrogates_are_not_text(data: bytes) -> None:
    with pytest.raises(MalformedDocumentError):
        parse_json(data)


def test_oversized_documents() -> None:
    padding = b'{"pad":"' + b"x" * (DEFAULT_MAX_BYTES - 10) + b'"}'
    assert len(padding) == DEFAULT_MAX_BYTES
    assert parse_json(padding)["pad"].startswith("x")
    with pytest.raises(DocumentTooLargeError):
        parse_json(padding[:-2] + b'x"}')
    with pytest.raises(DocumentTooLargeError):
        parse_json(b"[1,2,3]", max_bytes=6)


def test_nesting_deeper_than_the_cap() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    with pytest.raises(MalformedDocumentError, match="nested"):
        parse_json(b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2))
    with pytest.raises(MalformedDocumentError):
        parse_json(b"[" * 100_000 + b"]" * 100_000, max_bytes=1_000_000)


@pytest.mark.parametrize("data", [b"", b"{", b"{'a':1}", b'{"a":1}x', b"\xff\xfe{}", b'{"a":"\x80"}', b"[01]"])
def test_invalid_json_or_encoding(data: bytes) -> None:
    with pytest.raises(MalformedDocumentError):
        parse_json(data)


@pytest.mark.parametrize("data", [None, 12, ["a"], {"a": 1}])
def test_non_bytes_input(data: object) -> None:
    with pytest.raises(MalformedDocumentError):
        parse_json(data)  # type: ignore[arg-type]
