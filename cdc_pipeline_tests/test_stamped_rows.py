"""Stamped cells (sinks/cell_merge/stamped_rows.py): their order must be Cassandra's precedence, and
element keys must sort collections as Cassandra shows them. Expected orders come from the rules
(and from Python's own ordering of the values), not from the code under test."""

from __future__ import annotations

import itertools
import random
import uuid

from cdc_pipeline.sinks.cell_merge.stamped_rows import NO_TIME, element_order_key, key_text
from cdc_pipeline.sinks.cell_merge.state import Stamp, canonical_text


def _stamp_tuple(stamp: Stamp) -> tuple[int, int, int]:
    return (stamp.timestamp, 1 if stamp.deleted else 0, NO_TIME if stamp.expires_at is None else stamp.expires_at)


def test_the_stamp_order_is_the_state_merges_precedence() -> None:
    # Every pair of writes over a small grid of timestamps, tombstones and expiries: the greater
    # stamp tuple is the write the state merge lets win (values equal, so only stamps decide).
    writes = [
        Stamp(timestamp, expires, "v", deleted)
        for timestamp in (-5, 0, 7)
        for deleted in (False, True)
        for expires in (None, 100, 200)
    ]
    for a, b in itertools.permutations(writes, 2):
        if _stamp_tuple(a) == _stamp_tuple(b):
            continue
        assert (_stamp_tuple(a) > _stamp_tuple(b)) == a.beats(b), (a, b)


def test_no_time_is_below_every_timestamp_cassandra_writes() -> None:
    assert NO_TIME < -(2**62) and NO_TIME == -(2**63)


def test_integer_keys_sort_numerically_at_any_size() -> None:
    rng = random.Random(7)
    numbers = [0, 1, -1, 9, 10, 15, 16, -16, 255, 256, 2**63, -(2**63), 2**100, -(2**100)]
    numbers += [rng.randint(-(10**30), 10**30) for _ in range(200)]
    numbers = sorted(set(numbers))
    shuffled = numbers[:]
    rng.shuffle(shuffled)
    assert sorted(shuffled, key=lambda n: element_order_key("set", n).encode()) == numbers


def test_float_keys_sort_numerically() -> None:
    numbers = sorted({-1e300, -2.5, -1.0, -1e-300, 0.0, 1e-300, 0.5, 1.0, 3.25, 1e300, float("inf"), float("-inf")})
    assert sorted(reversed(numbers), key=lambda n: element_order_key("set", n).encode()) == numbers


def test_text_keys_sort_by_code_point_as_bytes() -> None:
    # (Text holding a NUL sorts by its canonical text instead: PostgreSQL's jsonb keys cannot hold one.)
    texts = ["", "a", "B", "é", "z", "zz", "\u4e2d", "\U0001f600", "a\x01b"]
    by_code_point = sorted(texts)
    assert sorted(texts, key=lambda t: element_order_key("map", t).encode()) == by_code_point


def test_list_keys_sort_by_the_timeuuids_time_not_their_text() -> None:
    # Version-1 uuids whose text order is the reverse of their time order.
    early = uuid.UUID(fields=(0xFFFFFFFF, 0x0001, 0x1001, 0x80, 0x00, 0x1))
    late = uuid.UUID(fields=(0x00000000, 0x0002, 0x1001, 0x80, 0x00, 0x1))
    assert early.time < late.time and str(early) > str(late)
    keys = [element_order_key("list", str(late)), element_order_key("list", str(early))]
    assert sorted(keys, key=str.encode) == [element_order_key("list", str(early)), keys[0]]


def test_distinct_paths_never_share_a_key() -> None:
    paths = [0, 1, -1, 1.0, 0.5, True, False, "1", "", "a", ["a", 1], {"x": 1}]
    keys = [element_order_key("set", path) for path in paths]
    # 1 and True, 1 and 1.0 are equal in Python but distinct Cassandra values of distinct types: a
    # collection holds one type, so they only need distinct keys, which they have.
    assert len(set(keys)) == len(keys)


def test_key_texts_of_integers_and_text_are_the_canonical_texts() -> None:
    # Stored keys are found by their text: the fast path must write exactly what canonical_text does.
    rng = random.Random(11)
    alphabet = [chr(c) for c in (*range(1, 0x80), 0x7F, 0xE9, 0x2028, 0x4E2D, 0x1F600, 0xD800)]
    for _ in range(2000):
        values: list[object] = [
            rng.choice([rng.randint(-(2**70), 2**70), rng.randint(-5, 5), "".join(rng.choices(alphabet, k=6))])
            for _ in range(rng.randint(1, 3))
        ]
        assert key_text(values) == canonical_text(values)
