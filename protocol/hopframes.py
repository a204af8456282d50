"""HOP_PUSH: a live push that says how far its versions have travelled (SPEC.md 4.4).

Theory of operation: HOP_PUSH (0x12) exists from protocol version 5 and replaces PUSH on
the wire: ``hops`` u8, then one batch exactly as in PUSH (section 3). ``hops`` is how many
sessions the versions crossed before this one (0: the sender wrote them); a relay sends
them on with ``hops + 1``, saturating at 255. The receiver's broadcast tree compares hop
counts to prefer shorter parents (``meshsyncd/mesh/tree.py``); this module only encodes
and vets. The batch is kept as bytes with a vetted header, like PUSH, so the CPU-heavy
parse runs where the daemon chooses (``decode()``).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar

from .batch import Batch, BatchHeader, unpack_batch
from .constants import Tier
from .errors import BadFieldError
from .events import Frame, _need, _vet_batch
from .frames import _peek_exact, _trusted, register_frame
from .item import Buffer

__all__ = ["MAX_HOPS", "HopPush"]

MAX_HOPS = 255  # a hop count saturates here (no mesh path is that long)

_HOPS = struct.Struct(">B")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HopPush(Frame):
    """Live best-effort batch of fresh writes that crossed ``hops`` sessions before this one."""

    TYPE: ClassVar[int] = 0x12
    NAME: ClassVar[str] = "HOP_PUSH"
    hops: int
    batch: bytes
    header: BatchHeader = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _need(
            isinstance(self.hops, int) and 0 <= self.hops <= MAX_HOPS,
            "hop_push.hops",
            f"must be an int in 0..{MAX_HOPS}",
        )
        object.__setattr__(self, "header", _vet_batch(self.batch, "hop_push.batch"))

    @property
    def tier(self) -> Tier:
        return self.header.tier

    def decode(self) -> Batch:
        """Parse the batch body; CPU-heavy, so the daemon calls it off the event loop."""
        return unpack_batch(self.batch, prefix="hop_push.batch")[0]


def _encode(event: Frame) -> bytes:
    assert isinstance(event, HopPush)
    return _HOPS.pack(event.hops) + event.batch


def _decode(body: Buffer, base: int) -> Frame:
    if len(body) < _HOPS.size:
        raise BadFieldError(f"body is {len(body)} bytes, need 1", field="hop_push", offset=base)
    data = bytes(body[_HOPS.size :])
    header = _peek_exact(data, "hop_push.batch", base + _HOPS.size)
    return _trusted(HopPush, hops=body[0], batch=data, header=header)


register_frame(HopPush, _encode, _decode)
