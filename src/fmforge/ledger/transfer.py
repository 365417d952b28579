"""Export and import: every stored event as a JSON record, and records appended back so that
the new ledger reproduces the old one's seqs and hashes exactly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fmforge.errors import ImportMismatch, InvalidEvent
from fmforge.ledger.events import (
    RawRow,
    canonical_json,
    decode_json,
    payload_digest,
    row_hash,
    split_refs,
    validate_event_id,
    validate_refs,
    validate_stream,
    validate_type,
)
from fmforge.ledger.records import Head

if TYPE_CHECKING:
    from fmforge.ledger.store import EventStore


def export_records(store: EventStore, from_seq: int = 1) -> Iterator[dict[str, Any]]:
    """Every stored event as a JSON-ready record, as stored (no upcasting)."""
    for row in store.read_raw(from_seq):
        seq, event_id, stream, version, etype, sv, data, meta, key_id, refs, ph, prev, h = row
        yield {
            "seq": seq,
            "event_id": event_id,
            "stream": stream,
            "version": version,
            "type": etype,
            "schema_version": sv,
            "data": None if data is None else decode_json(data),
            "meta": decode_json(meta),
            "refs": list(split_refs(refs)),
            "key_id": key_id,
            "payload_hash": bytes(ph).hex(),
            "prev_hash": bytes(prev).hex(),
            "hash": bytes(h).hex(),
        }


def import_records(
    store: EventStore, records: Iterable[Mapping[str, Any]], batch_size: int = 1000
) -> int:
    """Append exported records, reproducing their seq and hashes exactly; returns the count."""
    total = 0
    batch: list[RawRow] = []
    for record in records:
        batch.append(_record_to_row(record))
        if len(batch) >= batch_size:
            total += _import_batch(store, batch)
            batch = []
    if batch:
        total += _import_batch(store, batch)
    return total


def _import_batch(store: EventStore, rows: list[RawRow]) -> int:
    with store._write_mutex, store._write_transaction() as tx:
        head = tx.head()
        existing = tx.find_events([r[1] for r in rows])
        if existing:
            first = next(iter(existing))
            raise ImportMismatch(existing[first][0], f"event_id {first} is already recorded")
        versions: dict[str, int] = {}
        seq, prev = head.seq, head.hash
        for row in rows:
            r_seq, _eid, stream, version = row[0], row[1], row[2], row[3]
            if r_seq != seq + 1:
                raise ImportMismatch(r_seq, f"the ledger's next seq is {seq + 1}")
            if row[11] != prev:
                raise ImportMismatch(r_seq, "prev_hash does not match the ledger's head")
            current = versions.get(stream)
            if current is None:
                current = tx.stream_version(stream)
            if version != current + 1:
                raise ImportMismatch(r_seq, f"stream {stream!r} is at version {current}")
            if row[6] is not None and payload_digest(row[6]) != row[10]:
                raise ImportMismatch(r_seq, "payload does not match payload_hash")
            recomputed = row_hash(row)  # its prev_hash was checked just above
            if recomputed != row[12]:
                raise ImportMismatch(r_seq, "recomputed hash differs from the recorded one")
            versions[stream] = version
            seq, prev = r_seq, recomputed
        tx.insert(rows, len(rows))
        tx.set_head(Head(seq, prev))
    return len(rows)


def _record_to_row(record: Mapping[str, Any]) -> RawRow:
    try:
        seq = int(record["seq"])
        stream = validate_stream(record["stream"])
        etype = validate_type(record["type"])
        event_id = validate_event_id(record["event_id"])
        data = None if record["data"] is None else canonical_json(record["data"])
        meta = canonical_json(record["meta"], "meta")
        refs = validate_refs(record.get("refs") or [])
        row: RawRow = (
            seq, event_id, stream, int(record["version"]), etype, int(record["schema_version"]),
            data, meta, record.get("key_id"), refs, bytes.fromhex(record["payload_hash"]),
            bytes.fromhex(record["prev_hash"]), bytes.fromhex(record["hash"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"malformed event record (seq {record.get('seq')!r}): {exc!r}") from None
    return row
