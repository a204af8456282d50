"""Golden vectors as data: JSON descriptions <-> protocol objects.

Shared by the generator (``make_vectors.py``) and the golden tests, so that the JSON form of a
vector is defined once. A vector is ``NAME.bin`` plus ``NAME.json``; the JSON says what the
bytes mean, field by field, so that another implementation can use the vectors without
reading our code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zstandard

import protocol as P

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def item_to_json(item: P.Item) -> dict[str, Any]:
    out = _item_fields(item)
    name = item.name
    if name is not None:  # NAMED (SPEC.md section 2.1): spelled out for other implementations
        out["name"] = {"namespace": list(name.namespace), "key": name.key}
        out["name_block_hex"] = P.name_block(name.namespace, name.key).hex()
    base = item.base
    if base is not None:  # BASED (SPEC.md section 2.2)
        out["base"] = {"timestamp_ns": base[0], "origin": base[1]}
    return out


def _item_fields(item: P.Item) -> dict[str, Any]:
    return {
        "item_id": item.item_id.hex(),
        "timestamp_ns": item.timestamp_ns,
        "origin": item.origin,
        "version": 2,
        "tier": item.tier.name,
        "op": item.op.name,
        "priority": item.priority.name,
        "flags": item.flags,
        "payload_hex": item.payload.hex(),
    }


def item_from_json(d: dict[str, Any]) -> P.Item:
    return P.Item(
        item_id=bytes.fromhex(d["item_id"]),
        timestamp_ns=d["timestamp_ns"],
        origin=d["origin"],
        tier=P.Tier[d["tier"]],
        op=P.Op[d["op"]],
        priority=P.Priority[d["priority"]],
        flags=d["flags"],
        payload=bytes.fromhex(d["payload_hex"]),
    )


def batch_to_json(batch: P.Batch, *, body_zstd: bool) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id.hex(),
        "source": batch.source,
        "target": batch.target,
        "tier": batch.tier.name,
        "body_zstd": body_zstd,
        "items": [item_to_json(i) for i in batch.items],
    }


def batch_from_json(d: dict[str, Any]) -> P.Batch:
    return P.Batch(
        batch_id=bytes.fromhex(d["batch_id"]),
        source=d["source"],
        target=d["target"],
        tier=P.Tier[d["tier"]],
        items=tuple(item_from_json(i) for i in d["items"]),
    )


def frame_to_json(frame: P.Frame) -> dict[str, Any]:
    out: dict[str, Any] = {"type": frame.NAME}
    if isinstance(frame, P.Hello):
        out |= {
            "version": frame.version,
            "node_id": frame.node_id.hex(),
            "incarnation": frame.incarnation.hex(),
            "capabilities": frame.capabilities,
            "timestamp_ns": frame.timestamp_ns,
        }
    elif isinstance(frame, P.Pull):
        out |= {
            "request_id": frame.request_id,
            "tier": frame.tier.name,
            "after_seq": frame.after_seq,
            "max_items": frame.max_items,
            "max_bytes": frame.max_bytes,
        }
    elif isinstance(frame, P.BatchFrame):
        out |= {
            "request_id": frame.request_id,
            "from_seq": frame.from_seq,
            "to_seq": frame.to_seq,
            "more": frame.more,
            "batch_hex": frame.batch.hex(),
        }
    elif isinstance(frame, P.Ack):
        out |= {"request_id": frame.request_id, "tier": frame.tier.name, "seq": frame.seq}
    elif isinstance(frame, P.Push):
        out |= {"batch_hex": frame.batch.hex()}
    elif isinstance(frame, P.HopPush):
        out |= {"hops": frame.hops, "batch_hex": frame.batch.hex()}
    elif isinstance(frame, P.Replicate):
        out |= {
            "request_id": frame.request_id,
            "tier": frame.tier.name,
            "item_id": frame.item_id.hex(),
        }
    elif isinstance(frame, P.Ping):
        out |= {"nonce": frame.nonce, "timestamp_ns": frame.timestamp_ns}
    elif isinstance(frame, P.Pong):
        out |= {"nonce": frame.nonce, "echo_ns": frame.echo_ns, "timestamp_ns": frame.timestamp_ns}
    elif isinstance(frame, P.Error | P.Bye):
        out |= {"code": frame.code, "text": frame.text}
    elif isinstance(frame, P.Digest):
        out |= {"tier": frame.tier.name, "seq": frame.seq, "digest": frame.digest.hex()}
    elif isinstance(frame, P.Barrier):
        out |= {
            "barrier_id": frame.barrier_id.hex(),
            "budget_ms": frame.budget_ms,
            "hops": frame.hops,
        }
    elif isinstance(frame, P.BarrierDone):
        out |= {
            "barrier_id": frame.barrier_id.hex(),
            "status": frame.status.name,
            "nodes": [[node.hex(), state.name] for node, state in frame.nodes],
        }
    elif isinstance(frame, P.Ranges):
        out |= {"request_id": frame.request_id, "tier": frame.tier.name, "reply": frame.reply}
        out["ranges"] = [[r.lo.hex(), r.hi.hex(), r.count, r.digest.hex()] for r in frame.ranges]
    elif isinstance(frame, P.RangeIds):
        out |= {"request_id": frame.request_id, "tier": frame.tier.name, "reply": frame.reply}
        out["ranges"] = [
            [r.lo.hex(), r.hi.hex(), [[i.hex(), h.hex()] for i, h in r.entries]]
            for r in frame.ranges
        ]
    elif isinstance(frame, P.Members):
        out |= {"kind": frame.kind.name, "members": [_member_to_json(m) for m in frame.members]}
    elif isinstance(frame, P.Prune):
        out |= {"graft": frame.graft, "origins": list(frame.origins)}
    elif isinstance(frame, P.Links):
        out["records"] = [
            {"node_id": r.node_id.hex(), "version": r.version, "peers": list(r.peers)}
            for r in frame.records
        ]
    return out


def _member_to_json(m: P.Member) -> dict[str, Any]:
    return {
        "node_id": m.node_id.hex(),
        "state": m.state.name,
        "tiers": m.tiers,
        "write_tiers": m.write_tiers,
        "heartbeat": m.heartbeat,
        "host": m.host,
        "port": m.port,
    }


def _members_from_json(cls: type[P.Frame], f: dict[str, Any]) -> P.Frame:
    """The membership frames (SPEC.md 4.3)."""
    if cls is P.Prune:
        return P.Prune(graft=f["graft"], origins=tuple(f["origins"]))
    members = tuple(
        P.Member(
            bytes.fromhex(m["node_id"]),
            P.MemberState[m["state"]],
            m["tiers"],
            m["write_tiers"],
            m["heartbeat"],
            m["host"],
            m["port"],
        )
        for m in f["members"]
    )
    return P.Members(kind=P.MemberKind[f["kind"]], members=members)


def _mesh_from_json(cls: type[P.Frame], f: dict[str, Any]) -> P.Frame:
    """The protocol-2 frames, whose fields nest (nodes, ranges, entries)."""
    if "barrier_id" in f:
        f["barrier_id"] = bytes.fromhex(f["barrier_id"])
    if cls is P.BarrierDone:
        f["status"] = P.BarrierStatus[f["status"]]
        f["nodes"] = tuple((bytes.fromhex(n), P.NodeState[s]) for n, s in f["nodes"])
    elif cls is P.Ranges:
        f["ranges"] = tuple(
            P.RangeDigest(bytes.fromhex(lo), bytes.fromhex(hi), n, bytes.fromhex(d))
            for lo, hi, n, d in f["ranges"]
        )
    elif cls is P.RangeIds:
        f["ranges"] = tuple(
            P.RangeList(
                bytes.fromhex(lo),
                bytes.fromhex(hi),
                tuple((bytes.fromhex(i), bytes.fromhex(h)) for i, h in entries),
            )
            for lo, hi, entries in f["ranges"]
        )
    return cls(**f)


def frame_from_json(d: dict[str, Any]) -> P.Frame:
    kind = d["type"]
    f = {k: v for k, v in d.items() if k != "type"}
    for key in ("node_id", "incarnation", "item_id", "digest"):
        if key in f:
            f[key] = bytes.fromhex(f[key])
    if "batch_hex" in f:
        f["batch"] = bytes.fromhex(f.pop("batch_hex"))
    if "tier" in f:
        f["tier"] = P.Tier[f["tier"]]
    cls = {c.NAME: c for c in P.FRAME_TYPES.values()}[kind]
    if cls in (P.Members, P.Prune):
        return _members_from_json(cls, f)
    if cls is P.Links:
        return P.Links(
            records=tuple(
                P.LinkRecord(bytes.fromhex(r["node_id"]), r["version"], tuple(r["peers"]))
                for r in f["records"]
            )
        )
    if cls in (P.Barrier, P.BarrierDone, P.Ranges, P.RangeIds):
        return _mesh_from_json(cls, f)
    return cls(**f)


def zstd_version() -> str:
    return str(zstandard.ZSTD_VERSION)
