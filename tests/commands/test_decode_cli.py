"""``meshsyncd decode``: every kind dumps, --hex and --json work, bad input is one line + exit 2."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard
from click.testing import CliRunner, Result

import protocol
from meshsyncd.commands.cli import main

VECTORS = Path(protocol.__file__).parent / "vectors"
ERROR_LINE = re.compile(r"^meshsyncd: decode error: \S+ at offset \d+: .+\n\Z")


def _item(tier: int = 1, op: int = protocol.Op.INSERT, payload: bytes = b"hi") -> protocol.Item:
    return protocol.Item(
        item_id=bytes(range(16)), timestamp_ns=5, origin=7, tier=tier, op=op, payload=payload
    )


def _batch(*, compress: bool) -> bytes:
    items = tuple(_item(payload=b'{"n": %d, "text": "same old words"}' % i) for i in range(60))
    batch = protocol.Batch(batch_id=bytes(16), source=1, target=2, tier=1, items=items)
    return protocol.pack_batch(batch, compress=compress)


def _run(args: list[str], data: bytes = b"") -> Result:
    return CliRunner().invoke(main, ["decode", *args], input=data)


def _json(args: list[str], data: bytes) -> dict[str, Any]:
    result = _run(["--json", *args], data)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_item_text_dump_names_every_field() -> None:
    result = _run(["-"], protocol.pack_item(_item(op=protocol.Op.MERGE, payload=b'{"a": 1}')))
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("item #0 at offset 0\n")
    for line in (
        "item_id: 000102030405060708090a0b0c0d0e0f",
        "version: 2",
        "tier: 1 (EPISODIC)",
        "op: 4 (MERGE)",
        "priority: 2 (NORMAL)",
        "payload_len: 8",
        'payload_utf8: "{\\"a\\": 1}"',
    ):
        assert f"  {line}\n" in out


def test_items_back_to_back_are_each_dumped() -> None:
    data = protocol.pack_item(_item()) + protocol.pack_item(_item(tier=2, payload=b"xyz"))
    document = _json([], data)
    assert document["kind"] == "item"
    assert [(i["offset"], i["tier_name"]) for i in document["items"]] == [
        (0, "EPISODIC"),
        (50, "SEMANTIC"),
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_batch_dump_includes_its_items(compress: bool) -> None:
    document = _json(["--kind", "auto"], _batch(compress=compress))
    assert document["kind"] == "batch"
    (batch,) = document["batches"]
    assert batch["magic"] == "4d534254"
    assert batch["flags_names"] == (["BODY_ZSTD"] if compress else [])
    assert batch["item_count"] == len(batch["items"]) == 60
    assert batch["items"][1]["payload_utf8"] == '{"n": 1, "text": "same old words"}'


def test_frame_stream_and_inner_batch() -> None:
    hello = protocol.Hello(
        version=1, node_id=bytes(32), incarnation=bytes(16), capabilities=5, timestamp_ns=9
    )
    push = protocol.Push(batch=_batch(compress=True))
    data = protocol.encode_frame(hello) + protocol.encode_frame(push)
    document = _json([], data)
    assert document["kind"] == "frame"
    first, second = document["frames"]
    assert first["type_name"] == "HELLO"
    assert first["body"]["capabilities_names"] == ["ZSTD", "PUSH"]
    assert second["type_name"] == "PUSH"
    assert len(second["body"]["batch"]["items"]) == 60
    text = _run([], data).stdout
    assert "frame #1 (PUSH) at offset 71\n" in text
    assert "    magic: b'MSYN'\n" in text


def test_hex_input_ignores_whitespace() -> None:
    data = protocol.encode_frame(protocol.Ping(nonce=1, timestamp_ns=2)).hex()
    spaced = " ".join(data[i : i + 4] for i in range(0, len(data), 4)) + "\n"
    document = _json(["--hex"], spaced.encode())
    assert document["frames"][0]["body"] == {"nonce": 1, "timestamp_ns": 2}


def test_file_argument(tmp_path: Path) -> None:
    path = tmp_path / "item.bin"
    path.write_bytes(protocol.pack_item(_item()))
    assert _json([str(path)], b"")["items"][0]["payload"] == b"hi".hex()


def test_bad_input_is_one_line_naming_field_and_offset() -> None:
    data = bytearray(protocol.pack_item(_item()))
    data[33] = 9
    result = _run([], bytes(data))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "meshsyncd: decode error: item.tier at offset 33: unknown tier 9\n"


def _raw_batch(raw: bytes, count: int) -> bytes:
    """A compressed batch around any raw body, with a correct CRC (to reach the items)."""
    body = zstandard.ZstdCompressor(write_content_size=True).compress(raw)
    head = struct.pack(
        ">4sBBH16sQQIII", b"MSBT", 1, 1, 1, bytes(16), 1, 0, count, len(raw), len(body)
    )
    return head + struct.pack(">I", zlib.crc32(body, zlib.crc32(head))) + body


def test_bad_item_inside_a_compressed_batch() -> None:
    raw = bytearray(protocol.pack_items([_item(), _item()]))
    raw[50 + 33] = 7
    result = _run([], _raw_batch(bytes(raw), 2))
    assert result.exit_code == 2
    assert result.stderr == (
        "meshsyncd: decode error: batch.items[1].tier at offset 83: unknown tier 7\n"
    )


def test_bad_batch_crc() -> None:
    good = _raw_batch(protocol.pack_items([_item()]), 1)
    result = _run([], good[:-1] + bytes([good[-1] ^ 1]))
    assert result.exit_code == 2
    assert result.stderr == "meshsyncd: decode error: batch.crc32 at offset 52: CRC-32 mismatch\n"


@pytest.mark.parametrize(
    ("args", "data", "message"),
    [
        (["/nonexistent/x.bin"], b"", "cannot read /nonexistent/x.bin: No such file or directory"),
        ([], b"", "input: empty"),
        (["--hex"], b"0g", "--hex input at offset 1: 'g' is not a hex digit"),
        (["--hex"], b"abc", "--hex input: odd number of hex digits (3)"),
        ([], b"\xff" * 10, "input at offset 0: not a meshsyncd batch"),
    ],
)
def test_unusable_input(args: list[str], data: bytes, message: str) -> None:
    result = _run(args, data)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"meshsyncd: decode error: {message}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def _vectors() -> list[Path]:
    return sorted(VECTORS.glob("*.json"))


@pytest.mark.parametrize("meta", _vectors(), ids=lambda p: p.stem)
def test_every_golden_vector(meta: Path) -> None:
    """Good vectors are auto-detected as their kind (MEMSHADOW ones by their magic); bad ones
    fail naming the vector's field."""
    spec = json.loads(meta.read_text())
    data = meta.with_suffix(".bin").read_bytes()
    kind = {"stream": "frame"}.get(spec["kind"], spec["kind"])
    expect = spec.get("expect_error")
    if expect is None:
        assert _json([], data)["kind"] == kind
        return
    chosen = ["--format", "memshadow"] if kind == "memshadow" else ["--kind", kind]
    result = _run(chosen, data)
    assert result.exit_code == 2
    where = f"{expect['field']} at offset {expect['offset']}: "
    assert result.stderr.startswith(f"meshsyncd: decode error: {where}")
    assert ERROR_LINE.match(result.stderr)


def test_console_script_in_a_real_process() -> None:
    script = Path(sys.executable).with_name("meshsyncd")
    data = bytearray(protocol.pack_item(_item()))
    ok = subprocess.run(
        [str(script), "decode", "--json", "-"], input=bytes(data), capture_output=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["items"][0]["origin"] == 7
    data[40:44] = (2 << 20).to_bytes(4, "big")
    bad = subprocess.run(
        [str(script), "decode"], input=bytes(data), capture_output=True, check=False
    )
    assert bad.returncode == 2
    assert bad.stdout == b""
    assert bad.stderr.decode() == (
        "meshsyncd: decode error: item.payload_len at offset 40: "
        "2097152 bytes exceeds the 1048576-byte limit\n"
    )
