"""Tokens the server generates can be typed after ``--token`` on any command line."""

from fleet_server.core.security import TOKEN_BYTES, new_token


def test_generated_tokens_never_start_with_a_dash_and_keep_their_length() -> None:
    tokens = [new_token() for _ in range(4000)]  # 1 in 64 urlsafe tokens would start with "-"
    assert not [token for token in tokens if token.startswith("-")]
    assert {len(token) for token in tokens} == {len(new_token())} and len(tokens[0]) >= TOKEN_BYTES
    assert len(set(tokens)) == len(tokens)
