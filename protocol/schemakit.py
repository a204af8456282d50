"""The construct building blocks of the wire schema: SPEC rules as construct classes.

Why apart from ``schema.py``: the schema declares the wire format (items, batches, frames)
and its twins for the mesh frames (``meshschema.py``, ``memberschema.py``) declare theirs with
the same pieces. Those pieces (a field with the values SPEC.md allows, a length check before
a read, a bounded array, UTF-8 text, a parse confined to an item's payload) are construct
subclasses whose failures carry the ``ProtocolError`` the hand-written decoder raises, so that
the two decoders can be compared error for error (``tests/protocol/test_schema_agreement.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

import construct as c

from .constants import Tier
from .errors import BadFieldError, ProtocolError, TruncatedError
from .names import SEPARATOR

__all__ = [
    "Ctx",
    "_Check",
    "_Items",
    "_Label",
    "_Rule",
    "_Utf8",
    "_Violation",
    "_Within",
    "_exact",
    "_left",
    "_need",
    "_rule",
    "_segments",
    "_tier",
    "_values",
]

if TYPE_CHECKING:
    # construct ships no types: declare the slice of its base classes this module extends.

    class _Construct:
        flagbuildnone: bool

        def __init__(self) -> None: ...
        def __rtruediv__(self, name: str) -> Any: ...
        def _parsereport(self, stream: Any, context: Any, path: str) -> Any: ...
        def sizeof(self) -> int: ...

    class _Subconstruct(_Construct):
        subcon: Any

        def __init__(self, subcon: Any) -> None: ...

    class _Array(_Subconstruct):
        count: Any

        def __init__(self, count: Any, subcon: Any) -> None: ...

    class _ConstructError(Exception):
        path: str | None

        def __init__(self, message: str = "", path: str | None = None) -> None: ...

else:
    _Construct = c.Construct
    _Subconstruct = c.Subconstruct
    _Array = c.Array
    _ConstructError = c.ConstructError

Ctx = Any  # a construct Container: the fields parsed so far, plus _io, _params, _index


class _Violation(_ConstructError):
    """A SPEC rule broken inside the schema; carries the ProtocolError it becomes."""

    def __init__(
        self,
        error: type[ProtocolError],
        reason: str,
        *,
        path: str,
        field: str | None,
        offset: int | None,
        index: int | None = None,
    ) -> None:
        super().__init__(reason, path=path)
        self.error = error
        self.reason = reason
        segments = _segments(path)
        if path == "(???)" and index is not None:  # compiled: construct keeps no path
            segments = [f"items[{index}]"]
        self.segments = [*segments, field] if field else segments
        self.offset = offset


def _segments(path: str | None) -> list[str]:
    """``"(parsing) -> body -> hello -> magic"`` -> ``["body", "hello", "magic"]``."""
    return [] if not path else [p for p in path.split(" -> ")[1:] if p]


def _left(stream: Any) -> int:
    """Bytes left in a (sub)stream, without reading them."""
    pos: int = stream.tell()
    end: int = stream.seek(0, io.SEEK_END)
    stream.seek(pos)
    return end - pos


class _Rule(_Subconstruct):
    """A field and the values SPEC.md allows it: ``(allowed, error class, message)`` rules.

    Messages are ``str.format`` templates over the parsed value ``v``.
    """

    def __init__(
        self,
        name: str,
        subcon: Any,
        rules: tuple[tuple[Container[Any], type[ProtocolError], str], ...],
    ) -> None:
        super().__init__(subcon)
        self.name = name
        self.rules = rules

    def _parse(self, stream: Any, context: Ctx, path: str) -> Any:
        start = stream.tell()
        value = self.subcon._parsereport(stream, context, path)
        for allowed, error, template in self.rules:
            if value not in allowed:
                raise _Violation(
                    error, template.format(v=value), path=path, field=None, offset=start
                )
        return value

    def _build(self, obj: Any, stream: Any, context: Ctx, path: str) -> Any:
        return self.subcon._build(obj, stream, context, path)

    def _sizeof(self, context: Ctx, path: str) -> int:
        return int(self.subcon._sizeof(context, path))

    def _fail(self, value: Any, stream: Any, context: Ctx) -> None:
        """Raise the first broken rule from compiled code, which has no construct path."""
        start = stream.tell() - self.subcon.sizeof()
        index = context.get("_index")
        for allowed, error, template in self.rules:
            if value not in allowed:
                raise _Violation(
                    error,
                    template.format(v=value),
                    path="(???)",
                    field=self.name,
                    offset=start,
                    index=index,
                )

    def _emitparse(self, code: Any) -> str:
        fname = f"parse_rule_{code.allocateId()}"
        code.linkedinstances[id(self)] = self
        params = "".join(f", _ok{i}={allowed!r}" for i, (allowed, _, _) in enumerate(self.rules))
        broken = " or ".join(f"v not in _ok{i}" for i in range(len(self.rules)))
        code.append(
            f"def {fname}(v, io, this{params}):\n"
            f"    if {broken}:\n"
            f"        linkedinstances[{id(self)}]._fail(v, io, this)\n"
            f"    return v\n"
        )
        return f"{fname}({self.subcon._compileparse(code)}, io, this)"


def _rule(name: str, subcon: Any, *rules: tuple[Container[Any], type[ProtocolError], str]) -> Any:
    return name / _Rule(name, subcon, rules)


class _Check(_Construct):
    """A zero-width assertion over parsed fields; ``test`` returns a problem or None.

    ``test`` may also raise a ``ProtocolError`` (the payload rules reuse item.py's), which is
    re-raised with this check's field and offset. ``at`` is the offset of the blamed field
    from the enclosing struct's ``_start``; None blames the current position.
    """

    def __init__(
        self,
        field: str | None,
        error: type[ProtocolError],
        test: Callable[[Ctx], str | None],
        *,
        at: int | Callable[[Ctx], int] | None = None,
    ) -> None:
        super().__init__()
        self.field = field
        self.error = error
        self.test = test
        self.at = at
        self.flagbuildnone = True

    def _parse(self, stream: Any, context: Ctx, path: str) -> None:
        error = self.error
        try:
            problem = self.test(context)
        except ProtocolError as exc:
            error, problem = type(exc), exc.reason
        if problem is not None:
            at = self.at(context) if callable(self.at) else self.at
            offset = stream.tell() if at is None else context._start + at
            index = context.get("_index")
            raise _Violation(
                error, problem, path=path, field=self.field, offset=offset, index=index
            )

    def _build(self, obj: Any, stream: Any, context: Ctx, path: str) -> None:
        return None

    def _sizeof(self, context: Ctx, path: str) -> int:
        return 0


def _need(size: int | Callable[[Ctx], int], field: str | None, what: str) -> _Check:
    """Fail with TruncatedError unless ``size`` more bytes are there."""

    def test(ctx: Ctx) -> str | None:
        want = size(ctx) if callable(size) else size
        left = _left(ctx._io)
        return None if left >= want else f"need {want} {what} bytes, {left} left"

    return _Check(field, TruncatedError, test)


def _exact(size: int, name: str) -> _Check:
    """A fixed frame body must be exactly its size (blamed on the body as a whole)."""

    def test(ctx: Ctx) -> str | None:
        left = _left(ctx._io)
        return None if left == size else f"body is {left} bytes, {name} has exactly {size}"

    return _Check(None, BadFieldError, test)


class _Items(_Array):
    """``Array`` that puts the index into the error path: ``batch.items[7].tier``."""

    def _parse(self, stream: Any, context: Ctx, path: str) -> Any:
        count = self.count(context) if callable(self.count) else self.count
        out = c.ListContainer()
        for index in range(count):
            context._index = index
            out.append(self.subcon._parsereport(stream, context, f"{path}[{index}]"))
        return out

    def _emitparse(self, code: Any) -> str:
        fname = f"parse_items_{code.allocateId()}"
        code.append(
            f"def {fname}(io, this):\n"
            f"    out = ListContainer()\n"
            f"    for i in range({self.count}):\n"
            f"        this['_index'] = i\n"
            f"        out.append({self.subcon._compileparse(code)})\n"
            f"    this['_index'] = None\n"
            f"    return out\n"
        )
        return f"{fname}(io, this)"


class _Utf8(_Subconstruct):
    """Bytes that must decode as UTF-8; parses to ``str``."""

    def _parse(self, stream: Any, context: Ctx, path: str) -> str:
        start = stream.tell()
        data: bytes = self.subcon._parsereport(stream, context, path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Violation(
                BadFieldError,
                f"not UTF-8 ({exc.reason})",
                path=path,
                field=None,
                offset=start + exc.start,
            ) from None

    def _build(self, obj: Any, stream: Any, context: Ctx, path: str) -> Any:
        return self.subcon._build(obj.encode("utf-8"), stream, context, path)


def _values(enum: Any) -> frozenset[int]:
    return frozenset(int(member) for member in enum)


def _tier(name: str = "tier") -> Any:
    return _rule(name, c.Int8ub, (_values(Tier), BadFieldError, "unknown tier {v}"))


class _Within(_Subconstruct):
    """Parse ``subcon`` over the item's payload alone (it may not read past it).

    Errors come out as the item's own: the field gets the ``name.`` prefix and the offset
    the payload's position in the item's buffer, as the hot path reports them.
    """

    def _parse(self, stream: Any, context: Ctx, path: str) -> Any:
        sub = io.BytesIO(context.payload)
        try:
            return self.subcon._parsereport(sub, context, "(name)")
        except _Violation as exc:
            compiled = path == "(???)"
            field = ".".join(exc.segments)
            raise _Violation(
                exc.error,
                exc.reason,
                path=path,
                field=f"name.{field}" if compiled else field,
                offset=None if exc.offset is None else context._start + 48 + exc.offset,
                index=context.get("_index"),
            ) from None
        except c.StreamError:  # pragma: no cover - every read is guarded by a _need
            raise

    def _build(self, obj: Any, stream: Any, context: Ctx, path: str) -> Any:
        return self.subcon._build(obj, stream, context, path)


class _Label(_Utf8):
    """A namespace label: UTF-8 text without the separator."""

    def _parse(self, stream: Any, context: Ctx, path: str) -> str:
        start = stream.tell()
        text = super()._parse(stream, context, path)
        if SEPARATOR in text:
            at = start + text.encode("utf-8").index(SEPARATOR.encode())
            raise _Violation(
                BadFieldError, "label holds the separator", path=path, field=None, offset=at
            )
        return text
