"""Range reconciliation, the pure part: who may send which range, and what to answer.

Theory of operation (SPEC.md 4.2). One :class:`Reconciliation` is the state of one exchange
on one session, keyed by the initiator's ``request_id`` (its parity says which end started
it). The exchange runs in *turns*: the opening RANGES is turn 0; every later turn is the
frames one side sends while answering the other's previous turn, closed by an empty
``RANGES(reply 1)``. A turn's *questions* are its non-empty RANGES ranges and its
RANGE_IDS(reply 0) lists; a turn without questions gets no answer, which ends the exchange
of ranges. RANGE_IDS(reply 1) frames answer lists and ask nothing.

What a peer may send is decided here and nowhere else, so a hostile peer gets the same
``SessionStateError`` whatever path it takes:

* a range of a turn must lie inside one of the ranges we asked about in our last turn
  (``asked``), and each of those is answered once: by one RANGE_IDS list equal to it, or by
  refined parts inside it, all in one frame;
* a RANGE_IDS(reply 1) range must be one we listed and not yet had answered.

:func:`judge` decides what a peer's DIGEST says (a restored peer, a divergence, nothing).
The functions :func:`compare` and :func:`diff_entries` are the decisions on data: which of
the peer's ranges differ from ours, and which ids each side must fetch. Reading our rows is
the driver's job (``repair.py``), so this module can be tested without a store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import protocol as P
from protocol import Tier

__all__ = [
    "LIST_MAX",
    "PARTS",
    "Range",
    "Reconciliation",
    "Verdict",
    "compare",
    "diff_entries",
    "inside",
    "judge",
    "pack_lists",
    "pack_ranges",
]

PARTS = 64  # a differing range is refined into this many parts
LIST_MAX = 256  # a differing range holding at most this many rows is listed instead
Range = tuple[bytes, bytes]
Entries = dict[bytes, bytes]  # item_id -> hash8


def inside(inner: Range, outer: Range) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def _refuse(message: str, field: str) -> P.SessionStateError:
    return P.SessionStateError(message, field=field)


@dataclass
class Reconciliation:
    """One exchange on one session (see the module docstring for the rules it enforces)."""

    request_id: int
    tier: Tier
    initiator: bool
    asked: set[Range] = field(default_factory=set)  # our last closed turn's questions
    asking: set[Range] = field(default_factory=set)  # the turn we are answering with now
    answered: set[Range] = field(default_factory=set)  # of ``asked``, answered this turn
    listed: dict[Range, Entries] = field(default_factory=dict)  # our lists awaiting reply
    their_questions: bool = False  # the peer's current turn asked something
    ranges_done: bool = False
    differing: int = 0  # ranges found different here (for the log)
    turns: int = 0  # peer turns received

    @property
    def finished(self) -> bool:
        """Nothing more may arrive for it: ranges settled and every list answered."""
        return self.ranges_done and not self.listed

    # -- receipt ------------------------------------------------------------------------

    def _parent(self, r: Range, name: str) -> Range:
        for parent in self.asked:
            if inside(r, parent):
                return parent
        raise _refuse(f"range {r[0].hex()}..{r[1].hex()} was not asked about", name)

    def receive_refinement(self, ranges: Sequence[P.RangeDigest]) -> None:
        """Vet a non-empty RANGES(reply 1): parts of ranges we asked, one frame per parent.

        Raises:
            SessionStateError: a part outside every range we asked about, or of a range
                already answered.
        """
        if self.ranges_done:
            raise _refuse("RANGES after the exchange of ranges ended", "ranges")
        parents: set[Range] = set()
        for r in ranges:
            parent = self._parent((r.lo, r.hi), "ranges.ranges")
            if parent in self.answered:
                raise _refuse("a range answered twice", "ranges.ranges")
            parents.add(parent)
        self.answered |= parents
        self.their_questions = True

    def receive_list(self, lists: Sequence[P.RangeList]) -> None:
        """Vet a RANGE_IDS(reply 0): each list is exactly a range we asked, answered once.

        Raises:
            SessionStateError: a list for a range we did not ask about, or answered already.
        """
        if self.ranges_done:
            raise _refuse("RANGE_IDS after the exchange of ranges ended", "range_ids")
        for r in lists:
            key = (r.lo, r.hi)
            if key not in self.asked or key in self.answered:
                raise _refuse("RANGE_IDS for a range not asked about", "range_ids.ranges")
            self.answered.add(key)
        self.their_questions = True

    def receive_list_reply(self, lists: Sequence[P.RangeList]) -> dict[Range, Entries]:
        """Vet a RANGE_IDS(reply 1); return what we listed for each range it answers.

        Raises:
            SessionStateError: a range we did not list, or already answered.
        """
        out: dict[Range, Entries] = {}
        for r in lists:
            key = (r.lo, r.hi)
            mine = self.listed.pop(key, None)
            if mine is None:
                raise _refuse("RANGE_IDS reply for a range we did not list", "range_ids.ranges")
            out[key] = mine
        return out

    def receive_close(self) -> bool:
        """The peer's turn ended (empty RANGES(reply 1)); return whether we must close ours.

        If so, the caller sends our close and calls :meth:`close_turn`. A peer turn that
        asked nothing ends the exchange of ranges, and is not answered.

        Raises:
            SessionStateError: the exchange of ranges had already ended.
        """
        if self.ranges_done:
            raise _refuse("turn closed after the exchange of ranges ended", "ranges")
        self.turns += 1
        answer = self.their_questions
        self.their_questions = False
        self.answered = set()
        if not answer:
            self.ranges_done = True
            self.asked = set()
        return answer

    # -- sending ------------------------------------------------------------------------

    def ask(self, ranges: Iterable[Range]) -> None:
        """We put these ranges to the peer in the turn we are building."""
        self.asking.update(ranges)

    def add_list(self, r: Range, entries: Entries) -> None:
        """We listed our entries of ``r`` (RANGE_IDS reply 0): a question, and a pending reply."""
        self.listed[r] = entries
        self.asking.add(r)

    def close_turn(self) -> None:
        """Our turn is complete (its close frame is sent, or it was the opening)."""
        self.asked, self.asking = self.asking, set()
        if not self.asked:
            self.ranges_done = True  # we asked nothing: the peer will not answer


class Verdict:
    """What a peer's DIGEST of a tier says about its store and ours."""

    FINE = "fine"
    RESTORED = "restored"
    DIVERGED = "diverged"


def judge(
    *, announced: int, theirs: bytes, cursor: int, ours: bytes, our_seq: int, acked: int
) -> str:
    """Judge a peer's DIGEST (``announced`` sequence, digest ``theirs``) of a tier we pull.

    RESTORED: it announces a sequence below our cursor on it, so its store went back in
    time keeping its incarnation (a restored backup). DIVERGED: our cursor is at its
    sequence and it acknowledged ours, so cursors say we hold the same, yet the digests
    differ. Anything else is data still in flight: FINE.
    """
    if announced < cursor:
        return Verdict.RESTORED
    if announced == cursor and acked >= our_seq and theirs != ours:
        return Verdict.DIVERGED
    return Verdict.FINE


def compare(
    theirs: Sequence[P.RangeDigest], ours: Sequence[tuple[int, bytes]]
) -> list[P.RangeDigest]:
    """The peer's ranges whose digest differs from ours (same order, same ranges).

    Digests alone decide: the opening's counts come from no scan (SPEC.md 4.2), and two
    equal 128-bit digest prefixes of different row sets do not happen by chance.
    """
    return [t for t, (_n, d) in zip(theirs, ours, strict=True) if t.digest != d]


def diff_entries(
    theirs: Iterable[tuple[bytes, bytes]], ours: Entries
) -> tuple[Entries, set[bytes]]:
    """Item-level diff of one range: ``(our entries to send back, their ids to fetch)``.

    We send back the entries the peer lacks or holds with another hash; we fetch the ids
    it listed that we lack or hold with another hash.
    """
    fetch: set[bytes] = set()
    seen: set[bytes] = set()
    for iid, h in theirs:
        seen.add(iid)
        if ours.get(iid) != h:
            fetch.add(iid)
    back = {iid: h for iid, h in ours.items() if iid not in seen or iid in fetch}
    return back, fetch


def pack_ranges(
    request_id: int, tier: Tier, ranges: Sequence[P.RangeDigest], *, reply: bool = True
) -> list[P.Ranges]:
    """RANGES frames carrying ``ranges`` (sorted), at most ``MAX_RANGES`` each."""
    step = P.MAX_RANGES
    return [
        P.Ranges(request_id=request_id, tier=tier, reply=reply, ranges=tuple(ranges[i : i + step]))
        for i in range(0, len(ranges), step)
    ]


def pack_lists(
    request_id: int, tier: Tier, lists: Sequence[tuple[Range, Entries]], *, reply: bool
) -> list[P.RangeIds]:
    """RANGE_IDS frames for ``lists`` (sorted by range), within the per-frame limits.

    A single range with more than ``MAX_RANGE_IDS`` entries is cut to that many (the ids
    above the cut are found by the next reconciliation, since the digests still differ).
    """
    frames: list[P.RangeIds] = []
    batch: list[P.RangeList] = []
    ids = 0
    for (lo, hi), entries in lists:
        items = sorted(entries.items())[: P.MAX_RANGE_IDS]
        if batch and (ids + len(items) > P.MAX_RANGE_IDS or len(batch) == P.MAX_RANGES):
            frames.append(
                P.RangeIds(request_id=request_id, tier=tier, reply=reply, ranges=tuple(batch))
            )
            batch, ids = [], 0
        batch.append(P.RangeList(lo, hi, tuple(items)))
        ids += len(items)
    if batch:
        frames.append(
            P.RangeIds(request_id=request_id, tier=tier, reply=reply, ranges=tuple(batch))
        )
    return frames
