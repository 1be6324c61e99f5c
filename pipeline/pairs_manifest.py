"""The pairs manifest: ``train``'s input, one style to train per row (``content``, ``style`` photo
URIs and the style ``name``; optionally ``extra_content``, a list of more photo URIs per row: a
sample of the collection the style is for). It is validated whole before any training starts, so
a typo in row 900 does not surface after hours of work.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.manifests import ManifestError
from pipeline.names import InvalidName, validate_name
from pipeline.storage import filesystem

__all__ = ["EXTRA_CONTENT_COLUMN", "MAX_EXTRA_CONTENT", "PAIRS_SCHEMA", "extra_content", "read_pairs"]

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("content", pa.string(), nullable=False),
        pa.field("style", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
    ]
)

EXTRA_CONTENT_COLUMN = "extra_content"  # optional: list<string>, null or [] where a row has none
# Training asks the look of one extra photo per iteration, in turn (150 in lite): more than this
# would go unseen, and each is read and held for the whole training.
MAX_EXTRA_CONTENT = 64


def read_pairs(uri: str) -> pa.Table:
    """Read and validate a pairs manifest. Extra columns are kept (and ignored by ``train``).

    Refused, naming the file and row (counted from 1): missing required columns, non-string
    columns, no rows, empty values, invalid or duplicate names, and an ``extra_content`` column
    that is not a list of strings or has an empty one, or more than ``MAX_EXTRA_CONTENT``."""
    fs, path = filesystem(uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except FileNotFoundError as exc:
        raise ManifestError(f"pairs manifest {uri}: no such file") from exc
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"pairs manifest {uri}: not a readable Parquet file ({exc})") from exc

    missing = [f.name for f in PAIRS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ManifestError(
            f"pairs manifest {uri}: missing column(s) {', '.join(missing)} "
            f"(required: {', '.join(PAIRS_SCHEMA.names)}; found: {', '.join(table.column_names) or 'none'})"
        )
    for field in PAIRS_SCHEMA:
        column = table.column(field.name)
        if not _is_string_like(column.type):
            raise ManifestError(f"pairs manifest {uri}: column {field.name!r} must hold strings, not {column.type}")
        table = table.set_column(table.schema.get_field_index(field.name), field.name, column.cast(pa.string()))
    if table.num_rows == 0:
        raise ManifestError(f"pairs manifest {uri}: no rows (nothing to train)")

    def row(i: int) -> str:
        return f"pairs manifest {uri}: row {i + 1} of {table.num_rows}"

    for field in PAIRS_SCHEMA:
        column = table[field.name]
        first = pc.index(pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(column), 0)), True).as_py()
        if first >= 0:
            raise ManifestError(f"{row(first)}: empty {field.name!r}")
    first_row: dict[str, int] = {}
    for i, name in enumerate(table["name"].to_pylist()):
        try:
            validate_name(name)
        except InvalidName as exc:
            raise ManifestError(f"{row(i)}: {exc}") from exc
        if name in first_row:
            raise ManifestError(f"{row(i)}: duplicate name {name!r} (first at row {first_row[name] + 1})")
        first_row[name] = i
    if EXTRA_CONTENT_COLUMN in table.column_names:
        _check_extra_content(table, uri)
    return table


def extra_content(table: pa.Table) -> list[list[str]]:
    """Each row's extra content photo URIs, as given (``[]`` where it has none or no column)."""
    if EXTRA_CONTENT_COLUMN not in table.column_names:
        return [[] for _ in range(table.num_rows)]
    return [list(uris or []) for uris in table[EXTRA_CONTENT_COLUMN].to_pylist()]


def _check_extra_content(table: pa.Table, uri: str) -> None:
    column_type = table.schema.field(EXTRA_CONTENT_COLUMN).type
    is_list = pa.types.is_list(column_type) or pa.types.is_large_list(column_type)
    if not is_list or not _is_string_like(column_type.value_type):
        raise ManifestError(f"pairs manifest {uri}: column {EXTRA_CONTENT_COLUMN!r} must hold lists of strings, not {column_type}")
    for i, photos in enumerate(extra_content(table)):
        where = f"pairs manifest {uri}: row {i + 1} of {table.num_rows}"
        if len(photos) > MAX_EXTRA_CONTENT:
            raise ManifestError(f"{where}: {len(photos)} extra content photos, at most {MAX_EXTRA_CONTENT}")
        if any(not photo for photo in photos):
            raise ManifestError(f"{where}: an empty URI in {EXTRA_CONTENT_COLUMN!r}")


def _is_string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)
