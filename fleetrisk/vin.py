"""VIN normalisation, validation, check digit and log masking.

Works on many VINs at once: normalised VINs are numpy ``S17`` arrays, and the
check digit is computed on a ``(n, 17)`` uint8 view, never per Python string.
The rules (SPEC data rules): strip surrounding ASCII whitespace, upper-case
ASCII letters; a VIN is valid with exactly 17 characters from 0-9 and A-Z
except I, O and Q; the check digit at position 9 is verified only when the
first character is 1-5 (North America).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

VIN_LENGTH = 17

# Reasons a VIN is rejected; index 0 means valid.
VALID = 0
MISSING = 1
BAD_LENGTH = 2
BAD_CHARACTER = 3
FORBIDDEN_LETTER = 4
BAD_CHECK_DIGIT = 5
PLACEHOLDER = 6

REASONS = {
    MISSING: "vin_missing",
    BAD_LENGTH: "vin_length",
    BAD_CHARACTER: "vin_character",
    FORBIDDEN_LETTER: "vin_letter_IOQ",
    BAD_CHECK_DIGIT: "vin_check_digit",
    PLACEHOLDER: "vin_placeholder",
}

# Transliteration of ISO 3779 / 49 CFR 565.15: digits keep their value,
# letters map to 1-9 skipping I, O, Q.
_VALUE = np.zeros(256, dtype=np.int64)
for _ch, _val in zip("0123456789", range(10)):
    _VALUE[ord(_ch)] = _val
for _letters, _values in (
    ("ABCDEFGH", range(1, 9)),
    ("JKLMN", range(1, 6)),
    ("PR", (7, 9)),
    ("STUVWXYZ", range(2, 10)),
):
    for _ch, _val in zip(_letters, _values):
        _VALUE[ord(_ch)] = _val
_WEIGHTS = np.array(
    [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64
)
_CHECK_CHARS = np.frombuffer(b"0123456789X", dtype=np.uint8)

_ALLOWED = np.zeros(256, dtype=bool)
for _ch in b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ":
    _ALLOWED[_ch] = True
_FORBIDDEN = np.zeros(256, dtype=bool)
for _ch in b"IOQ":
    _FORBIDDEN[_ch] = True

_MASK_PATTERN = re.compile(r"\b([A-HJ-NPR-Z0-9]{11})([A-HJ-NPR-Z0-9]{6})\b")


def as_codes(vins: np.ndarray) -> np.ndarray:
    """Return a ``(n, 17)`` uint8 view of an ``S17`` array."""
    vins = np.ascontiguousarray(vins, dtype="S17")
    return vins.view(np.uint8).reshape(-1, VIN_LENGTH)


def check_digit(vins: np.ndarray) -> np.ndarray:
    """Compute the expected check digit (``S1``) of each 17-character VIN."""
    codes = as_codes(vins)
    total = (_VALUE[codes] * _WEIGHTS).sum(axis=1)
    return _CHECK_CHARS[total % 11].view("S1")


def normalize(
    values: pa.Array | pa.ChunkedArray | Sequence[str | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise raw VIN values and classify each one.

    Returns ``(vins, reason)``: ``vins`` is an ``S17`` array (meaningful where
    ``reason == VALID``) and ``reason`` an int8 array of the codes above.
    """
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(list(values), type=pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = (
            values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
        )
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())

    missing = values.is_null().to_numpy(zero_copy_only=False)
    stripped = pc.utf8_trim(values.fill_null(""), " \t\n\r\x0b\x0c")
    upper = pc.ascii_upper(stripped)
    byte_length = pc.binary_length(upper).to_numpy(zero_copy_only=False)
    char_length = pc.utf8_length(upper).to_numpy(zero_copy_only=False)
    count = len(upper)

    reason = np.zeros(count, dtype=np.int8)
    reason[char_length != VIN_LENGTH] = BAD_LENGTH
    # 17 characters but more bytes: a non-ASCII character.
    reason[(char_length == VIN_LENGTH) & (byte_length != VIN_LENGTH)] = BAD_CHARACTER
    reason[missing | (char_length == 0)] = MISSING
    vins = np.zeros(count, dtype="S17")
    right_length = (byte_length == VIN_LENGTH) & (char_length == VIN_LENGTH)
    if right_length.any():
        codes = _fixed_width_codes(upper.filter(pa.array(right_length)))
        vins[right_length] = codes.copy().view("S17").ravel()
        reason[right_length] = _classify(codes)
    return vins, reason


def _fixed_width_codes(array: pa.Array) -> np.ndarray:
    """View a string array whose values all have 17 bytes as ``(n, 17)`` uint8."""
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    start = int(offsets[array.offset])
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    return data[start : start + VIN_LENGTH * len(array)].reshape(-1, VIN_LENGTH)


def _classify(codes: np.ndarray) -> np.ndarray:
    """Classify ``(n, 17)`` upper-cased byte rows; see the reason codes."""
    return _classify_rows(
        np.ascontiguousarray(codes), _VALUE, _WEIGHTS, _ALLOWED, _FORBIDDEN, _CHECK_CHARS
    )


@numba.njit(cache=True)
def _classify_rows(
    codes: np.ndarray,
    value: np.ndarray,
    weights: np.ndarray,
    allowed: np.ndarray,
    forbidden: np.ndarray,
    check_chars: np.ndarray,
) -> np.ndarray:
    """Apply the VIN rules row by row in one pass (same order as the docstring).

    Precedence when several apply: placeholder, bad character, forbidden
    letter, then wrong check digit.
    """
    reason = np.zeros(codes.shape[0], dtype=np.int8)
    for row in range(codes.shape[0]):
        has_forbidden = False
        has_bad = False
        all_zero = True
        total = 0
        for position in range(VIN_LENGTH):
            code = codes[row, position]
            if forbidden[code]:
                has_forbidden = True
            elif not allowed[code]:
                has_bad = True
            if code != 48:  # "0"
                all_zero = False
            total += value[code] * weights[position]
        if all_zero:
            reason[row] = PLACEHOLDER
        elif has_bad:
            reason[row] = BAD_CHARACTER
        elif has_forbidden:
            reason[row] = FORBIDDEN_LETTER
        elif 49 <= codes[row, 0] <= 53 and codes[row, 8] != check_chars[total % 11]:
            reason[row] = BAD_CHECK_DIGIT
    return reason


def is_valid(vins: Iterable[str | None]) -> np.ndarray:
    """Return a bool array: True where the VIN is valid after normalisation."""
    _, reason = normalize(list(vins))
    return reason == VALID


def mask(vin: str | bytes) -> str:
    """Mask the last six characters of a VIN for logs: ``1FTEW1E40KK******``."""
    if isinstance(vin, bytes):
        vin = vin.decode("ascii", "replace")
    return vin[:-6] + "******" if len(vin) > 6 else "******"


def mask_text(text: str) -> str:
    """Mask every VIN-shaped 17-character token in free text."""
    return _MASK_PATTERN.sub(lambda m: m.group(1) + "******", text)


def argsort(vins: np.ndarray) -> np.ndarray:
    """Return the stable sort order of an ``S17`` array, as ``np.argsort`` gives it.

    Sorts on 64-bit words instead of comparing bytes: the first eight bytes
    as one big-endian integer, then each run of equal first words by row,
    the next eight bytes and the last byte, which restores stability.
    """
    codes = as_codes(vins)
    first, second, last = _key_words(codes)
    order = np.argsort(first)
    _sort_runs(order, first, second, last)
    return order


@numba.njit(parallel=True, cache=True)
def _key_words(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(n, 17)`` byte rows into big-endian words: bytes 0-7, bytes 8-15, byte 16."""
    count = codes.shape[0]
    first = np.empty(count, dtype=np.uint64)
    second = np.empty(count, dtype=np.uint64)
    last = np.empty(count, dtype=np.uint8)
    for row in numba.prange(count):
        a = np.uint64(0)
        b = np.uint64(0)
        for position in range(8):
            a = (a << np.uint64(8)) | np.uint64(codes[row, position])
            b = (b << np.uint64(8)) | np.uint64(codes[row, position + 8])
        first[row] = a
        second[row] = b
        last[row] = codes[row, 16]
    return first, second, last


def _sort_runs(order: np.ndarray, first: np.ndarray, second: np.ndarray, last: np.ndarray) -> None:
    """Sort each run of equal first words by row, second word and last byte, in place."""
    if len(order) < 2:
        return
    ordered = first[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate(([0], bounds)).astype(np.int64)
    stops = np.concatenate((bounds, [len(order)])).astype(np.int64)
    long_runs = stops - starts > 1
    _sort_each_run(order, starts[long_runs], stops[long_runs], second, last)


@numba.njit(parallel=True, cache=True)
def _sort_each_run(
    order: np.ndarray, starts: np.ndarray, stops: np.ndarray, second: np.ndarray, last: np.ndarray
) -> None:
    for index in numba.prange(starts.shape[0]):
        start, stop = starts[index], stops[index]
        # The first sort is not stable: row order first, then stable sorts
        # on the last byte and on the second word.
        run = np.sort(order[start:stop])
        run = run[np.argsort(last[run], kind="mergesort")]
        run = run[np.argsort(second[run], kind="mergesort")]
        order[start:stop] = run


def unique(vins: np.ndarray) -> np.ndarray:
    """Return the sorted distinct VINs.

    Sorting fixed-width bytes and dropping repeats is several times faster
    than ``np.unique``'s hash path for ``S17`` arrays.
    """
    if len(vins) == 0:
        return np.empty(0, "S17")
    ordered = vins[argsort(vins)]
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def lookup(sorted_vins: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Return the row of each query VIN in ``sorted_vins`` (int64), -1 when absent."""
    if len(sorted_vins) == 0 or len(query) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    query_words = _key_words(as_codes(query))
    # Sorted queries (most often the fleet's VINs) are merged in one
    # sequential pass, because a binary search per query misses the cache on
    # most steps in a large table.
    if _words_sorted(*query_words):
        return _merge_words(*_key_words(as_codes(sorted_vins)), *query_words)
    return _binary_search_rows(as_codes(sorted_vins), as_codes(query))


@numba.njit(cache=True, inline="always")
def _words_order(a1: int, a2: int, a3: int, b1: int, b2: int, b3: int) -> int:
    """Return -1, 0 or 1 as the VIN with words ``a`` sorts before, with or after the one with ``b``."""
    if a1 != b1:
        return -1 if a1 < b1 else 1
    if a2 != b2:
        return -1 if a2 < b2 else 1
    if a3 != b3:
        return -1 if a3 < b3 else 1
    return 0


@numba.njit(cache=True)
def _words_sorted(first: np.ndarray, second: np.ndarray, last: np.ndarray) -> bool:
    """Return True when the VINs given as key words are in non-decreasing order."""
    for row in range(1, first.shape[0]):
        if _words_order(first[row - 1], second[row - 1], last[row - 1], first[row], second[row], last[row]) > 0:
            return False
    return True


@numba.njit(cache=True)
def _merge_words(
    t1: np.ndarray, t2: np.ndarray, t3: np.ndarray, q1: np.ndarray, q2: np.ndarray, q3: np.ndarray
) -> np.ndarray:
    """Find sorted query VINs in the sorted table in one pass (first match, -1 absent)."""
    out = np.full(q1.shape[0], -1, dtype=np.int64)
    row = 0
    rows = t1.shape[0]
    for q in range(q1.shape[0]):
        order = -1
        while row < rows:
            order = _words_order(t1[row], t2[row], t3[row], q1[q], q2[q], q3[q])
            if order >= 0:
                break
            row += 1
        if row == rows:
            break
        if order == 0:
            out[q] = row
    return out


@numba.njit(parallel=True, cache=True)
def _binary_search_rows(table: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Binary-search each ``(17,)`` byte row of ``query`` in the sorted ``table``.

    Compares bytes in place, the order numpy gives ``S17`` values, with no
    sort of the query and no Python objects; queries run in parallel.
    """
    out = np.empty(query.shape[0], dtype=np.int64)
    for q in numba.prange(query.shape[0]):
        low = 0
        high = table.shape[0]
        while low < high:
            middle = (low + high) // 2
            less = False
            for position in range(VIN_LENGTH):
                a = table[middle, position]
                b = query[q, position]
                if a != b:
                    less = a < b
                    break
            if less:
                low = middle + 1
            else:
                high = middle
        found = low < table.shape[0]
        if found:
            for position in range(VIN_LENGTH):
                if table[low, position] != query[q, position]:
                    found = False
                    break
        out[q] = low if found else -1
    return out


def member(sorted_vins: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Return True where a query VIN is in ``sorted_vins``."""
    return lookup(sorted_vins, query) >= 0
