"""Applies the masking rules to a batch before anything leaves the masking step."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cdc_pipeline.config.models import MaskAction, MaskingConfig
from cdc_pipeline.core.cells import CollectionWrite
from cdc_pipeline.core.changes import ChangeBatch, Rejection, RowChange, TableChanges
from cdc_pipeline.core.schema import ColumnSchema, TableSchema, split_qualified
from cdc_pipeline.core.schema_changes import SchemaChange
from cdc_pipeline.core.type_families import BINARY_TYPES, TEXTUAL_TYPES
from cdc_pipeline.masking.classification import classify_column

REDACTED = "[REDACTED]"
# Put in a payload in place of a value that could not be masked: the raw value never leaves.
UNMASKABLE = "[REDACTED: masking failed]"
_KEY_SAFE_ACTIONS = frozenset({"hash", "token", "none"})


class MaskingError(ValueError):
    """A masking rule cannot be applied; the message names the table, column and rule."""


class MaskRuleFindsNoColumn(MaskingError):
    """A rule names a table's column literally and the table has no such column (a typo): which
    column it meant is unknown, so no value of the table's rows but the key may be kept."""


@dataclass(frozen=True)
class ColumnMask:
    column: str
    action: MaskAction
    length: int | None
    origin: str  # why this column is masked: which rule, or which PII class


def _value_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, frozenset):
        return ",".join(sorted(value)).encode()
    return str(value).encode()


# A value masking refused was never masked, so its letter keeps only column names: nothing to replay.
MASK_NOT_REPLAYABLE = "masking failed before the value was masked; fix the rule and re-sync the table"


class Masker:
    def __init__(self, config: MaskingConfig, hmac_key: str | None) -> None:
        self._config = config
        self._key = hmac_key.encode() if hmac_key else None
        self._plans: dict[tuple[str, tuple[str, ...]], dict[str, ColumnMask]] = {}
        # Indexes of the rules whose table pattern matched a table this masker saw, and of those that
        # matched one of its columns too: a rule in the first set only (a typo, a column renamed
        # away) is reported, see unmatched_rules().
        self._rules_seeing_a_table: set[int] = set()
        self._matched_rules: set[int] = set()

    # -- which columns ---------------------------------------------------------------------------

    def plan(self, qualified_table: str, column_names: list[str]) -> dict[str, ColumnMask]:
        """Column -> mask for one table; explicit rules win over name classification, last rule wins."""
        cache_key = (qualified_table, tuple(column_names))
        if cache_key in self._plans:
            return self._plans[cache_key]
        plan: dict[str, ColumnMask] = {}
        rules_for_table = {
            index for index, rule in enumerate(self._config.rules) if _names_table(rule.table, qualified_table)
        }
        self._rules_seeing_a_table.update(rules_for_table)
        for column in column_names:
            mask = None
            if self._config.classify_by_name:
                pii_class = classify_column(column)
                if pii_class is not None:
                    mask = ColumnMask(column, pii_class.action, None, f"classified as {pii_class.name}")
            for index, rule in enumerate(self._config.rules):
                if index in rules_for_table and fnmatch.fnmatchcase(column, rule.column):
                    mask = ColumnMask(column, rule.action, rule.length, f"masking.rules[{index}]")
                    self._matched_rules.add(index)
            if mask is not None and mask.action != "none":
                plan[column] = mask
        self._plans[cache_key] = plan
        return plan

    def masked_schema(self, schema: TableSchema) -> TableSchema:
        """The schema the sinks see: hashed/tokenised/redacted columns become text."""
        plan = self.plan(schema.qualified_name, schema.column_names)
        self._check_plan(schema, plan)
        columns: list[ColumnSchema] = []
        for column in schema.columns:
            mask = plan.get(column.name)
            if mask is None or mask.action == "truncate":
                columns.append(column)
            elif mask.action == "null":
                columns.append(replace(column, nullable=True, masked_as_null=True))
            else:
                columns.append(column.as_masked_text())
        return schema.with_columns(tuple(columns))

    def unmatched_rules(self) -> list[str]:
        """The rules whose table pattern matched tables seen so far but whose column pattern matched no
        column of them, as `masking.rules[i] (table.column)`."""
        return [
            f"masking.rules[{index}] ({rule.table}.{rule.column})"
            for index, rule in enumerate(self._config.rules)
            if index in self._rules_seeing_a_table and index not in self._matched_rules
        ]

    def _check_rules_name_real_columns(self, schema: TableSchema) -> None:
        """A rule that names this table and one column literally must find that column: a typo
        (`secret_cod`) would otherwise leave the real column unmasked in every sink."""
        for index, rule in enumerate(self._config.rules):
            if _is_glob(rule.table) or _is_glob(rule.column) or not _names_table(rule.table, schema.qualified_name):
                continue
            if rule.column in schema.column_names:
                continue
            near = [name for name in schema.column_names if name.lower() == rule.column.lower()]
            hint = f" (did you mean {near[0]!r}? rules match names exactly)" if near else ""
            raise MaskRuleFindsNoColumn(
                f"masking.rules[{index}] names column {rule.column!r} of table {schema.qualified_name}, which has"
                f" no such column{hint}; fix the rule, then re-sync the table"
            )

    def _check_plan(self, schema: TableSchema, plan: dict[str, ColumnMask]) -> None:
        self._check_rules_name_real_columns(schema)
        for mask in plan.values():
            where = f"table {schema.qualified_name}, column {mask.column} ({mask.origin})"
            if mask.column in schema.key_columns and mask.action not in _KEY_SAFE_ACTIONS:
                raise MaskingError(
                    f"{where}: action '{mask.action}' on a key column would merge distinct rows; use hash or token"
                )
            if mask.action == "truncate":
                data_type = schema.column(mask.column).data_type
                if data_type not in TEXTUAL_TYPES | BINARY_TYPES:
                    raise MaskingError(f"{where}: 'truncate' applies to text or binary columns, not {data_type}")
            if mask.action in ("hash", "token") and self._key is None:
                raise MaskingError(
                    f"{where}: action '{mask.action}' needs the HMAC key in ${self._config.hmac_key_env},"
                    " which is not set"
                )

    # -- the values ------------------------------------------------------------------------------

    def _mask_function(self, mask: ColumnMask) -> Callable[[Any], Any]:
        key = self._key
        if mask.action == "hash":
            assert key is not None
            return lambda v: None if v is None else hmac.new(key, _value_bytes(v), hashlib.sha256).hexdigest()
        if mask.action == "token":
            assert key is not None
            # A separate derivation so a token cannot be matched against a hash of the same value.
            token_key = hmac.new(key, b"cdc-token", hashlib.sha256).digest()
            return lambda v: (
                None if v is None else "tok_" + hmac.new(token_key, _value_bytes(v), hashlib.sha256).hexdigest()[:20]
            )
        if mask.action == "redact":
            return lambda v: None if v is None else REDACTED
        if mask.action == "null":
            return lambda v: None
        length = mask.length or 0
        return lambda v: None if v is None else v[:length]

    def mask_batch(self, batch: ChangeBatch) -> ChangeBatch:
        """Mask every value and every rejection payload of `batch`, in place."""
        masked_tables: dict[str, TableChanges] = {}
        for qualified, table in batch.tables.items():
            try:
                schema = self.masked_schema(table.schema)
            except MaskingError as error:
                hidden: set[str] = set(self.plan(qualified, table.schema.column_names))
                if isinstance(error, MaskRuleFindsNoColumn):
                    # The column the rule meant is unknown: only the key (unless masked) stays readable.
                    hidden |= {c for c in table.schema.column_names if c not in table.schema.key_columns}
                for change in table.changes:
                    payload = {k: (UNMASKABLE if k in hidden else v) for k, v in change.values.items()}
                    batch.rejections.append(_unmaskable(qualified, change, error, payload))
                continue
            functions = {
                column: self._mask_function(mask)
                for column, mask in self.plan(qualified, table.schema.column_names).items()
            }
            if schema.merges_cells:
                kept = self._mask_cell_changes(table.schema, table.changes, batch.rejections)
                masked_tables[qualified] = TableChanges(schema, kept, table.shape_source)
                continue
            for change in table.changes:
                values = change.values
                for column, function in functions.items():
                    values[column] = function(values[column])
            masked_tables[qualified] = TableChanges(schema, table.changes, table.shape_source)
        batch.tables = masked_tables
        batch.schema_changes = [self._mask_schema_change(change) for change in batch.schema_changes]
        batch.rejections = [self._mask_rejection(rejection) for rejection in batch.rejections]
        batch.masked = True
        return batch

    def _mask_schema_change(self, change: SchemaChange) -> SchemaChange:
        """An added column's default is a value the existing rows take: masked like theirs."""
        if not change.has_default or change.column is None or change.default is None:
            return change
        mask = self.plan(change.table, [change.column]).get(change.column)
        if mask is None:
            return change
        return replace(change, default=self._mask_function(mask)(change.default))

    def _cell_mask_function(self, mask: ColumnMask) -> Callable[[Any], Any]:
        if mask.action != "null":
            return self._mask_function(mask)
        # A cell table keeps the write (a row written only through this column is live, and the
        # write still beats older ones) with a placeholder the sinks never show (masked_as_null).
        return lambda v: None if v is None else REDACTED

    def _mask_cell_changes(
        self, schema: TableSchema, changes: list[RowChange], rejections: list[Rejection]
    ) -> list[RowChange]:
        """Mask the columns each change carries (a cell change holds only the columns it wrote)."""
        qualified = schema.qualified_name
        plan = self.plan(qualified, schema.column_names)
        functions = {column: self._cell_mask_function(mask) for column, mask in plan.items()}
        masked_clustering = [
            (position, column) for position, column in enumerate(schema.clustering_columns) if column in plan
        ]
        kept: list[RowChange] = []
        for change in changes:
            values = change.values
            try:
                self._check_ranges(qualified, change, masked_clustering)
                for column, function in functions.items():
                    if column not in values:
                        continue
                    value = values[column]
                    try:
                        values[column] = (
                            value.map_elements(function) if isinstance(value, CollectionWrite) else function(value)
                        )
                    except (TypeError, ValueError, AttributeError) as error:
                        raise MaskingError(
                            f"table {qualified}, column {column} ({plan[column].origin}): action"
                            f" '{plan[column].action}' cannot mask this value: {type(error).__name__}"
                        ) from None
            except MaskingError as error:
                payload = {k: (UNMASKABLE if k in plan else v) for k, v in values.items()}
                rejections.append(_unmaskable(qualified, change, error, payload))
                continue
            kept.append(change)
        return kept

    @staticmethod
    def _check_ranges(qualified: str, change: RowChange, masked_clustering: list[tuple[int, str]]) -> None:
        """A range deletion whose bounds reach a masked clustering column cannot be evaluated on
        the masked values the sinks hold (hashes do not keep the order)."""
        if change.cells is None:
            return
        for deletion in change.cells.range_deletions:
            reach = max(len(deletion.start.values), len(deletion.end.values))
            for position, column in masked_clustering:
                if position < reach:
                    raise MaskingError(
                        f"table {qualified}, column {column}: a range deletion bounds this masked clustering"
                        " column; masked values do not keep the order the range needs, so it cannot be applied"
                    )

    def _mask_rejection(self, rejection: Rejection) -> Rejection:
        if rejection.stage == "mask":
            return rejection  # built masked above
        plan = self.plan(rejection.table, list(rejection.payload))
        payload = dict(rejection.payload)
        for column, mask in plan.items():
            try:
                payload[column] = self._mask_function(mask)(payload[column])
            except Exception:  # a value the rule cannot handle is dropped, never kept raw
                payload[column] = UNMASKABLE
        return replace(rejection, payload=payload)


def _names_table(pattern: str, qualified_table: str) -> bool:
    """Whether a rule's `database.table` pattern matches the table. Table selection matches the plain
    `database.table` text, where a dot inside a name is just a character: so does masking, and the
    pipeline's quoted form (`p.q`.t) matches too, so that a rule never misses a selected table."""
    database, table = split_qualified(qualified_table)
    return fnmatch.fnmatchcase(f"{database}.{table}", pattern) or fnmatch.fnmatchcase(qualified_table, pattern)


def _is_glob(pattern: str) -> bool:
    return any(character in pattern for character in "*?[")


def _unmaskable(table: str, change: RowChange, error: MaskingError, payload: dict[str, Any]) -> Rejection:
    """A change masking refused, for the DLQ: `payload` holds no value that should have been masked."""
    return Rejection(
        "mask",
        table,
        change.op,
        str(error),
        change.position,
        change.version,
        payload,
        not_replayable=MASK_NOT_REPLAYABLE,
    )
