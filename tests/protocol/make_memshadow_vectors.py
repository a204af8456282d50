"""Make the MEMSHADOW v2 golden vectors with the REFERENCE code (SPEC.md section 8).

Usage: python tests/protocol/make_memshadow_vectors.py REFERENCE_GIT_DIR

REFERENCE_GIT_DIR is a git directory of github.com/SWORDIntel/MEMSHADOW (for example the
mirror the ``fetch`` tool leaves in ``/work/.mirror/SWORDIntel+MEMSHADOW/repo``). The
reference modules that ``MemorySyncBatch`` needs are copied out of its HEAD into a temporary
directory outside this repository (nothing of it is committed: it has no license) with one
stub, an empty ``ai/brain/memory/__init__.py`` instead of the real one, which imports the
whole memory fabric. ``memshadow_ref_driver.py`` then packs the good vectors there with the
reference's own ``MemorySyncBatch.pack``; the bad vectors are those bytes patched here. Every
vector's JSON records the reference commit and what the reference's ``unpack`` made of it.

Like ``make_vectors.py``, this only ever adds vectors: an existing file is never rewritten.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parents[1] / "protocol" / "vectors"
REFERENCE_FILES = (
    "ai/brain/__init__.py",
    "ai/brain/memory/memory_sync_protocol.py",
    "ai/brain/metrics/__init__.py",
    "ai/brain/metrics/memshadow_metrics.py",
    "config/memshadow_config.py",
    "libs/memshadow-protocol/python/dsmil_protocol.py",
)
STUBS = ("ai/brain/memory/__init__.py",)


def extract(git_dir: Path, into: Path) -> str:
    """Copy the reference modules out of HEAD of ``git_dir``; return the commit hash."""
    commit = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name in REFERENCE_FILES:
        blob = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{commit}:{name}"],
            capture_output=True,
            check=True,
        ).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(blob)
    for name in STUBS:
        (into / name).write_text("")
    shutil.copy(HERE / "memshadow_ref_driver.py", into / "memshadow_ref_driver.py")
    return commit


def run_driver(workdir: Path, mode: str, stdin: str = "") -> dict[str, Any]:
    """Run the driver inside ``workdir`` with no MEMSHADOW_* overrides in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSHADOW_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = subprocess.run(
        [sys.executable, "memshadow_ref_driver.py", mode],
        cwd=workdir,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _patch(buf: bytes, off: int, value: bytes) -> bytes:
    return buf[:off] + value + buf[off + len(value) :]


def bad_vectors(good: dict[str, bytes]) -> dict[str, tuple[bytes, dict[str, Any], str]]:
    """Reference bytes patched into inputs our decoder must refuse, with the expected error."""
    plain = good["memshadow-episodic-plain"]
    meta_len = struct.unpack_from(">I", plain, 32)[0]
    items_at = 36 + meta_len
    bomb_meta = json.dumps(
        {
            "batch_id": "bomb",
            "source_node": "x",
            "target_node": "y",
            "tier": 2,
            "item_count": 1,
            "flags": 1,
            "sync_vector": {},
        }
    ).encode()
    bomb_body = gzip.compress(bytes(1 << 20), mtime=0)
    bomb_payload = struct.pack(">I", len(bomb_meta)) + bomb_meta + bomb_body
    bomb = plain[:14] + struct.pack(">HQ", 0x0100, len(bomb_payload)) + plain[24:32] + bomb_payload

    def err(cls: str, field: str, offset: int) -> dict[str, Any]:
        return {"class": cls, "field": field, "offset": offset}

    longer = plain + b"\x00"
    return {
        "memshadow-bad-magic": (
            _patch(plain, 7, b"X"),
            err("BadMagicError", "memshadow.magic", 0),
            "magic MSHX",
        ),
        "memshadow-bad-v1-magic": (
            b"MSHW" + plain[8:],
            err("VersionError", "memshadow.magic", 0),
            "the 4-byte MSHW magic of MEMSHADOW v1",
        ),
        "memshadow-bad-version": (
            _patch(plain, 8, b"\x00\x03"),
            err("VersionError", "memshadow.version", 8),
            "header version 3",
        ),
        "memshadow-bad-priority": (
            _patch(plain, 10, b"\x00\x09"),
            err("BadFieldError", "memshadow.priority", 10),
            "header priority 9",
        ),
        "memshadow-bad-msg-type": (
            _patch(plain, 12, b"\x03\x01"),
            err("BadFieldError", "memshadow.msg_type", 12),
            "MEMORY_STORE (0x0301) instead of MEMORY_SYNC",
        ),
        "memshadow-bad-batch-count": (
            _patch(plain, 14, b"\x04"),
            err("BadFieldError", "memshadow.batch_count", 14),
            "header count byte 4, metadata item_count 3",
        ),
        "memshadow-bad-payload-len": (
            _patch(plain, 16, struct.pack(">Q", (17 << 20) + 1)),
            err("LimitError", "memshadow.payload_len", 16),
            "payload_len one over 17 MiB, refused before reading on",
        ),
        "memshadow-bad-metadata-len": (
            _patch(plain, 32, struct.pack(">I", len(plain))),
            err("BadFieldError", "memshadow.metadata_len", 32),
            "metadata length beyond the payload",
        ),
        "memshadow-bad-item-tier": (
            _patch(plain, items_at + 40, b"\x04"),
            err("BadFieldError", "memshadow.items[0].tier", items_at + 40),
            "first item of tier 4",
        ),
        "memshadow-bad-item-op": (
            _patch(plain, items_at + 41, b"\x06"),
            err("BadFieldError", "memshadow.items[0].op", items_at + 41),
            "first item with op 6",
        ),
        "memshadow-bad-item-priority": (
            _patch(plain, items_at + 42, b"\x00\x05"),
            err("BadFieldError", "memshadow.items[0].priority", items_at + 42),
            "first item with priority 5",
        ),
        "memshadow-bad-items-trailing": (
            _patch(longer, 16, struct.pack(">Q", len(longer) - 32)),
            err("BadFieldError", "memshadow.items", len(plain)),
            "one byte after the last item, inside the declared payload",
        ),
        "memshadow-bad-file-trailing": (
            plain + b"\x00",
            err("BadFieldError", "memshadow.trailing", len(plain)),
            "one byte after the payload the header declares",
        ),
        "memshadow-bad-gzip-bomb": (
            bomb,
            err("LimitError", "memshadow.items", 36 + len(bomb_meta)),
            "one item declared, gzip inflating to 1 MiB: refused at 65,583 bytes",
        ),
    }


def _write(name: str, data: bytes, desc: dict[str, Any]) -> bool:
    bin_path = VECTORS / f"{name}.bin"
    if bin_path.exists():
        return False
    bin_path.write_bytes(data)
    (VECTORS / f"{name}.json").write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="memshadow-ref-") as tmp:
        workdir = Path(tmp)
        commit = extract(Path(argv[1]), workdir)
        packed = run_driver(workdir, "pack")
        good = {name: bytes.fromhex(v["hex"]) for name, v in packed.items()}
        bad = bad_vectors(good)
        every = {**good, **{name: data for name, (data, _, _) in bad.items()}}
        views = run_driver(workdir, "unpack", json.dumps({k: v.hex() for k, v in every.items()}))
    reference = {
        "repository": "github.com/SWORDIntel/MEMSHADOW",
        "commit": commit,
        "files": list(REFERENCE_FILES),
        "stubbed": list(STUBS),
    }
    added = 0
    for name, data in good.items():
        added += _write(
            name,
            data,
            {
                "kind": "memshadow",
                "description": packed[name]["description"],
                "made_by": "reference MemorySyncBatch.pack",
                "reference": reference,
                "reference_unpack": views[name],
            },
        )
    for name, (data, error, text) in bad.items():
        added += _write(
            name,
            data,
            {
                "kind": "memshadow",
                "description": text,
                "made_by": "reference MemorySyncBatch.pack, then patched",
                "reference": reference,
                "reference_unpack": views[name],
                "expect_error": error,
            },
        )
    print(f"{added} vectors added to {VECTORS} (reference {commit})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
