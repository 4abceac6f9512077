"""Two Bigtable calls of the live writer, made with raw protocol buffers.

The data client (``google.cloud.bigtable.data``) wraps every rule, mutation and returned cell in a
proto-plus object; for a 500-id append claim that wrapping (``Row._from_pb``, ``rule._to_pb``) cost
more than the call itself (profiled: ~60 % of a batched message's time). These helpers build the
request as a raw protobuf and read the raw response, through the same client's GAPIC stub (same
channel, credentials, routing headers and request path), so behaviour is the data client's.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.cloud.bigtable_v2.types import bigtable as bt
from google.cloud.bigtable_v2.types import data as bt_data

_RMW = bt.ReadModifyWriteRowRequest
_RULE = bt_data.ReadModifyWriteRule.pb()
_MUTATE_ROWS = bt.MutateRowsRequest
_ENTRY = bt.MutateRowsRequest.Entry.pb()
_MUTATION = bt_data.Mutation.pb()


def _path(table) -> dict:
    path = dict(table._request_path)  # {"table_name": ...} or {"authorized_view_name": ...}
    if table.app_profile_id:
        path["app_profile_id"] = table.app_profile_id
    return path


def append(table, key: bytes, family: str, qualifiers: Iterable[bytes], value: bytes, timeout: float) -> list:
    """``ReadModifyWriteRow`` appending ``value`` to each ``family:qualifier``; returns the
    (qualifier, new value) pairs of the modified cells."""
    raw = _RMW.pb()(
        row_key=key,
        rules=[_RULE(family_name=family, column_qualifier=q, append_value=value) for q in qualifiers],
        **_path(table),
    )
    resp = table.client._gapic_client.read_modify_write_row(request=_RMW.wrap(raw), timeout=timeout, retry=None)
    out = []
    for fam in type(resp).pb(resp).row.families:
        if fam.name == family:
            out += [(col.qualifier, col.cells[0].value) for col in fam.columns if col.cells]
    return out


def set_cells(table, rows: dict[bytes, list[tuple[str, bytes, bytes, int]]], timeout: float) -> None:
    """``MutateRows`` of SetCell mutations (idempotent, so retried by the GAPIC default policy);
    raises if any entry failed."""
    entries = []
    for key, cells in rows.items():
        muts = [
            _MUTATION(set_cell={"family_name": f, "column_qualifier": q, "value": v, "timestamp_micros": ts})
            for f, q, v, ts in cells
        ]
        entries.append(_ENTRY(row_key=key, mutations=muts))
    raw = _MUTATE_ROWS.pb()(entries=entries, **_path(table))
    stream = table.client._gapic_client.mutate_rows(request=_MUTATE_ROWS.wrap(raw), timeout=timeout)
    failed = []
    for resp in stream:
        for e in type(resp).pb(resp).entries:
            if e.status.code != 0:
                failed.append((e.index, e.status.code, e.status.message))
    if failed:
        raise RuntimeError(f"MutateRows: {len(failed)} of {len(entries)} entries failed, e.g. {failed[0]}")
