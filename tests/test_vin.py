"""Tests for VIN normalisation, validation, check digits and masking.

Check digits are compared with the independent ``vininfo`` package.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from vininfo import Vin

from fleetrisk.vin import (
    BAD_CHARACTER,
    BAD_CHECK_DIGIT,
    BAD_LENGTH,
    FORBIDDEN_LETTER,
    MISSING,
    PLACEHOLDER,
    REASONS,
    VALID,
    argsort,
    check_digit,
    is_valid,
    lookup,
    mask,
    mask_text,
    normalize,
)

VIN_ALPHABET = np.array(list("0123456789ABCDEFGHJKLMNPRSTUVWXYZ"))
X_CHECK_VIN = "1M8GDM9AXKP042788"  # a North American VIN whose check digit is X


def _vininfo_check_digit(text: str) -> str:
    """Return the one check digit that vininfo accepts at position 9."""
    accepted = [
        digit
        for digit in "0123456789X"
        if Vin(text[:8] + digit + text[9:]).verify_checksum(check_year=False)
    ]
    assert len(accepted) == 1, (text, accepted)
    return accepted[0]


def _random_vins(count: int, seed: int) -> list[str]:
    """Random 17-character VINs of the valid alphabet, first character 1-5."""
    rng = np.random.default_rng(seed)
    body = rng.choice(VIN_ALPHABET, size=(count, 17))
    body[:, 0] = rng.choice(np.array(list("12345")), size=count)
    return ["".join(row) for row in body]


def _reason(value: str | None) -> int:
    return int(normalize([value])[1][0])


# Check digit ----------------------------------------------------------------


def test_check_digit_matches_vininfo() -> None:
    texts = _random_vins(3_000, seed=3)
    computed = check_digit(np.array(texts, dtype="S17"))
    expected = [_vininfo_check_digit(text) for text in texts]
    assert computed.dtype == np.dtype("S1")
    assert [c.decode() for c in computed] == expected
    # Every residue, X included, occurs among 3,000 random VINs.
    assert set(expected) == set("0123456789X")


def test_random_valid_vins_accepted() -> None:
    texts = _random_vins(3_000, seed=4)
    fixed = [t[:8] + _vininfo_check_digit(t) + t[9:] for t in texts]
    vins, reason = normalize(fixed)
    assert (reason == VALID).all()
    assert [v.decode() for v in vins] == fixed


def test_random_wrong_check_digit_rejected() -> None:
    texts = _random_vins(1_000, seed=5)
    wrong = []
    for text in texts:
        right = _vininfo_check_digit(text)
        other = "X" if right == "0" else "0"
        wrong.append(text[:8] + other + text[9:])
    _, reason = normalize(wrong)
    assert (reason == BAD_CHECK_DIGIT).all()


def test_x_check_digit() -> None:
    assert Vin(X_CHECK_VIN).verify_checksum(check_year=False)
    assert check_digit(np.array([X_CHECK_VIN], dtype="S17")).tolist() == [b"X"]
    assert _reason(X_CHECK_VIN) == VALID
    assert _reason(X_CHECK_VIN[:8] + "9" + X_CHECK_VIN[9:]) == BAD_CHECK_DIGIT


def test_check_digit_letter_r() -> None:
    # R transliterates to 9 and the weights sum to 89, with 0 at position 9.
    # "1" then sixteen "R": 1 * 8 + 9 * (89 - 8) = 737 = 67 * 11, so the
    # check digit is 0.
    text = "1RRRRRRR0RRRRRRRR"
    assert check_digit(np.array([text], dtype="S17")).tolist() == [b"0"]
    assert _reason(text) == VALID


def test_all_ones_vin_valid() -> None:
    # Each weight times 1 sums to 89, and 89 mod 11 = 1: the check digit is 1.
    assert _reason("1" * 17) == VALID


# Normalisation ----------------------------------------------------------------


def test_lowercase_and_padding_normalised() -> None:
    vins, reason = normalize([" 1m8gdm9axkp042788\t", "\n1M8gdm9AXkp042788\r\n "])
    assert reason.tolist() == [VALID, VALID]
    assert vins.tolist() == [X_CHECK_VIN.encode()] * 2
    assert vins.dtype == np.dtype("S17")


def test_non_ascii_whitespace_not_stripped() -> None:
    # Only ASCII whitespace is stripped; a no-break space leaves it invalid.
    assert _reason("\u00a0" + X_CHECK_VIN) != VALID
    assert _reason(X_CHECK_VIN + "\u3000") != VALID


def test_arrow_inputs() -> None:
    values = [X_CHECK_VIN, None, " 1m8gdm9axkp042788"]
    expected = [VALID, MISSING, VALID]
    for array in (
        pa.array(values),
        pa.array(values).dictionary_encode(),
        pa.array(values, type=pa.large_string()),
        pa.chunked_array([values[:1], values[1:]]),
        pa.chunked_array([pa.array(values[:2]).slice(1), pa.array(values[2:])]),
    ):
        vins, reason = normalize(array)
        assert reason.tolist() == expected[-len(array) :], array.type
        assert vins[reason == VALID].tolist() == [X_CHECK_VIN.encode()] * int(
            (reason == VALID).sum()
        )


def test_empty_input() -> None:
    vins, reason = normalize([])
    assert len(vins) == 0
    assert len(reason) == 0


# Invalid kinds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, MISSING),
        ("", MISSING),
        ("   \t", MISSING),
        (X_CHECK_VIN[:16], BAD_LENGTH),
        (X_CHECK_VIN + "1", BAD_LENGTH),
        ("1M8GDM9AXKP0427", BAD_LENGTH),
        ("1M8GDM9AXKP04278 8", BAD_LENGTH),
        ("1M8GDM9AXKI042788", FORBIDDEN_LETTER),
        ("1M8GDM9AXKO042788", FORBIDDEN_LETTER),
        ("1M8GDM9AXKq042788", FORBIDDEN_LETTER),
        ("1M8GDM9AXK-042788", BAD_CHARACTER),
        ("1M8GDM9AXK 042788", BAD_CHARACTER),
        ("0" * 17, PLACEHOLDER),
    ],
    ids=[
        "none",
        "empty",
        "blank",
        "16-chars",
        "18-chars",
        "15-chars",
        "inner-space-18",
        "letter-I",
        "letter-O",
        "letter-q",
        "hyphen",
        "inner-space",
        "all-zero",
    ],
)
def test_reason_codes(value: str | None, expected: int) -> None:
    assert _reason(value) == expected


def test_non_ascii_character_rejected() -> None:
    # 17 characters, one of them non-ASCII: a character error, not a length
    # error, although the UTF-8 encoding is 18 bytes long.
    assert _reason("1M8GDM9AXKP04278\u00e9") == BAD_CHARACTER
    assert _reason("1M8GDM9AXKP04278\u0130") == BAD_CHARACTER  # dotted capital I
    # 16 characters of which one encodes to two bytes: still invalid.
    assert _reason("1M8GDM9AXKP0427\u00e9") != VALID


def test_fullwidth_letters_not_upper_cased() -> None:
    # Upper-casing is ASCII only; a full-width letter stays invalid.
    assert _reason("\uff11M8GDM9AXKP042788") != VALID


def test_non_north_american_check_digit_not_verified() -> None:
    # World manufacturer codes outside 1-5 keep any position-9 character.
    for text in (
        "WVWZZZ1JZXW000001",
        "JH4KA7561PC008269",
        "WP0ZZZ99ZTS392124",
        "SALVA2AE4EH877322",
        "9BWZZZ377VT004251",
    ):
        assert _reason(text) == VALID, text


def test_forbidden_letter_outside_north_america() -> None:
    assert _reason("WVWZZZ1JZXW00000O") == FORBIDDEN_LETTER


def test_reason_names_cover_codes() -> None:
    codes = {
        MISSING,
        BAD_LENGTH,
        BAD_CHARACTER,
        FORBIDDEN_LETTER,
        BAD_CHECK_DIGIT,
        PLACEHOLDER,
    }
    assert set(REASONS) == codes
    assert VALID not in REASONS
    assert len(set(REASONS.values())) == len(codes)


def test_is_valid() -> None:
    result = is_valid([X_CHECK_VIN, "1M8GDM9A9KP042788", None, "wvwzzz1jzxw000001"])
    assert result.tolist() == [True, False, False, True]


# Masking --------------------------------------------------------------------


def test_mask() -> None:
    assert mask(X_CHECK_VIN) == "1M8GDM9AXKP******"
    assert mask(X_CHECK_VIN.encode()) == "1M8GDM9AXKP******"
    assert mask("ABC") == "******"
    assert mask("") == "******"
    assert X_CHECK_VIN[-6:] not in mask(X_CHECK_VIN)


def test_mask_text() -> None:
    text = f"vin {X_CHECK_VIN} and WVWZZZ1JZXW000001 rejected; id 12345678901234567890"
    masked = mask_text(text)
    assert "1M8GDM9AXKP******" in masked
    assert "WVWZZZ1JZXW******" in masked
    assert "042788" not in masked
    assert "000001" not in masked
    assert "12345678901234567890" in masked


def _vin_shaped(rng: np.random.Generator, count: int, letters: int) -> np.ndarray:
    """Return ``count`` 17-character VIN-shaped values from a small alphabet."""
    alphabet = np.frombuffer(b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ", np.uint8)[:letters]
    return alphabet[rng.integers(0, letters, (count, 17))].copy().view("S17").ravel()


def _lookup_by_searchsorted(table: np.ndarray, query: np.ndarray) -> np.ndarray:
    rows = np.minimum(np.searchsorted(table, query), len(table) - 1)
    return np.where(table[rows] == query, rows, -1)


@pytest.mark.parametrize("letters", [2, 33])
def test_lookup_matches_searchsorted(letters: int) -> None:
    # Two letters give many repeated VINs and long shared prefixes.
    rng = np.random.default_rng(letters)
    table = np.sort(_vin_shaped(rng, 3000, letters))
    unsorted = _vin_shaped(rng, 5000, letters)
    for query in (unsorted, np.sort(unsorted), np.sort(np.concatenate([table, unsorted]))):
        expected = _lookup_by_searchsorted(table, query)
        assert lookup(table, query).tolist() == expected.tolist()


def test_lookup_edges() -> None:
    table = np.array([b"1" * 17, b"5" * 17, b"5" * 17], "S17")
    query = np.array([b"0" * 17, b"5" * 17, b"9" * 17, b"1" * 17], "S17")
    assert lookup(table, query).tolist() == [-1, 1, -1, 0]
    assert lookup(table, np.sort(query)).tolist() == [-1, 0, 1, -1]
    assert lookup(np.empty(0, "S17"), query).tolist() == [-1, -1, -1, -1]
    assert lookup(table, np.empty(0, "S17")).tolist() == []


def test_argsort_matches_numpy_stable() -> None:
    rng = np.random.default_rng(17)
    shared = _vin_shaped(rng, 4000, 3)
    # Many VINs share their first 16 bytes and differ only in the last one.
    tail_only = np.array([b"1FTEW1E40KKA1234" + bytes([c]) for c in rng.integers(48, 58, 3000)], "S17")
    padded = np.array([b"", b"1", b"1FTEW1E40KKA1234", b"\xff" * 17], "S17")
    for vins in (shared, tail_only, np.concatenate([shared, tail_only, padded]), padded[:1]):
        assert argsort(vins).tolist() == np.argsort(vins, kind="stable").tolist()
