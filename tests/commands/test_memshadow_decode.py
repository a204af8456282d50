"""``meshsyncd decode`` on MEMSHADOW v2 batches: auto-detected by magic, dumped field by field,
a bad byte a one-line error with status 2 (SPEC.md section 8)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from meshsyncd.commands.cli import main

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


def test_decode_auto_detects_memshadow() -> None:
    runner = CliRunner()
    path = str(VECTORS / "memshadow-fallback-header.bin")
    result = runner.invoke(main, ["decode", path])
    assert result.exit_code == 0 and "(fallback (MSYN))" in result.output
    doc = json.loads(
        runner.invoke(main, ["decode", "--json", str(VECTORS / "memshadow-300-items.bin")]).output
    )
    batch = doc["batches"][0]
    assert batch["header"]["batch_count"] == 44 and len(batch["items"]) == 300
    assert batch["items_gzip"] and batch["metadata"]["item_count"] == 300
    bad = runner.invoke(main, ["decode", str(VECTORS / "memshadow-bad-gzip-bomb.bin")])
    assert bad.exit_code == 2 and bad.output.startswith("meshsyncd: decode error: memshadow.items")


def test_decode_text_names_fields_and_mapped_ids() -> None:
    out = CliRunner().invoke(main, ["decode", str(VECTORS / "memshadow-working-mixed.bin")]).output
    assert 'msg_type: "0x0304"' in out
    assert 'item_id: "note-42"' in out and "op: 4 (MERGE)" in out
    assert 'import_id: "1fd6083a48ceb501f1cb15734fc86659"' in out  # 32-hex ids are kept
    forced = CliRunner().invoke(
        main, ["decode", "--format", "memshadow", str(VECTORS / "frame-hello.bin")]
    )
    assert forced.exit_code == 2 and "memshadow.magic at offset 0" in forced.output
