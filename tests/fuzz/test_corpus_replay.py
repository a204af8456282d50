"""Replay the fuzz corpus and the kept crash inputs through the fuzz invariants.

Runs on every CI run without atheris: ``fuzz/targets.py`` holds the checks and does not
import it. A failure here means a decoder broke the contract of fuzz/README.md for an input
a campaign once found interesting (corpus) or that once crashed it (regressions).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.targets import TARGETS  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"
REGRESSIONS = ROOT / "fuzz" / "regressions"
_NOT_INPUTS = {"README.md", ".gitkeep"}


def _corpus_files(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).glob("*") if p.is_file())


def _regression_files() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.name not in _NOT_INPUTS)


def _target_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_is_seeded(target: str) -> None:
    assert _corpus_files(target), f"fuzz/corpus/{target} is empty: run fuzz/seed.py"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    check = TARGETS[target]
    for path in _corpus_files(target):
        try:
            check(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(ROOT)}: {exc!r}") from exc


def test_regressions_replay() -> None:
    for path in _regression_files():
        target = _target_of(path)
        assert target in TARGETS, f"{path.name}: name it <target>-<description>"
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{path.relative_to(ROOT)}: {exc!r}") from exc
