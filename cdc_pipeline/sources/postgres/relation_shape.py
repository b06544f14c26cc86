"""The shape of a table's rows as a pgoutput relation message describes it.

The catalog says what the table looks like now; a relation message says what the rows that follow
it look like, which is older when the table was altered since (the slot is read behind the source).
Rows decode, and reach the sinks, in the message's shape. A catalog column of the same name and
type is used as is (it knows nullability, which the message does not carry).
"""

from __future__ import annotations

from collections.abc import Callable

from cdc_pipeline.core.schema import ColumnSchema, TableSchema
from cdc_pipeline.sources.postgres.column_types import PgType, column_schema
from cdc_pipeline.sources.postgres.pgoutput import Relation

# The fields the message determines; nullability it does not.
_COMPARED = ("data_type", "column_type", "precision", "scale", "datetime_precision", "char_length")


def relation_shape(
    relation: Relation,
    catalog: TableSchema | None,
    type_of: Callable[[int], tuple[PgType, int]],
    key_override: tuple[str, ...] | None,
) -> TableSchema:
    catalog_columns = {column.name: column for column in catalog.columns} if catalog is not None else {}
    columns: list[ColumnSchema] = []
    for described in relation.columns:
        pg_type, domain_modifier = type_of(described.type_oid)
        modifier = described.type_modifier if described.type_modifier != -1 else domain_modifier
        known = catalog_columns.get(described.name)
        # Nullable unless the catalog says otherwise for the same column: NULLs are what a column
        # without a constraint may hold, and a wrong NOT NULL in a sink would refuse rows.
        derived = column_schema(described.name, pg_type, modifier, known.nullable if known is not None else True)
        same = known is not None and all(getattr(known, f) == getattr(derived, f) for f in _COMPARED)
        columns.append(known if same and known is not None else derived)
    names = [column.name for column in columns]
    if key_override is not None:
        key = key_override
    elif catalog is not None and catalog.key_columns and all(k in names for k in catalog.key_columns):
        key = catalog.key_columns
    else:
        key = tuple(c.name for c in relation.columns if c.in_replica_identity)
    if catalog is not None and tuple(columns) == catalog.columns and key == catalog.key_columns:
        return catalog
    return TableSchema(relation.namespace, relation.name, tuple(columns), key)
