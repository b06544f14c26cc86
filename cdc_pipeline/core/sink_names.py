"""The name a source table takes in every sink."""

from __future__ import annotations

from cdc_pipeline.core.schema import split_qualified


def sink_table_name(source_table: str) -> str:
    """`shop.orders` -> `shop__orders`: one sink namespace holds tables of several source databases.

    Not unique (`p`.`a__b` and `p__a`.`b`; two sources with one table): the config refuses such
    literal tables at load, and the sinks' owner claims hold the second of two tables met at run time.
    """
    database, table = split_qualified(source_table)
    return f"{database}__{table}"
