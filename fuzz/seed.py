"""(Re)build the seed corpus in fuzz/corpus/ from the golden vectors in protocol/vectors/.

Every vector's JSON description says its kind: items seed the item target, batches the
batch target, frames the frame target, and streams (a HELLO followed by other frames) the
connection target, MEMSHADOW batches (kind ``memshadow``) the memshadow target. Further
streams are made by putting the HELLO vector in front of each other frame vector. A
connection input starts with the control bytes described in
``fuzz.targets.check_connection``; each stream is seeded with a few feeding plans.

Seed files are named ``seed-<vector>[...]``; running this again replaces them and leaves the
inputs that campaigns merged into the corpus (named by their SHA-1) alone.

Usage: python fuzz/seed.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import Bye, Hello, ProtocolError, parse_frame  # noqa: E402

VECTORS = ROOT / "protocol" / "vectors"
CORPUS = ROOT / "fuzz" / "corpus"
TARGET_OF_KIND = {
    "item": "item",
    "batch": "batch",
    "frame": "frame",
    "stream": "connection",
    "memshadow": "memshadow",
}

# (suffix, control bytes): how a stream is fed; see check_connection for the layout.
FEEDING: list[tuple[str, bytes]] = [
    ("halves-eof", bytes([0x08])),
    ("bytewise-eof", bytes([0x48])),
    ("chunks-3-7", bytes([0x02, 0x00, 0x03, 0x00, 0x07])),
    ("small-max-frame-eof", bytes([0x38])),
]


def load_vectors() -> dict[str, list[tuple[str, bytes]]]:
    """Vectors by target, as (name, bytes), in name order."""
    found: dict[str, list[tuple[str, bytes]]] = {t: [] for t in TARGET_OF_KIND.values()}
    for path in sorted(VECTORS.glob("*.bin")):
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        target = TARGET_OF_KIND.get(meta.get("kind", ""))
        if target is None:
            print(f"seed: skipping {path.name} (kind {meta.get('kind')!r})", file=sys.stderr)
            continue
        found[target].append((path.stem, path.read_bytes()))
    return found


def streams(vectors: dict[str, list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    """Stream vectors plus HELLO + each frame vector, and the HELLO + all frames + BYE."""
    out = list(vectors["connection"])
    hello: bytes | None = None
    others: list[tuple[str, bytes]] = []
    for name, data in vectors["frame"]:
        try:
            frame, _ = parse_frame(data)
        except ProtocolError:  # bad-* vectors: still worth a stream after a HELLO
            others.append((name, data))
            continue
        if isinstance(frame, Hello) and hello is None:
            hello = data
        else:
            others.append((name, data))
    if hello is None:
        return out
    out.append(("hello-alone", hello))
    for name, data in others:
        out.append((f"hello-then-{name}", hello + data))
    bye = [data for _, data in vectors["frame"] if _is(data, Bye)]
    out.append(("hello-all-frames", hello + b"".join(d for _, d in others) + b"".join(bye[:1])))
    return out


def _is(data: bytes, cls: type) -> bool:
    try:
        return isinstance(parse_frame(data)[0], cls)
    except ProtocolError:
        return False


def main() -> None:
    vectors = load_vectors()
    plan: dict[str, list[tuple[str, bytes]]] = {
        "item": vectors["item"],
        "batch": vectors["batch"],
        "frame": vectors["frame"],
        "memshadow": vectors["memshadow"],
        "connection": [
            (f"{name}-{suffix}", control + data)
            for name, data in streams(vectors)
            for suffix, control in FEEDING
        ],
    }
    for target, seeds in plan.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in seeds:
            (directory / f"seed-{name}").write_bytes(data)
        print(f"seed: {target}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
