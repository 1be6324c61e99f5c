"""The pairs manifest: ``train``'s input, one style to train per row (``content``, ``style`` photo
URIs and the style ``name``). It is validated whole before any training starts, so a typo in row
900 does not surface after hours of work.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.manifests import ManifestError
from pipeline.names import InvalidName, validate_name
from pipeline.storage import filesystem

__all__ = ["PAIRS_SCHEMA", "read_pairs"]

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("content", pa.string(), nullable=False),
        pa.field("style", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
    ]
)


def read_pairs(uri: str) -> pa.Table:
    """Read and validate a pairs manifest. Extra columns are kept (and ignored by ``train``).

    Refused, naming the file and row (counted from 1): missing required columns, non-string
    columns, no rows, empty values, invalid or duplicate names."""
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
    return table


def _is_string_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)
