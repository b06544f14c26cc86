"""The reconciliation of cell changes, checked against Cassandra's rules (expected values from the rules)."""

from __future__ import annotations

import itertools
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from cdc_pipeline.core.cells import (
    CellChange,
    CellWrite,
    ClusteringBound,
    CollectionWrite,
    ElementWrite,
    RangeDeletion,
)
from cdc_pipeline.core.changes import ChangeOp, RowChange
from cdc_pipeline.core.schema import ColumnSchema
from cdc_pipeline.sinks.cell_merge.clustering import range_covers
from cdc_pipeline.sinks.cell_merge.state import RowState

KEYS = ("k",)


def _change(
    timestamp: int,
    values: dict[str, Any] | None = None,
    *,
    ttl_until: int | None = None,
    liveness: bool = False,
    row_deletion: int | None = None,
) -> RowChange:
    values = values or {}
    cells = CellChange(
        cells={
            name: CellWrite(timestamp, ttl_until) for name, v in values.items() if not isinstance(v, CollectionWrite)
        },
        liveness=CellWrite(timestamp, ttl_until) if liveness else None,
        row_deletion=row_deletion,
    )
    op = ChangeOp.INSERT if liveness else (ChangeOp.DELETE if row_deletion and not values else ChangeOp.UPDATE)
    return RowChange(op, {"k": 1, **values}, max(timestamp, row_deletion or 0), "seg:0", 0, cells)


def _merged(*changes: RowChange) -> RowState:
    state = RowState.for_key([1])
    for change in changes:
        state.merge(change, KEYS)
    return state


def _every_order(*changes: RowChange) -> set[str]:
    """The stored state after every order of `changes`, each applied twice: one state if order-independent."""
    return {_merged(*order, *order).to_json() for order in itertools.permutations(changes)}


def test_the_newest_write_of_a_cell_wins_in_any_order() -> None:
    changes = (_change(100, {"a": "x"}), _change(300, {"a": "y"}), _change(200, {"a": "z"}))
    (state,) = _every_order(*changes)
    assert RowState.from_json(state).visible_values() == {"a": "y"}


def test_a_one_cell_update_keeps_the_other_cells() -> None:
    state = _merged(_change(100, {"a": "x", "b": 1}, liveness=True), _change(200, {"b": 2}))
    assert state.visible_values() == {"a": "x", "b": 2}
    assert state.version == 200


def test_on_a_tie_the_deletion_wins_whatever_the_order() -> None:
    (state,) = _every_order(_change(100, {"a": "x"}), _change(100, {"a": None}))
    assert RowState.from_json(state).visible_values() == {"a": None}


def test_on_a_live_tie_the_greater_value_wins_whatever_the_order() -> None:
    (state,) = _every_order(_change(100, {"a": "apple"}), _change(100, {"a": "banana"}))
    assert RowState.from_json(state).visible_values() == {"a": "banana"}


def test_a_row_deletion_removes_older_cells_and_keeps_newer_ones() -> None:
    changes = (
        _change(100, {"a": "old", "b": "old"}, liveness=True),
        _change(200, row_deletion=200),
        _change(300, {"b": "new"}),
        _change(150, {"a": "late but older"}),  # arrives after the deletion, written before it
    )
    (text,) = _every_order(*changes)
    state = RowState.from_json(text)
    assert state.visible_values() == {"b": "new"}
    assert state.is_live and state.version == 300


def test_a_deleted_row_stays_deleted_when_an_older_insert_arrives_later() -> None:
    state = _merged(_change(500, row_deletion=500), _change(400, {"a": "x"}, liveness=True))
    assert not state.is_live
    assert state.version == 500


def test_a_deletion_at_the_same_time_as_a_write_removes_it() -> None:
    state = _merged(_change(200, {"a": "x"}, liveness=True), _change(200, row_deletion=200))
    assert not state.is_live


def test_an_inserted_row_lives_with_every_column_null_but_an_updated_one_does_not() -> None:
    inserted = _merged(_change(100, {"a": "x"}, liveness=True), _change(200, {"a": None}))
    updated = _merged(_change(100, {"a": "x"}), _change(200, {"a": None}))
    assert inserted.is_live and inserted.visible_values() == {"a": None}
    assert not updated.is_live


def test_a_ttl_is_kept_as_expiry_and_ends_the_row() -> None:
    state = _merged(_change(100, {"a": "x"}, liveness=True, ttl_until=5_000))
    assert state.is_live
    assert state.live_until == 5_000
    assert state.expiry() == {"a": 5_000}
    # A cell without TTL written later keeps the row alive for good.
    longer = _merged(_change(100, {"a": "x"}, liveness=True, ttl_until=5_000), _change(200, {"b": "y"}))
    assert longer.live_until is None
    assert longer.expiry() == {"a": 5_000}


def test_on_a_tie_an_expiring_write_beats_a_plain_one_in_any_order() -> None:
    (text,) = _every_order(_change(100, {"a": "zzz"}), _change(100, {"a": "aaa"}, ttl_until=9_000))
    state = RowState.from_json(text)
    assert state.visible_values() == {"a": "aaa"} and state.expiry() == {"a": 9_000}


def test_values_keep_their_exact_types_through_the_stored_state() -> None:
    state = _merged(_change(100, {"d": Decimal("12.340"), "b": b"\x00\xff"}))
    assert RowState.from_json(state.to_json()).visible_values() == {"d": Decimal("12.340"), "b": b"\x00\xff"}


# -- collections ---------------------------------------------------------------------------------


def _timeuuid(micros: int) -> str:
    # A version-1 uuid whose time is `micros` microseconds (x10: 100 ns units) after the uuid epoch.
    ticks = micros * 10
    return str(
        uuid.UUID(
            fields=(ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF, ((ticks >> 48) & 0x0FFF) | 0x1000, 0x80, 0, 0x1234)
        )
    )


def _collection(
    timestamp: int, kind: str, column: str, *elements: ElementWrite, deleted_at: int | None = None
) -> RowChange:
    return _change(timestamp, {column: CollectionWrite(kind, deleted_at, elements)})  # type: ignore[arg-type]


def test_list_appends_are_ordered_by_their_timeuuids_not_by_arrival() -> None:
    first = _collection(100, "list", "l", ElementWrite(_timeuuid(1), "one", 100))
    second = _collection(200, "list", "l", ElementWrite(_timeuuid(2), "two", 200))
    third = _collection(300, "list", "l", ElementWrite(_timeuuid(3), "three", 300))
    (text,) = _every_order(first, second, third)
    assert json.loads(RowState.from_json(text).visible_values()["l"]) == ["one", "two", "three"]


def test_a_set_element_removed_later_is_gone_and_an_empty_set_is_null() -> None:
    added = _collection(100, "set", "s", ElementWrite("a", None, 100), ElementWrite("b", None, 100))
    removed = _collection(200, "set", "s", ElementWrite("b", None, 200, deleted=True))
    (text,) = _every_order(added, removed)
    assert json.loads(RowState.from_json(text).visible_values()["s"]) == ["a"]
    emptied = _merged(added, _collection(300, "set", "s", ElementWrite("a", None, 300, deleted=True)), removed)
    assert emptied.visible_values() == {"s": None}
    assert not emptied.is_live


def test_map_puts_and_deletes_merge_per_key() -> None:
    put = _collection(100, "map", "m", ElementWrite("x", 1, 100), ElementWrite("y", 2, 100))
    update = _collection(200, "map", "m", ElementWrite("y", 20, 200), ElementWrite("z", 3, 200))
    delete = _collection(300, "map", "m", ElementWrite("x", None, 300, deleted=True))
    (text,) = _every_order(put, update, delete)
    assert json.loads(RowState.from_json(text).visible_values()["m"]) == {"y": 20, "z": 3}


def test_a_whole_value_overwrite_removes_the_older_elements_only() -> None:
    put = _collection(100, "map", "m", ElementWrite("x", 1, 100))
    overwrite = _collection(300, "map", "m", ElementWrite("y", 2, 300), deleted_at=299)
    newer_put = _collection(400, "map", "m", ElementWrite("z", 3, 400))
    older_put = _collection(200, "map", "m", ElementWrite("w", 4, 200))  # before the overwrite: gone
    (text,) = _every_order(put, overwrite, newer_put, older_put)
    assert json.loads(RowState.from_json(text).visible_values()["m"]) == {"y": 2, "z": 3}


def test_a_udt_field_update_keeps_the_other_fields() -> None:
    insert = _collection(100, "udt", "u", ElementWrite("street", "Main", 100), ElementWrite("zip", "123", 100))
    update = _collection(200, "udt", "u", ElementWrite("zip", "999", 200))
    state = _merged(update, insert)
    assert json.loads(state.visible_values()["u"]) == {"street": "Main", "zip": "999"}


def test_a_row_deletion_removes_older_collection_elements() -> None:
    state = _merged(
        _collection(100, "set", "s", ElementWrite("a", None, 100)),
        _change(150, row_deletion=150),
        _collection(200, "set", "s", ElementWrite("b", None, 200)),
    )
    assert json.loads(state.visible_values()["s"]) == ["b"]


def test_a_collection_expires_with_its_last_element() -> None:
    state = _merged(
        _collection(100, "set", "s", ElementWrite("a", None, 100, 1_000), ElementWrite("b", None, 100, 2_000))
    )
    assert state.expiry() == {"s": 2_000} and state.live_until == 2_000


# -- clustering ranges ---------------------------------------------------------------------------

_DAY = ColumnSchema("day", "int", "int", False)
_AT_DESC = ColumnSchema("at", "int", "int", False, descending=True)


def _range(start: tuple[Any, ...], start_inclusive: bool, end: tuple[Any, ...], end_inclusive: bool) -> RangeDeletion:
    return RangeDeletion(ClusteringBound(start, start_inclusive), ClusteringBound(end, end_inclusive), 100)


@pytest.mark.parametrize(
    ("deletion", "key", "covered"),
    [
        # day = 5 AND at >= 10 AND at < 20 on a DESC column: in clustering order the range starts at
        # (5, 20) exclusive and ends at (5, 10) inclusive.
        (_range((5, 20), False, (5, 10), True), (5, 10), True),
        (_range((5, 20), False, (5, 10), True), (5, 15), True),
        (_range((5, 20), False, (5, 10), True), (5, 20), False),
        (_range((5, 20), False, (5, 10), True), (5, 9), False),
        (_range((5, 20), False, (5, 10), True), (4, 15), False),
        # day > 5 (a one-column prefix, open end): every `at` of later days
        (_range((5,), False, (), True), (5, 99), False),
        (_range((5,), False, (), True), (6, 1), True),
        # day >= 5 AND day <= 6: prefixes include every `at` of the bound days
        (_range((5,), True, (6,), True), (5, 1), True),
        (_range((5,), True, (6,), True), (6, 1000), True),
        (_range((5,), True, (6,), True), (7, 0), False),
        # day < 3: open start
        (_range((), True, (3,), False), (2, 0), True),
        (_range((), True, (3,), False), (3, 0), False),
    ],
)
def test_range_deletions_follow_the_clustering_order(
    deletion: RangeDeletion, key: tuple[int, int], covered: bool
) -> None:
    assert range_covers([_DAY, _AT_DESC], deletion, key) is covered


def test_timeuuid_clustering_orders_by_time_and_text_by_code_point() -> None:
    at = ColumnSchema("at", "uuid", "timeuuid", False)
    # Around the wrap of the uuid's low time field: by text `middle` and `late` sort before `early`.
    early, middle, late = _timeuuid(429_496_729), _timeuuid(429_496_760), _timeuuid(429_496_800)
    assert middle < early and late < early
    deletion = _range((early,), False, (late,), False)
    assert range_covers([at], deletion, (middle,))
    assert not range_covers([at], deletion, (late,))
    name = ColumnSchema("name", "text", "text", False)
    assert range_covers([name], _range(("Z",), True, ("a",), True), ("_",))  # "Z" < "_" < "a" by code point
    amount = ColumnSchema("amount", "decimal", "decimal", False)
    assert range_covers([amount], _range((Decimal("9"),), False, (Decimal("10.5"),), False), (Decimal("10"),))
