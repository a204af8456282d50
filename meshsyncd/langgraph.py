"""LangGraph's ``BaseStore`` backed by a meshsyncd node: long-term memory shared by a mesh.

``MeshStore(socket)`` is a thin adapter: each LangGraph op becomes requests of the control
socket, sent by the blocking :class:`~meshsyncd.client.Client` from ``batch`` and by the
:class:`~meshsyncd.client.AsyncClient` from ``abatch``. The translation is written once, as
generators that yield ``(op, params)`` requests and receive results (``_plan_*``), and both
drivers run the same generators, so there is one data path with two kinds of I/O.

Mapping (what agent developers must know; ``docs/agents.md`` says it too):

- ``(namespace, key)`` is a meshsyncd name: the same item id on every node, so a memory
  put on node A is read by the same name on node B. Values are dicts, stored as JSON text.
- Tier rule: the longest prefix in ``tiers`` (a mapping from namespace prefixes to tiers)
  that the namespace starts with picks the tier; else ``default_tier`` (episodic). A store
  reads an item only in the tier its rule gives, so ``get`` and ``search`` agree.
- Only what LangGraph could have written is visible: named items in a non-empty namespace
  whose value is a JSON object. Items written otherwise (plain text, by id) are skipped.
- ``search`` returns items in name order (namespace labels, then key), not in insertion
  order as ``InMemoryStore`` does; ``limit``/``offset`` page in that order. ``filter`` is
  LangGraph's (exact match, nested dicts, ``$eq $ne $gt $gte $lt $lte``).
- ``list_namespaces`` lists namespaces holding at least one item (``InMemoryStore`` also
  lists namespaces that were only read from or whose items were all deleted).
- ``created_at`` is ``updated_at``: the timestamp of the write that made the current state
  (the mesh keeps versions, not creation times).
- A namespace label may not contain ``/`` (the mesh's separator): ``InvalidNamespaceError``.
- No TTL (``supports_ttl = False``): tier retention applies to whole tiers, not per item.
  No semantic search: ``query=`` and ``index=[...]`` raise :class:`SemanticSearchUnsupported`.
- A batch reads before it writes, and its last write per name wins (``InMemoryStore``'s
  rules). Every value in a batch is checked before anything is sent, so a bad value
  changes nothing; a write acknowledged by the node is durable there and replicates.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import threading
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    validate_op_namespace,
)

from protocol import MAX_PAYLOAD, SEPARATOR, Tier

from . import results
from .client import Client, NotFound
from .control.proto import ControlError, parse_priority, parse_tier
from .filters import does_match, matches

__all__ = ["MeshStore", "SemanticSearchUnsupported"]

PAGE = 1000  # items per list request (the daemon's maximum)
Call = tuple[str, dict[str, Any]]
Plan = Generator[Call, dict[str, Any], Any]


class SemanticSearchUnsupported(NotImplementedError):
    """``query=`` or ``index=[...]``: MeshStore has no embedding index."""


def _refuse_semantic(what: str) -> SemanticSearchUnsupported:
    return SemanticSearchUnsupported(
        f"MeshStore has no embedding index, so {what} is not supported: search by "
        "namespace prefix and filter= on value fields instead"
    )


def _sort_key(namespace: tuple[str, ...], key: str) -> tuple[str, str]:
    """The order the node lists names in: the namespace's index form, then the key."""
    return "".join(label + SEPARATOR for label in namespace), key


class MeshStore(BaseStore):
    """A LangGraph store over the node whose control socket is ``socket``.

    Args:
        socket: the node's control socket (``control.sock`` in its directory).
        default_tier: tier of namespaces no ``tiers`` prefix covers.
        tiers: namespace prefix -> tier (``{("prefs",): "semantic"}``); longest prefix wins.
        priority: priority of writes (``urgent``/``high`` are pushed to peers at once).
        timeout: seconds to wait for each answer of the node.

    Raises (from every method): ``DaemonNotRunning`` and the other ``ClientError``s of
    the client; ``InvalidNamespaceError`` for a bad namespace; ``TypeError``/``ValueError``
    for a value that is not a JSON object within 1 MiB; ``SemanticSearchUnsupported``.
    """

    supports_ttl = False

    def __init__(
        self,
        socket: Path | str,
        *,
        default_tier: Tier | int | str = Tier.EPISODIC,
        tiers: Mapping[tuple[str, ...], Tier | int | str] | None = None,
        priority: str | int = "normal",
        timeout: float = 10.0,
    ) -> None:
        try:
            self.default_tier = parse_tier(default_tier)
            self.tiers = {tuple(p): parse_tier(t) for p, t in (tiers or {}).items()}
            self.priority = parse_priority(priority).name.lower()
        except ControlError as exc:
            raise ValueError(exc.message) from None
        self.path = Path(socket)
        self.timeout = timeout
        self._client = Client(self.path, timeout=timeout)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the blocking client's connection (``abatch`` holds none between calls)."""
        with self._lock:
            self._client.close()

    def __enter__(self) -> MeshStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the tier rule --------------------------------------------------------------------

    def tier_for(self, namespace: tuple[str, ...]) -> Tier:
        """The tier of ``namespace``: its longest ``tiers`` prefix, else ``default_tier``."""
        best, tier = -1, self.default_tier
        for prefix, t in self.tiers.items():
            if len(prefix) > best and namespace[: len(prefix)] == prefix:
                best, tier = len(prefix), t
        return tier

    def _tiers_under(self, prefix: tuple[str, ...]) -> list[Tier]:
        """Every tier a namespace starting with ``prefix`` can map to."""
        found = {self.tier_for(prefix)}
        for p, t in self.tiers.items():
            if p[: len(prefix)] == prefix:
                found.add(t)
        return sorted(found)

    # -- batches --------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plans, n = self._plans(ops)
        with self._lock:
            return [_run(self._client, plan) for plan in plans][:n]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        from .aclient import AsyncClient

        plans, n = self._plans(ops)
        async with AsyncClient(self.path, timeout=self.timeout) as client:
            return [await _arun(client, plan) for plan in plans][:n]

    def _plans(self, ops: Iterable[Op]) -> tuple[list[Plan], int]:
        """Check every op, then the plans: one per op in op order (a write's sends nothing),
        then the last write per name; the first ``n`` results are the batch's.

        Raises before anything is sent when any op is bad, so a bad batch changes nothing.
        """
        ops = list(ops)
        writes: dict[tuple[tuple[str, ...], str], tuple[int, PutOp, str | None]] = {}
        for i, op in enumerate(ops):
            validate_op_namespace(op)
            _check_labels(op)
            if isinstance(op, PutOp):
                writes[(op.namespace, op.key)] = (i, op, self._checked_put(op))
            elif isinstance(op, SearchOp) and op.query:
                raise _refuse_semantic("search(query=...)")
            elif not isinstance(op, GetOp | SearchOp | ListNamespacesOp):
                raise ValueError(f"unknown operation type: {type(op).__name__}")
        plans: list[Plan] = []
        for op in ops:
            if isinstance(op, GetOp):
                plans.append(self._plan_get(op))
            elif isinstance(op, SearchOp):
                plans.append(self._plan_search(op))
            elif isinstance(op, ListNamespacesOp):
                plans.append(self._plan_namespaces(op))
            else:
                plans.append(_nothing())
        # Writes go last, each name once, in the order of their last occurrence.
        for _i, op, text in sorted(writes.values(), key=lambda w: w[0]):
            plans.append(self._plan_put(op, text))
        return plans, len(ops)

    def _checked_put(self, op: PutOp) -> str | None:
        """The JSON text of a put's value (None for a delete), checked before any I/O."""
        if op.index not in (None, False):
            raise _refuse_semantic("put(index=[...])")
        if op.ttl is not None:
            raise NotImplementedError(
                "TTL is not supported by MeshStore (tiers have retention, items do not): "
                "put without ttl"
            )
        if not op.namespace:
            raise InvalidNamespaceError("Namespace cannot be empty.")
        if op.value is None:
            return None
        if not isinstance(op.value, Mapping):
            raise TypeError(
                f"MeshStore values are dicts (JSON objects); got {type(op.value).__name__} "
                f"for {op.namespace}/{op.key!r}"
            )
        try:
            text = json.dumps(dict(op.value), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(
                f"value of {op.namespace}/{op.key!r} is not JSON-serialisable: {exc}"
            ) from None
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_PAYLOAD:
            raise ValueError(
                f"value of {op.namespace}/{op.key!r} is {size} bytes as JSON; "
                f"the limit is {MAX_PAYLOAD} (1 MiB)"
            )
        return text

    # -- plans: requests out, results in ---------------------------------------------------

    def _plan_get(self, op: GetOp) -> Plan:
        tier = self.tier_for(op.namespace)
        params = {"tier": tier.name.lower(), "namespace": list(op.namespace), "key": op.key}
        try:
            found = yield "get", params
        except NotFound:
            return None
        return _lg_item(results.Item.of(found), Item)

    def _plan_put(self, op: PutOp, text: str | None) -> Plan:
        params = {
            "tier": self.tier_for(op.namespace).name.lower(),
            "namespace": list(op.namespace),
            "key": op.key,
            "priority": self.priority,
        }
        if text is None:
            with contextlib.suppress(NotFound):  # deleting nothing is a no-op in LangGraph
                yield "delete", params
            return None
        yield "put", {**params, "value": text}
        return None

    def _plan_search(self, op: SearchOp) -> Plan:
        if op.limit < 0 or op.offset < 0:
            raise ValueError("search limit and offset must be >= 0")
        want = op.offset + op.limit
        per_tier: list[list[tuple[tuple[str, str], SearchItem]]] = []
        for tier in self._tiers_under(op.namespace_prefix):
            found: list[tuple[tuple[str, str], SearchItem]] = []
            after: str | None = None
            while len(found) < want:
                params = {
                    "tier": tier.name.lower(),
                    "namespace": list(op.namespace_prefix),
                    "limit": PAGE,
                    "after": after,
                    "values": True,
                }
                page = results.Page.of((yield "list", params))
                for entry in page.items:
                    if entry.namespace and self.tier_for(entry.namespace) != tier:
                        continue
                    item = _lg_item(entry, SearchItem)
                    if item is not None and matches(item.value, op.filter):
                        found.append((_sort_key(item.namespace, item.key), item))
                after = page.next
                if after is None:
                    break
            per_tier.append(found[:want])
        merged = [item for _k, item in heapq.merge(*per_tier, key=lambda kv: kv[0])]
        return merged[op.offset : want]

    def _plan_namespaces(self, op: ListNamespacesOp) -> Plan:
        conditions = op.match_conditions or ()
        literal: list[str] = []
        for cond in conditions:  # the longest wildcard-free start of a prefix condition
            if cond.match_type == "prefix":
                start = []
                for label in cond.path:
                    if label == "*":
                        break
                    start.append(label)
                if len(start) > len(literal):
                    literal = start
        reply = yield "namespaces", {"prefix": literal}
        names = set()
        for row in reply.get("namespaces", []):
            info = results.NamespaceInfo.of(row)
            ns = info.namespace
            if not ns or not info.tiers.get(self.tier_for(ns).name.lower()):
                continue
            if all(does_match(c, ns) for c in conditions):
                names.add(ns if op.max_depth is None else ns[: op.max_depth])
        return sorted(names)[op.offset : op.offset + op.limit]


# -- drivers -------------------------------------------------------------------------------


def _nothing() -> Plan:
    return None
    yield  # a generator that sends nothing


def _run(client: Client, plan: Plan) -> Any:
    """Drive ``plan`` with the blocking client."""
    try:
        call = next(plan)
        while True:
            try:
                reply = client.request(*call)
            except NotFound as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(reply)
    except StopIteration as done:
        return done.value


async def _arun(client: Any, plan: Plan) -> Any:
    """Drive ``plan`` with the async client (the same plans, the same requests)."""
    try:
        call = next(plan)
        while True:
            try:
                reply = await client.request(*call)
            except NotFound as exc:
                call = plan.throw(exc)
            else:
                call = plan.send(reply)
    except StopIteration as done:
        return done.value


# -- LangGraph's view ----------------------------------------------------------------------


def _check_labels(op: Op) -> None:
    """Labels with the mesh's separator, refused like LangGraph refuses a period."""
    if isinstance(op, GetOp | PutOp):
        paths = [op.namespace]
    elif isinstance(op, SearchOp):
        paths = [op.namespace_prefix]
    elif isinstance(op, ListNamespacesOp):
        paths = [c.path for c in op.match_conditions or ()]
    else:
        return
    for path in paths:
        for label in path:
            if SEPARATOR in label:
                raise InvalidNamespaceError(
                    f"Invalid namespace label {label!r} found in {path}: MeshStore labels "
                    f"cannot contain {SEPARATOR!r} (the mesh's namespace separator)."
                )


def _lg_item(entry: results.Item, cls: type[Any]) -> Any:
    """A LangGraph ``Item``/``SearchItem`` of a stored item, or None if LangGraph could not
    have written it (no name, the root namespace, or a value that is not a JSON object)."""
    if not entry.namespace or entry.key is None or entry.deleted:
        return None
    if not (entry.is_json and isinstance(entry.value, dict)):
        return None
    at = entry.updated_at
    return cls(
        namespace=entry.namespace, key=entry.key, value=entry.value, created_at=at, updated_at=at
    )
