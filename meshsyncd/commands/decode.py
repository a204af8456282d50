"""``meshsyncd decode``: dump items, batches and frames field by field (SPEC.md sections 2-4),
and MEMSHADOW v2 batches (section 8, ``memshadow_dump.py``).

The dump goes through ``protocol.schema``, the construct declaration of the wire format, not
through the struct hot path: what an operator reads is the SPEC's own field list, and a bad
byte is named the way the SPEC names it (``item.tier at offset 33``). Nothing here knows a
layout; it only walks what the schema parsed and adds enum names for humans.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from protocol import (
    BASED,
    FRAME_TYPES,
    MAX_FRAME,
    MAX_PAYLOAD,
    NAMED,
    PAYLOAD_ZSTD,
    RESOLVES,
    BarrierStatus,
    ByeCode,
    Capability,
    ErrorCode,
    NodeState,
    Op,
    Priority,
    ProtocolError,
    Tier,
    inflate,
    schema,
)
from protocol.constants import BATCH_MAGIC, BODY_ZSTD, ITEM_HEADER_SIZE, ITEM_VERSION
from protocol.memshadow import is_memshadow

from ..ids import origin_text

__all__ = ["DecodeError", "decode", "decode_bytes", "detect_kind"]

KINDS = ("auto", "item", "batch", "frame")
FORMATS = ("auto", "meshsyncd", "memshadow")
_TEXT_BYTES = 64  # hex shown per bytes field in the text dump; --json shows everything


class DecodeError(Exception):
    """The input is not something the decoder can even start on (empty, bad hex, unknown)."""


def _enum_name(enum: Any, value: int) -> str | None:
    try:
        return str(enum(value).name)
    except ValueError:
        return None


def _flag_names(value: int, names: dict[int, str]) -> list[str]:
    found = [name for bit, name in names.items() if value & bit]
    unknown = value & ~sum(names)
    return [*found, f"{unknown:#x}"] if unknown else found


_ENUMS: dict[str, Any] = {
    "tier": Tier,
    "op": Op,
    "priority": Priority,
    "status": BarrierStatus,
    "state": NodeState,
}


def _fields(parsed: Any, *, frame_name: str | None = None) -> dict[str, Any]:
    """The public fields of a schema container, with enum and flag names beside numbers."""
    out: dict[str, Any] = {}
    for key, value in parsed.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [_fields(entry) for entry in value]  # nodes, ranges, entries (protocol 2)
        out[key] = value
        if key in _ENUMS:
            out[f"{key}_name"] = _enum_name(_ENUMS[key], value)
        elif key == "code" and frame_name in ("error", "bye"):
            out["code_name"] = _enum_name(ErrorCode if frame_name == "error" else ByeCode, value)
        elif key == "capabilities":
            out["capabilities_names"] = _flag_names(
                value, {int(bit): str(bit.name) for bit in Capability}
            )
    return out


def _item(parsed: Any) -> dict[str, Any]:
    out = {"offset": parsed["_start"], **_fields(parsed)}
    # the writer as the short node id that `meshsyncd id`, peers and conflicts show
    out["origin_name"] = origin_text(parsed.origin)
    names = {PAYLOAD_ZSTD: "PAYLOAD_ZSTD", NAMED: "NAMED", BASED: "BASED", RESOLVES: "RESOLVES"}
    out["flags_names"] = _flag_names(parsed.flags, names)
    value = parsed.payload
    name = out.pop("name", None)
    if name is not None:  # SPEC.md section 2.1: the block is shown as its parts
        out["namespace"] = "/".join(label.text for label in name.labels)
        out["key"] = name.key
        value = value[name._end :]
    if parsed.flags & BASED:  # SPEC.md section 2.2
        out["base"] = {
            "timestamp_ns": int.from_bytes(value[:8], "big"),
            "origin": int.from_bytes(value[8:16], "big"),
        }
        value = value[16:]
    if parsed.flags & PAYLOAD_ZSTD:
        value = inflate(value, MAX_PAYLOAD, "item.payload", parsed["_start"] + ITEM_HEADER_SIZE)
        out["payload_inflated_len"] = len(value)
    with contextlib.suppress(UnicodeDecodeError):
        out["payload_utf8"] = value.decode("utf-8")
    return out


def _batch(parsed: Any, items: list[Any]) -> dict[str, Any]:
    out = {"offset": parsed["_start"], **_fields(parsed)}
    out.pop("body")
    out.pop("items", None)
    out["flags_names"] = _flag_names(parsed.flags, {BODY_ZSTD: "BODY_ZSTD"})
    for end in ("source", "target"):  # short node ids, shown like an item's origin
        if isinstance(out.get(end), int):
            out[f"{end}_name"] = origin_text(out[end])
    out["items"] = [_item(item) for item in items]
    return out


def _frame(parsed: Any, data: bytes) -> dict[str, Any]:
    name = schema.FRAME_BODY_NAMES[parsed.type]
    body = _fields(parsed.body, frame_name=name)
    if "batch" in body:
        batch = parsed.body.batch
        items = schema.finish_batch(batch, data, batch["_start"], prefix=f"{name}.batch")
        body["batch"] = _batch(batch, items)
    return {
        "offset": parsed["_start"],
        "length": parsed.length,
        "type": parsed.type,
        "type_name": FRAME_TYPES[parsed.type].NAME,
        "body": body,
    }


def _each(data: bytes, parse: Callable[[bytes, int], tuple[Any, int]]) -> list[Any]:
    found, offset = [], 0
    while offset < len(data):
        parsed, offset = parse(data, offset)
        found.append(parsed)
    return found


def _frames_chain(data: bytes) -> bool:
    """Do length prefixes with known types tile the whole input exactly?"""
    offset = 0
    while offset + 5 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        if not 1 <= length <= MAX_FRAME or data[offset + 4] not in FRAME_TYPES:
            return False
        offset += 4 + length
    return offset == len(data)


def _frame_start(data: bytes) -> bool:
    """A known type byte after a plausible length prefix: report this frame's fault.

    The length must be plausible too: a batch whose magic is damaged (``mSBT``) reads as
    a length of 1.8 GB, and "frame.length: declares 1834173012 bytes" sent the operator
    looking at the wrong format.
    """
    if len(data) < 5 or data[4] not in FRAME_TYPES:
        return False
    return 1 <= int.from_bytes(data[:4], "big") <= MAX_FRAME


def _damaged_magic(data: bytes) -> bool:
    """The first bytes are the batch magic with one or two bytes wrong."""
    head = data[: len(BATCH_MAGIC)]
    if len(head) != len(BATCH_MAGIC):
        return False
    return sum(a != b for a, b in zip(head, BATCH_MAGIC, strict=True)) <= 2


def detect_kind(data: bytes) -> str:
    """Guess what ``data`` holds: ``batch``, ``frame`` or ``item`` (see ``meshsyncd decode``).

    Raises:
        DecodeError: none of the three fits even the first bytes.
    """
    if data.startswith(BATCH_MAGIC):
        return "batch"
    if _frames_chain(data):
        return "frame"
    if len(data) > 32 and data[32] == ITEM_VERSION:
        return "item"
    if _frame_start(data):
        return "frame"
    if _damaged_magic(data):
        return "batch"  # the batch parser names the magic, at offset 0
    raise DecodeError(
        "input at offset 0: not a meshsyncd batch (MSBT), frame stream or item"
        " (version 2 at offset 32), nor a MEMSHADOW batch; try --kind or --format"
    )


def decode_bytes(data: bytes, kind: str = "auto", fmt: str = "auto") -> dict[str, Any]:
    """Parse ``data`` with the construct schema into one JSON-able document.

    ``fmt`` ``memshadow`` (or ``auto`` when the input starts with a MEMSHADOW magic) reads
    MEMSHADOW v2 batches instead (``memshadow_dump.py``, SPEC.md section 8).

    Raises:
        ProtocolError: the input is malformed (names the field and offset).
        DecodeError: the input is empty or of no recognisable kind.
    """
    if not data:
        raise DecodeError("input: empty")
    if fmt == "memshadow" or (fmt == "auto" and is_memshadow(data)):
        from .memshadow_dump import decode_memshadow

        return decode_memshadow(data)
    if kind == "auto":
        kind = detect_kind(data)
    if kind == "item":
        return {"kind": "item", "items": [_item(p) for p in _each(data, schema.parse_item)]}
    if kind == "batch":
        batches = [_batch(p, p["items"]) for p in _each(data, schema.parse_batch)]
        return {"kind": "batch", "batches": batches}
    frames = [_frame(p, data) for p in _each(data, schema.parse_frame)]
    return {"kind": "frame", "frames": frames}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _render(value: Any, indent: int, lines: list[str]) -> None:
    """Indented ``key: value`` text; bytes as hex (long ones cut), names in parentheses."""
    pad = "  " * indent
    for key, item in value.items():
        if key.endswith(("_name", "_names")):
            continue
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            _render(item, indent + 1, lines)
        elif isinstance(item, list):
            lines.append(f"{pad}{key}: {len(item)}")
            for index, entry in enumerate(item):
                lines.append(f"{pad}  [{index}]")
                _render(entry, indent + 2, lines)
        else:
            lines.append(f"{pad}{key}: {_scalar(item, value, key)}")


def _scalar(item: Any, parent: dict[str, Any], key: str) -> str:
    if isinstance(item, bytes) and key == "magic":
        return repr(item)
    if isinstance(item, bytes):
        text = item[:_TEXT_BYTES].hex()
        return text if len(item) <= _TEXT_BYTES else f"{text}... ({len(item)} bytes)"
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)
    names = parent.get(f"{key}_name") or parent.get(f"{key}_names")
    if key in ("crc32", "flags", "capabilities") and isinstance(item, int):
        shown = f"{item:#x}"
    else:
        shown = str(item)
    if isinstance(names, list):
        return f"{shown} ({', '.join(names) or 'none'})"
    return f"{shown} ({names})" if names else shown


def render_text(document: dict[str, Any]) -> str:
    lines: list[str] = []
    kind = document["kind"]
    if kind == "memshadow":
        from .memshadow_dump import render_memshadow

        return render_memshadow(document, _render)
    for index, entry in enumerate(document[f"{kind}s" if kind != "batch" else "batches"]):
        what = f" ({entry['type_name']})" if kind == "frame" else ""
        lines.append(f"{kind} #{index}{what} at offset {entry['offset']}")
        _render({k: v for k, v in entry.items() if k != "offset"}, 1, lines)
    return "\n".join(lines)


_HEX_JUNK = re.compile(r"[^0-9a-fA-F\s]")


def _from_hex(text: bytes) -> bytes:
    source = text.decode("ascii", errors="replace")
    bad = _HEX_JUNK.search(source)
    if bad:
        raise DecodeError(
            f"--hex input at offset {bad.start()}: {bad.group()!r} is not a hex digit"
        )
    digits = "".join(source.split())
    if len(digits) % 2:
        raise DecodeError(f"--hex input: odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def _fail(message: str) -> NoReturn:
    click.echo(f"meshsyncd: decode error: {message}", err=True)
    sys.exit(2)


@click.command(
    epilog="Exit status: 0 ok; 2 the input is malformed or cannot be read (as a usage error: "
    "the same statuses as every command, and decode never needs a daemon)."
)
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option("--hex", "as_hex", is_flag=True, help="Input is hex text (whitespace ignored).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="What the input holds; auto: MSBT is a batch, length-prefixed frames, else items.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="meshsyncd wire format, or MEMSHADOW v2 batches; auto: by the magic.",
)
def decode(source: str, as_hex: bool, as_json: bool, kind: str, fmt: str) -> None:
    """Dump items, batches or frames from FILE (or stdin) field by field.

    Malformed input prints one line naming the field and offset and exits with status 2.

    \b
    Examples:
      meshsyncd decode protocol/vectors/frame-hello.bin
      meshsyncd decode --json protocol/vectors/batch-zstd.bin
      xxd -p capture.bin | meshsyncd decode --hex -
      meshsyncd decode --kind item suspicious.bin
      meshsyncd decode --format memshadow protocol/vectors/memshadow-episodic-plain.bin
    """
    try:
        if source == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        _fail(f"cannot read {source}: {exc.strerror or exc}")
    try:
        data = _from_hex(raw) if as_hex else raw
        document = decode_bytes(data, kind, fmt)
    except (ProtocolError, DecodeError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(_jsonable(document), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(document))
