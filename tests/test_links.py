"""Signed link tokens: round trip, and refused when forged, altered or reused elsewhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.links import BadToken, offer_code, sign, verify

SECRET = "s" * 40


@given(st.dictionaries(st.sampled_from(["m", "c", "s"]), st.integers(0, 10**12)))
def test_a_signed_token_gives_back_its_data(data: dict[str, int]) -> None:
    assert verify(SECRET, "unsubscribe", sign(SECRET, "unsubscribe", data)) == data


def test_a_token_is_short_enough_for_a_list_unsubscribe_header() -> None:
    assert len(sign(SECRET, "unsubscribe", {"m": 123456789, "c": 987654})) < 70


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
    lambda t: ("e" if t[0] != "e" else "f") + t[1:],  # payload changed
    lambda t: t.split(".")[0],  # signature dropped
    lambda t: "",
])
def test_an_altered_token_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    token = sign(SECRET, "unsubscribe", {"m": 1})
    with pytest.raises(BadToken):
        verify(SECRET, "unsubscribe", mutate(token))


def test_a_token_is_refused_for_another_purpose_or_with_another_key() -> None:
    token = sign(SECRET, "feedback", {"m": 1})
    with pytest.raises(BadToken):
        verify(SECRET, "unsubscribe", token)
    with pytest.raises(BadToken):
        verify("t" * 40, "feedback", token)


def test_offer_codes_are_stable_per_customer_and_differ_between_customers() -> None:
    a = offer_code(SECRET, "BACK10", "win_back", 1, "ten-percent")
    assert a == offer_code(SECRET, "BACK10", "win_back", 1, "ten-percent")
    assert a != offer_code(SECRET, "BACK10", "win_back", 2, "ten-percent")
    assert a.startswith("BACK10-") and len(a) == len("BACK10-") + 8
