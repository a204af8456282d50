"""``meshsyncd import`` and ``export`` for MEMSHADOW v2 memory-sync batches (SPEC.md section 8).

Import reads every file first (``protocol.memshadow.parse_memshadow``: a bad file stops
everything with a one-line error, status 2, before anything is written), maps each item by
the rules of SPEC.md 8.4 (tier + 1, 32-hex ids kept, other ids hashed, origin from the
batch's ``source_node``, DELETE as a tombstone, REPLICATE refused) and hands the versions to
the node's ``import_versions`` control operation, which keeps their timestamps and refuses
those beyond the clock-skew limit. Export pages through the ``changes`` operation and writes
batches of at most 255 items, so the header's 8-bit item count never wraps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from protocol import Op, Priority, ProtocolError, Tier
from protocol import memshadow as MS

from ..client import Client
from .clientcli import (
    Column,
    Fail,
    OneLineCommand,
    Output,
    emit_json,
    node_options,
    print_table,
    tier_arg,
)

__all__ = ["export", "import_command", "plan_import"]

MAX_BATCH_ITEMS = 255  # the v2 header counts items in one byte
CHUNK_VERSIONS = 2000
CHUNK_BYTES = 1 << 20  # value bytes per import request (base64 keeps it under the 2 MiB line)
OUTCOMES = ("applied", "present", "unchanged", "would_apply", "refused")


@dataclass
class Plan:
    """What an import will send, per (tier, origin), and what it refuses before sending."""

    groups: dict[tuple[Tier, int], list[dict[str, Any]]] = field(default_factory=dict)
    where: dict[tuple[Tier, int], list[str]] = field(default_factory=dict)
    refused: list[dict[str, Any]] = field(default_factory=list)
    hashed_ids: int = 0


def _where(path: Path, index: int, item: MS.MemshadowItem) -> str:
    return f"{path} item {index} (id {item.item_id_text!r})"


def plan_import(batches: list[tuple[Path, MS.MemshadowBatch]]) -> Plan:
    """Map MEMSHADOW items to versions for ``import_versions`` (SPEC.md 8.4).

    Two items with the same id and timestamp but other content cannot be ordered by the
    conflict order (their keys are equal); the later one is refused rather than letting
    file order decide.
    """
    plan = Plan()
    seen: dict[tuple[Tier, bytes, int, int], tuple[int, bytes]] = {}
    for path, batch in batches:
        origin = MS.import_origin(batch.source_node)
        for index, item in enumerate(batch.items):
            reason = _refusal(item)
            where = _where(path, index, item)
            if reason:
                plan.refused.append({"where": where, "op": item.op.name.lower(), "reason": reason})
                continue
            tier = item.tier.to_tier()
            iid = MS.import_item_id(item.item_id)
            plan.hashed_ids += iid.hex().encode() != item.item_id
            payload = b"" if item.op == Op.DELETE else item.payload
            key = (tier, iid, item.timestamp_ns, origin)
            if seen.setdefault(key, (item.op, payload)) != (item.op, payload):
                reason = "same id and timestamp as an earlier item with other content"
                plan.refused.append({"where": where, "op": item.op.name.lower(), "reason": reason})
                continue
            version = {
                "item_id": iid.hex(),
                "timestamp_ns": item.timestamp_ns,
                "op": item.op.name.lower(),
                "priority": item.priority.name.lower(),
            }
            if item.op != Op.DELETE:
                version["value_b64"] = base64.b64encode(payload).decode("ascii")
            plan.groups.setdefault((tier, origin), []).append(version)
            plan.where.setdefault((tier, origin), []).append(where)
    return plan


def _refusal(item: MS.MemshadowItem) -> str | None:
    if item.op == Op.REPLICATE:
        return "REPLICATE is a request for data, not data"
    if not item.item_id:
        return "empty item id"
    if item.op == Op.MERGE:
        try:
            obj = json.loads(item.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            return "MERGE payload is not a JSON object"
    return None


def _chunks(versions: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(start, end) slices of at most CHUNK_VERSIONS versions and about CHUNK_BYTES."""
    out, start, size = [], 0, 0
    for index, version in enumerate(versions):
        cost = len(version.get("value_b64", "")) * 3 // 4
        if index > start and (index - start >= CHUNK_VERSIONS or size + cost > CHUNK_BYTES):
            out.append((start, index))
            start, size = index, 0
        size += cost
    if start < len(versions):
        out.append((start, len(versions)))
    return out


def _read_batches(files: tuple[Path, ...]) -> list[tuple[Path, MS.MemshadowBatch]]:
    out = []
    limit = MS.HEADER_SIZE + MS.MAX_PAYLOAD_LEN
    for path in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise Fail(f"cannot read {path}: {exc.strerror or exc}", 2) from None
        if len(data) > limit:
            raise Fail(f"{path}: larger than any MEMSHADOW batch ({limit} bytes)", 2)
        try:
            out.append((path, MS.parse_memshadow(data)))
        except ProtocolError as exc:
            raise Fail(f"{path}: not a valid MEMSHADOW batch: {exc}", 2) from None
    return out


@click.command("import", cls=OneLineCommand)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["memshadow"]), required=True, help="Input format."
)
@click.option("--dry-run", is_flag=True, help="Check and count, write nothing.")
@node_options
def import_command(
    client: Client, output: Output, files: tuple[Path, ...], fmt: str, dry_run: bool
) -> None:
    """Write the items of MEMSHADOW v2 batch files into this node, timestamps kept.

    Tiers 1/2/3 become working/episodic/semantic; 32-hex ids are kept, other ids are
    hashed (protocol/SPEC.md 8.4); DELETE is a tombstone, MERGE a merge; REPLICATE items
    and items stamped beyond the clock-skew limit are refused and listed. Importing the
    same files again changes nothing. Exit status 1 when anything was refused.

    \b
    Examples:
      meshsyncd import --format memshadow batch-0001.bin batch-0002.bin
      meshsyncd import --format memshadow --dry-run exported/*.bin --json
    """
    plan = plan_import(_read_batches(files))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    refused = list(plan.refused)
    for entry in refused:
        counts[entry["op"]]["refused"] += 1
    for (tier, origin), versions in plan.groups.items():
        where = plan.where[(tier, origin)]
        for start, end in _chunks(versions):
            result = client.request(
                "import_versions",
                {
                    "tier": tier.name.lower(),
                    "origin": f"{origin:016x}",
                    "versions": versions[start:end],
                    "dry_run": dry_run,
                },
                deadline=120.0,
            )
            for op, outcomes in result["counts"].items():
                for outcome, n in outcomes.items():
                    counts[op][outcome] += n
            for entry in result["refused"]:
                op = versions[start + entry["index"]]["op"]
                counts[op]["refused"] += 1
                refused.append(
                    {"where": where[start + entry["index"]], "op": op, "reason": entry["reason"]}
                )
    report = {
        "dry_run": dry_run,
        "files": len(files),
        "hashed_ids": plan.hashed_ids,
        "counts": {op: dict(c) for op, c in sorted(counts.items())},
        "refused": refused,
    }
    _print_import(report, output)
    if refused:
        raise Fail(f"{len(refused)} item(s) refused", 1)


def _print_import(report: dict[str, Any], output: Output) -> None:
    if output.json:
        emit_json(report)
        return
    shown = [o for o in OUTCOMES if any(o in c for c in report["counts"].values())]
    rows = [[op, *(c.get(o, 0) for o in shown)] for op, c in report["counts"].items()]
    click.echo(f"{'dry run: ' if report['dry_run'] else ''}{report['files']} file(s)")
    if rows:
        columns = [Column("op"), *(Column(o, right=True) for o in shown)]
        print_table(columns, rows, wide=output.wide)
    for entry in report["refused"]:
        click.echo(f"refused: {entry['where']}: {entry['reason']}")


@click.command(cls=OneLineCommand)
@click.option(
    "--format", "fmt", type=click.Choice(["memshadow"]), required=True, help="Output format."
)
@click.option("--tier", required=True, help="Tier to export: working|episodic|semantic.")
@click.option(
    "--since", type=click.IntRange(min=0), default=0, help="Only rows changed after local SEQ."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for the batch files.",
)
@node_options
def export(client: Client, output: Output, fmt: str, tier: str, since: int, out: Path) -> None:
    """Write a tier's changes after local sequence SEQ as MEMSHADOW v2 batch files.

    Each file is one MEMORY_SYNC batch of at most 255 items that MEMSHADOW's
    MemorySyncBatch.unpack reads; ids are written as 32 hex digits. Values over 65,535
    bytes do not fit an item and are skipped and listed. The report's to_seq is the
    --since of the next incremental export.

    \b
    Examples:
      meshsyncd export --format memshadow --tier semantic --out /tmp/ms
      meshsyncd export --format memshadow --tier episodic --since 1200 --out ./delta --json
    """
    tier_name = tier_arg(tier)
    ms_tier = MS.MsTier.of(Tier[tier_name.upper()])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Fail(f"cannot create {out}: {exc.strerror or exc}", 2) from None
    node = str(client.status()["node_id"])
    pending: list[tuple[int, MS.MemshadowItem]] = []
    files: list[str] = []
    written = 0
    skipped: list[dict[str, Any]] = []
    after = since
    while True:
        page = client.request("changes", {"tier": tier_name, "after_seq": after, "limit": 1000})
        for version in page["versions"]:
            value = base64.b64decode(version["value_b64"])
            if len(value) > MS.MAX_ITEM_PAYLOAD:
                skipped.append({"item_id": version["item_id"], "size": len(value)})
                continue
            item = MS.MemshadowItem(
                item_id=version["item_id"].encode("ascii"),
                timestamp_ns=version["timestamp_ns"],
                tier=ms_tier,
                op=Op[version["op"].upper()],
                priority=Priority[version["priority"].upper()],
                payload=value,
            )
            pending.append((version["seq"], item))
            written += 1
            if len(pending) == MAX_BATCH_ITEMS:
                files.append(_write_batch(out, node, ms_tier, len(files), pending))
                pending = []
        after = page["to_seq"]
        if not page["more"]:
            break
    if pending:
        files.append(_write_batch(out, node, ms_tier, len(files), pending))
    report = {
        "tier": tier_name,
        "since": since,
        "to_seq": after,
        "files": files,
        "items": written,
        "skipped": skipped,
    }
    if output.json:
        emit_json(report)
    else:
        click.echo(f"{report['items']} item(s) in {len(files)} file(s); next --since {after}")
        for name in files:
            click.echo(name)
        for entry in skipped:
            click.echo(f"skipped: {entry['item_id']}: value of {entry['size']} bytes > 65535")


def _write_batch(
    out: Path, node: str, tier: MS.MsTier, index: int, items: list[tuple[int, MS.MemshadowItem]]
) -> str:
    """One batch file, written to a temporary name and renamed (never a half file)."""
    first, last = items[0][0], items[-1][0]
    digest = hashlib.sha256(f"{node}/{tier.name}/{first}/{last}/{index}".encode()).hexdigest()
    batch = MS.MemshadowBatch(
        batch_id=digest[:16],
        source_node=node,
        target_node="",
        tier=tier,
        items=tuple(item for _, item in items),
        flags=int(MS.SyncFlag.DELTA_ONLY),
        timestamp_ns=time.time_ns(),
    )
    path = out / f"memshadow-{tier.to_tier().name.lower()}-{index:05d}-seq{first}-{last}.bin"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(MS.pack_memshadow(batch))
        os.replace(tmp, path)
    except OSError as exc:
        raise Fail(f"cannot write {path}: {exc.strerror or exc}", 1) from None
    return str(path)
