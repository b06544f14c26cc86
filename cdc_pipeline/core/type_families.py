"""Families of source column types (MySQL's `DATA_TYPE` names), shared by masking and mapping."""

from __future__ import annotations

BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
TEXT_BLOB_TYPES = frozenset({"tinytext", "text", "mediumtext", "longtext"})
CHARACTER_TYPES = frozenset({"char", "varchar"})
SPATIAL_TYPES = frozenset(
    {
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
        "geomcollection",
    }
)
# Values that are text at the source, whatever their sink type.
TEXTUAL_TYPES = CHARACTER_TYPES | TEXT_BLOB_TYPES | {"json", "enum", "set"}
