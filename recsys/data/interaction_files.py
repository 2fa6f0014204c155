"""CSV, TSV and Parquet interaction files (``playlist_id,track_id[,weight,ts]``) and event logs.

Reading goes through pyarrow's multi-threaded parser; when it refuses a file, a
slow line-by-line pass finds the first offending line so the error names it.
A file with a ``type`` column is a feedback event log (``user_id,track_id,type
[,listen_ms,duration_ms,ts,received_ms]``) and is weighted by :mod:`recsys.events.weights`. Its
times are epoch milliseconds: ``ts`` as the client sent it, ``received_ms`` when the service
accepted the event; each listener's first and last time (``received_ms`` when the log has
it, else ``ts``) go into the table's ``row_meta``, for account trust (:mod:`recsys.trust`).
"""

from __future__ import annotations

import csv
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.data.accounts import account_times
from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions, Lineage
from recsys.data.lineage import file_sha256
from recsys.errors import DataFormatError, EmptyDataError
from recsys.events import weights as feedback

ROW_COLUMNS = ("playlist_id", "user_id")
NUMERIC_COLUMNS = {
    "weight": pa.float32(),
    "ts": pa.int64(),
    "listen_ms": pa.float64(),
    "duration_ms": pa.float64(),
    "received_ms": pa.int64(),
}
CLOCK_COLUMNS = ("received_ms", "ts")
"""An event log's times that tell an account's age, the most trustworthy first: the client
chooses ``ts``, the service stamps ``received_ms``."""


class DuplicatePolicy(StrEnum):
    """What to do with rows that repeat the same (playlist, track[, ts])."""

    ERROR = "error"
    SUM = "sum"
    MAX = "max"


def read_tabular(
    path: Path, *, delimiter: str | None = None, duplicates: DuplicatePolicy = DuplicatePolicy.ERROR
) -> Interactions:
    """Load interactions from a CSV, TSV or Parquet file.

    Parameters
    ----------
    path : Path
        The file. Its header must name ``playlist_id`` (or ``user_id``) and ``track_id``.
    delimiter : str, optional
        Field separator for text files; by default ``\\t`` for ``.tsv``/``.tab``, else ``,``.
    duplicates : DuplicatePolicy
        Repeated (playlist, track[, ts]) rows are an error by default; ``sum`` or ``max``
        merges them. Event logs always sum (repeated plays are real).

    Raises
    ------
    DataFormatError
        Missing columns, bad encoding, malformed rows or values, naming file and line.
    EmptyDataError
        The file has a header but no rows.
    """
    if path.suffix == ".parquet":
        table = _read_parquet(path)
    else:
        table = _read_text(path, delimiter or ("\t" if path.suffix in (".tsv", ".tab") else ","))
    if table.num_rows == 0:
        raise EmptyDataError(f"{path}: no rows after the header")
    row_column = _row_column(path, table.column_names)
    _check_nulls(path, table, [row_column, "track_id"])
    lineage = Lineage([str(path)], file_sha256(path), table.num_rows, _format_name(path))
    if "type" in table.column_names:
        return _from_events(path, table, row_column, lineage)
    return _from_interactions(path, table, row_column, lineage, duplicates)


def _format_name(path: Path) -> str:
    return "parquet" if path.suffix == ".parquet" else ("tsv" if path.suffix in (".tsv", ".tab") else "csv")


def _row_column(path: Path, columns: list[str]) -> str:
    row_column = next((c for c in ROW_COLUMNS if c in columns), None)
    missing = [c for c in (row_column or "playlist_id", "track_id") if c not in columns]
    if row_column is None or missing:
        raise DataFormatError(
            path,
            f"missing column(s) {', '.join(missing) or 'playlist_id'}; header has {columns}; "
            "expected playlist_id (or user_id), track_id[, weight, ts]",
            line=1,
        )
    return row_column


def _read_parquet(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataFormatError(path, f"not a readable Parquet file ({exc})") from exc
    casts = {
        c: pa.string()
        for c in ("playlist_id", "user_id", "track_id", "type")
        if c in table.column_names and not pa.types.is_dictionary(table.schema.field(c).type)
    }
    casts |= {c: t for c, t in NUMERIC_COLUMNS.items() if c in table.column_names}
    try:
        for name, typ in casts.items():
            idx = table.column_names.index(name)
            table = table.set_column(idx, name, table.column(name).cast(typ))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataFormatError(path, f"column types cannot be used ({exc})") from exc
    return table


def _read_text(path: Path, delimiter: str) -> pa.Table:
    header = _header(path, delimiter)
    types = {c: pa.string() for c in header if c not in NUMERIC_COLUMNS}
    types |= {c: t for c, t in NUMERIC_COLUMNS.items() if c in header}
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        line, reason = locate_problem(path, delimiter, header)
        raise DataFormatError(path, reason or f"unreadable ({exc})", line=line) from exc


def _header(path: Path, delimiter: str) -> list[str]:
    try:
        with path.open("rb") as fh:
            first = fh.readline()
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror})") from exc
    if not first.strip():
        raise EmptyDataError(f"{path}: empty file (a header line is required)")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "not UTF-8 text", line=1) from exc
    return [c.strip() for c in next(csv.reader([text], delimiter=delimiter))]


def locate_problem(path: Path, delimiter: str, header: list[str]) -> tuple[int | None, str | None]:
    """Find the first line pyarrow refused, with a reason a person can act on."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number, "not UTF-8 text"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader, None)
        for record in reader:
            line = reader.line_num
            if len(record) != len(header):
                hint = " (quote ids that contain the delimiter)" if len(record) > len(header) else ""
                return line, f"expected {len(header)} fields, found {len(record)}{hint}"
            for name, value in zip(header, record, strict=True):
                problem = _bad_value(name, value)
                if problem:
                    return line, problem
    return None, None


def _bad_value(name: str, value: str) -> str | None:
    if name not in NUMERIC_COLUMNS:
        return None
    try:
        number = float(value)
    except ValueError:
        return f"column {name}: {value!r} is not a number"
    if name == "ts" and not number.is_integer():
        return f"column ts: {value!r} is not an integer"
    return None


def _check_nulls(path: Path, table: pa.Table, columns: list[str]) -> None:
    for name in columns:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string()) if column.null_count or _has_empty_entry(column) else None
            if column is None:
                continue
        bad = pc.or_(pc.is_null(column), pc.equal(pc.utf8_length(column), 0))
        if pc.any(bad).as_py():
            row = int(pc.index(bad, True).as_py())
            raise DataFormatError(path, f"empty {name}", line=row + 2)


def _has_empty_entry(column: pa.ChunkedArray) -> bool:
    dictionary = column.combine_chunks().dictionary
    return bool(pc.any(pc.equal(pc.utf8_length(dictionary), 0)).as_py())


def _numeric(table: pa.Table, name: str, default: float, dtype: type) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=dtype)
    values: np.ndarray = table.column(name).to_numpy().astype(dtype, copy=False)
    return values


def _from_interactions(
    path: Path, table: pa.Table, row_column: str, lineage: Lineage, duplicates: DuplicatePolicy
) -> Interactions:
    weights = _numeric(table, "weight", 1.0, np.float32)
    if not np.all(np.isfinite(weights)):
        raise DataFormatError(
            path, "weight is not a finite number", line=int(np.argmin(np.isfinite(weights))) + 2
        )
    ts = _numeric(table, "ts", 0, np.int64) if "ts" in table.column_names else None
    row_ids, rows = IdMap.encode(table.column(row_column))
    item_ids, items = IdMap.encode(table.column("track_id"))
    rows, items, weights, ts = _resolve_duplicates(path, rows, items, weights, ts, len(item_ids), duplicates)
    return Interactions(rows, items, weights, row_ids, item_ids, ts=ts, lineage=lineage)


def _resolve_duplicates(
    path: Path,
    rows: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    ts: np.ndarray | None,
    n_items: int,
    policy: DuplicatePolicy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    key = rows.astype(np.int64) * n_items + items
    if not _has_repeats(key, ts):
        return rows, items, weights, ts
    order = np.lexsort((ts, key)) if ts is not None else np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    if ts is not None:
        same &= ts[order][1:] == ts[order][:-1]
    if not same.any():
        return rows, items, weights, ts
    if policy is DuplicatePolicy.ERROR:
        first_dup = int(np.argmax(same))
        line, earlier = int(order[first_dup + 1]) + 2, int(order[first_dup]) + 2
        raise DataFormatError(
            path,
            f"duplicated row (same playlist, track{' and ts' if ts is not None else ''} as line {earlier}); "
            "pass --duplicates sum|max to merge repeats",
            line=line,
        )
    group_start = np.concatenate(([True], ~same))
    group = np.cumsum(group_start) - 1
    keep = order[group_start]
    ufunc = np.add if policy is DuplicatePolicy.SUM else np.maximum
    merged = (
        np.zeros(len(keep), dtype=np.float32)
        if policy is DuplicatePolicy.SUM
        else np.full(len(keep), -np.inf, np.float32)
    )
    ufunc.at(merged, group, weights[order])
    keep_sorted = np.argsort(keep, kind="stable")
    keep = keep[keep_sorted]
    return rows[keep], items[keep], merged[keep_sorted], None if ts is None else ts[keep]


def _has_repeats(key: np.ndarray, ts: np.ndarray | None) -> bool:
    """Fast check by sorting values (not indices); one combined key when (key, ts) fits in int64."""
    if ts is not None:
        span = int(ts.max()) - int(ts.min()) + 1
        if int(key.max()) >= np.iinfo(np.int64).max // span:
            order = np.lexsort((ts, key))
            return bool(((key[order][1:] == key[order][:-1]) & (ts[order][1:] == ts[order][:-1])).any())
        key = key * span + (ts - ts.min())
    ordered = np.sort(key)
    return bool((ordered[1:] == ordered[:-1]).any())


def _from_events(path: Path, table: pa.Table, row_column: str, lineage: Lineage) -> Interactions:
    try:
        codes = feedback.type_codes(table.column("type").to_numpy(zero_copy_only=False))
    except ValueError as exc:
        raise DataFormatError(path, str(exc)) from exc
    listen = _numeric(table, "listen_ms", 0.0, np.float64)
    duration = (
        _numeric(table, "duration_ms", 0.0, np.float64) if "duration_ms" in table.column_names else None
    )
    order = _numeric(table, "ts", 0, np.int64) if "ts" in table.column_names else np.arange(table.num_rows)
    row_ids, rows = IdMap.encode(table.column(row_column))
    item_ids, items = IdMap.encode(table.column("track_id"))
    keys, weights = feedback.combine(
        keys=rows.astype(np.int64) * len(item_ids) + items,
        codes=codes,
        fractions=feedback.listened_fraction(listen, duration),
        order=order,
    )
    nonzero = weights != 0
    keys, weights = keys[nonzero], weights[nonzero]
    clock = next((c for c in CLOCK_COLUMNS if c in table.column_names), None)
    return Interactions(
        (keys // len(item_ids)).astype(np.int32),
        (keys % len(item_ids)).astype(np.int32),
        weights,
        row_ids,
        item_ids,
        lineage=lineage,
        row_meta=None if clock is None else _accounts(table, clock, rows, len(row_ids)),
    )


def _accounts(table: pa.Table, clock: str, rows: np.ndarray, n_rows: int) -> pa.Table:
    """Each listener's first/last event time by ``clock``, and which column that was."""
    meta = account_times(rows, _numeric(table, clock, 0, np.int64), n_rows)
    return meta.replace_schema_metadata({"clock": clock})


def write_tabular(
    path: Path, *, playlist_ids: pa.Array, track_ids: pa.Array, weights: np.ndarray, ts: np.ndarray
) -> None:
    """Write interactions as CSV/TSV (by suffix) or Parquet."""
    table = pa.table({"playlist_id": playlist_ids, "track_id": track_ids, "weight": weights, "ts": ts})
    if path.suffix == ".parquet":
        pq.write_table(table, path, compression="zstd")
        return
    delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
    pacsv.write_csv(
        table, path, write_options=pacsv.WriteOptions(delimiter=delimiter, quoting_style="needed")
    )
