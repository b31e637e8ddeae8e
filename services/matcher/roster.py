"""The roster each matcher replica ranks from, held in memory.

`Roster` is the memory itself, plain data and no I/O. `SharedRoster` keeps it coherent with the
database every replica shares: it learns of registrations and departures other replicas handled
through a short numbered change log, and re-reads a volunteer whenever the memory proved wrong about them.

At start it reads the roster packed into a few documents (a snapshot, with the log number it holds),
the taken slots, and the log since: on nx-27017, reading a hundred thousand profiles one document each
takes longer than a restart should. The profiles themselves are then read in the background, and replace
the memory (and the snapshot) once read: what the log does not carry (recent work, ratings) is exact
again within seconds. Without a snapshot, the profiles are read before the replica is ready.

Ranking trusts the memory; claiming does not. A capacity slot is taken only by the compare-and-set on
its holder in the database, so a replica whose memory is stale loses that compare-and-set, re-reads
the volunteer and goes on to the next candidate: the memory can cost a retry, never a double booking.
Free slots another replica gave back are re-read before a request is declared out of capacity.
"""

import asyncio
import gc
import json
import logging
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from services.matcher.store import FREE

log = logging.getLogger("linli.matcher")
Doc = dict[str, Any]
Key = tuple[str, str, str]  # ("grid" | "skill", district, value)
SNAPSHOT_PART = 4 * 2**20  # bytes of packed roster per stored document, well under BSON's 16 MB
FREEZE_FROM = 10_000  # volunteers: a roster this large is left out of the collector's passes
RELOAD_AFTER = 5000  # changes behind: a full reload costs less than reading them one by one
GAP_PATIENCE = 5.0  # seconds a change whose number was taken but whose row never came is waited for
EMPTY: tuple[Any, ...] = ()


def _tuple(values: Iterable[Any] | None) -> tuple[Any, ...]:
    listed = tuple(sys.intern(v) if isinstance(v, str) else v for v in values or ())
    return listed or EMPTY


@dataclass(slots=True)
class Entry:
    """What ranking needs of one volunteer, strings shared across entries, no profile text."""

    id: str
    district: str
    grids: tuple[str, ...]
    skills: tuple[str, ...]
    capacity: int
    attributes: tuple[str, ...]
    availability: tuple[Doc, ...]
    away: tuple[Doc, ...]
    left: bool
    recent_work: float
    recent_at: float | None
    stars_sum: float
    stars_n: int
    held: int  # a bit per slot index the memory believes is taken

    @classmethod
    def of(cls, doc: Doc, held: Iterable[int] = ()) -> "Entry":
        bits = 0
        for i in held:
            bits |= 1 << i
        return cls(
            id=doc["_id"], district=sys.intern(doc["district"]), grids=_tuple(doc.get("grids")),
            skills=_tuple(doc.get("skills")), capacity=int(doc.get("capacity", 0)),
            attributes=_tuple(doc.get("attributes")), availability=_tuple(doc.get("availability")),
            away=_tuple(doc.get("away")), left=bool(doc.get("left")),
            recent_work=float(doc.get("recent_work", 0.0)), recent_at=doc.get("recent_at"),
            stars_sum=float(doc.get("stars_sum", 0)), stars_n=int(doc.get("stars_n", 0)), held=bits,
        )

    def keys(self) -> list[Key]:
        if self.left:
            return []
        return [("grid", self.district, g) for g in self.grids] + [("skill", self.district, s) for s in self.skills]

    def free_slots(self) -> list[int]:
        return [i for i in range(self.capacity) if not self.held >> i & 1]

    def doc(self) -> Doc:
        """The volunteer as scoring reads a stored profile."""
        doc: Doc = {
            "_id": self.id, "district": self.district, "grids": self.grids, "skills": self.skills,
            "capacity": self.capacity, "attributes": self.attributes, "availability": self.availability,
            "away": self.away, "recent_work": self.recent_work, "stars_sum": self.stars_sum, "stars_n": self.stars_n,
        }
        if self.recent_at is not None:
            doc["recent_at"] = self.recent_at
        if self.left:
            doc["left"] = True
        return doc


class Roster:
    """Volunteers by id, and the active ones by grid and by skill, as the matcher's grid_members finds them."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.index: dict[Key, set[str]] = {}
        # This week's offers and hours, as last read or written here: a hint for ranking, checked on claiming.
        self.weeks: dict[str, tuple[str, int, float]] = {}
        # Each resident's standing volunteers (active pairings): preferred, never an arbiter.
        self.pairs: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, doc: Doc, held: Iterable[int] = ()) -> None:
        self.forget(doc["_id"])
        self.add(Entry.of(doc, held))

    def add(self, entry: Entry) -> None:
        self.entries[entry.id] = entry
        for key in entry.keys():
            self.index.setdefault(key, set()).add(entry.id)

    def forget(self, volunteer_id: str) -> None:
        old = self.entries.pop(volunteer_id, None)
        for key in old.keys() if old else []:
            members = self.index.get(key)
            if members is not None:
                members.discard(volunteer_id)
                if not members:
                    del self.index[key]

    def near(self, district: str, service: str, category: str, grids: list[str] | None) -> list[Doc]:
        """Everyone active in these grids (skills are judged by the ranking); district-wide, only the skilled."""
        keys: list[Key] = (
            [("skill", district, category), ("skill", district, service)]
            if grids is None
            else [("grid", district, grid) for grid in grids]
        )
        ids: set[str] = set()
        for key in keys:
            ids |= self.index.get(key, set())
        return self.by_id(sorted(ids))

    def by_id(self, volunteer_ids: Iterable[str]) -> list[Doc]:
        return [entry.doc() for v in volunteer_ids if (entry := self.entries.get(v)) is not None]

    def paired(self, resident_ref: str) -> list[str]:
        return list(self.pairs.get(resident_ref, ()))

    def set_pairs(self, resident_ref: str, volunteer_ids: Iterable[str]) -> None:
        if listed := tuple(volunteer_ids):
            self.pairs[resident_ref] = listed
        else:
            self.pairs.pop(resident_ref, None)

    def set_held(self, held: dict[str, list[int]]) -> None:
        """Which slots are taken, as the database says, for every volunteer."""
        for volunteer_id, entry in self.entries.items():
            entry.held = 0
            for slot in held.get(volunteer_id, ()):
                entry.held |= 1 << slot

    def pack(self) -> bytes:
        rows = [[e.id, e.district, e.grids, e.skills, e.capacity, e.attributes, e.availability, e.away, e.left,
                 e.recent_work, e.recent_at, e.stars_sum, e.stars_n] for e in self.entries.values()]
        return zlib.compress(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode(), 1)

    @classmethod
    def unpack(cls, packed: bytes) -> "Roster":
        roster = cls()
        for (vid, district, grids, skills, capacity, attributes, availability, away, left, recent_work, recent_at,
             stars_sum, stars_n) in json.loads(zlib.decompress(packed)):
            roster.add(Entry(vid, sys.intern(district), _tuple(grids), _tuple(skills), capacity, _tuple(attributes),
                             _tuple(availability), _tuple(away), left, recent_work, recent_at, stars_sum, stars_n, 0))
        return roster

    def free(self, volunteer_ids: Iterable[str]) -> dict[str, int]:
        return {v: len(entry.free_slots()) if (entry := self.entries.get(v)) else 0 for v in volunteer_ids}

    def free_slots(self, volunteer_id: str) -> list[int]:
        entry = self.entries.get(volunteer_id)
        return entry.free_slots() if entry else []

    def hold(self, volunteer_id: str, slot: int) -> None:
        if entry := self.entries.get(volunteer_id):
            entry.held |= 1 << slot

    def let_go(self, volunteer_id: str, slot: int) -> None:
        if entry := self.entries.get(volunteer_id):
            entry.held &= ~(1 << slot)

    def week_of(self, volunteer_ids: Iterable[str], week: str) -> dict[str, Doc]:
        known = {v: self.weeks.get(v) for v in volunteer_ids}
        return {v: {"offers": w[1], "hours": w[2]} for v, w in known.items() if w and w[0] == week}

    def set_week(self, volunteer_id: str, week: str, counts: Doc | None) -> None:
        counts = counts or {}
        self.weeks[volunteer_id] = (week, int(counts.get("offers", 0)), float(counts.get("hours", 0.0)))

    def work_of(self, volunteer_id: str) -> tuple[float, float] | None:
        """The volunteer's stored recent work and its time, as last read or written here."""
        entry = self.entries.get(volunteer_id)
        return (entry.recent_work, entry.recent_at) if entry and entry.recent_at is not None else None

    def note_work(self, volunteer_id: str, recent_work: float, at: float) -> None:
        if entry := self.entries.get(volunteer_id):
            entry.recent_work, entry.recent_at = recent_work, at

    def note_rating(self, volunteer_id: str, stars: int) -> None:
        if entry := self.entries.get(volunteer_id):
            entry.stars_sum += stars
            entry.stars_n += 1


@contextmanager
def building(memory: Callable[[], Roster]) -> Iterator[None]:
    """A large roster is a hundred thousand small objects made at once and kept for the life of the process:
    the collector, which would walk the growing heap again and again while they are made, waits; then it
    leaves them out of every later collection (they hold no cycles: counting references frees them). A
    small roster, as in tests, changes nothing about collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if len(memory()) >= FREEZE_FROM:
            gc.freeze()
        if was_enabled:
            gc.enable()


def slot_of(slot_id: str) -> tuple[str, int]:
    """A capacity slot's volunteer and index, from its id ("v-1:0")."""
    volunteer_id, _, index = slot_id.rpartition(":")
    return volunteer_id, int(index)


def applicable(after: int, head: int, present: set[int], waiting_since: dict[int, float], now: float,
               patience: float = GAP_PATIENCE) -> int:
    """How far the change log can be applied: up to the first change still being written.

    A writer takes a change's number before it writes the row; a row missing for longer than `patience`
    belongs to a writer that died, whose event is redelivered and logged again under a new number.
    """
    seq = after
    while seq < head:
        following = seq + 1
        if following not in present:
            since = waiting_since.setdefault(following, now)
            if now - since < patience:
                break
        waiting_since.pop(following, None)
        seq = following
    return seq


class RosterStore(Protocol):
    async def roster_head(self) -> int: ...
    async def roster_changes(self, seqs: list[int]) -> dict[int, tuple[str, str]]: ...
    async def log_roster_change(self, volunteer_id: str, resident_ref: str = "") -> int: ...
    async def active_pairings(self) -> dict[str, list[str]]: ...
    async def paired_volunteers(self, resident_ref: str) -> list[str]: ...
    def roster_documents(self) -> AsyncIterator[Doc]: ...
    async def held_slots(self) -> list[tuple[str, int]]: ...
    async def roster_snapshot(self) -> tuple[int, bytes] | None: ...
    async def save_roster_snapshot(self, seq: int, parts: list[bytes]) -> None: ...
    async def volunteers_by_id(self, volunteer_ids: list[str]) -> list[Doc]: ...
    async def held_of(self, volunteers: list[Doc]) -> dict[str, list[int]]: ...
    async def take_slot(self, slot_id: str, holder: str, new_holder: str) -> bool: ...
    async def release(self, assignment_id: str, slot_id: str | None = None) -> str | None: ...


class SharedRoster:
    """The memory, kept coherent with the database every replica writes."""

    def __init__(self, store: RosterStore, clock: Callable[[], float] = time.monotonic,
                 patience: float = GAP_PATIENCE) -> None:
        self.store = store
        self.clock = clock
        self.patience = patience
        self.memory = Roster()
        self.seq = 0  # the last change of the log this memory holds
        self.waiting_since: dict[int, float] = {}
        self.lock = asyncio.Lock()
        self.exact = False  # read from the profiles themselves, rather than a snapshot

    async def load(self) -> None:
        """Ready to rank: from the last snapshot when there is one, else from the profiles themselves."""
        snapshot = await self.store.roster_snapshot()
        if snapshot is None:
            await self.load_profiles()
            return
        seq, packed = snapshot
        memory = Roster()
        with building(lambda: memory):
            memory = Roster.unpack(packed)
        memory.set_held(await self.held())
        await self.load_pairs(memory)
        async with self.lock:
            self.memory, self.seq, self.waiting_since, self.exact = memory, seq, {}, False
        await self.catch_up()

    async def load_profiles(self) -> None:
        """One read of every profile and one of the taken slots; changes logged meanwhile are read after.
        The memory read is packed for the next replica to start from."""
        head = await self.store.roster_head()
        memory = Roster()
        with building(lambda: memory):
            async for doc in self.store.roster_documents():
                memory.put(doc)
        memory.set_held(await self.held())
        await self.load_pairs(memory)
        async with self.lock:
            self.memory, self.seq, self.waiting_since, self.exact = memory, head, {}, True
        packed = memory.pack()
        await self.store.save_roster_snapshot(
            head, [packed[i:i + SNAPSHOT_PART] for i in range(0, len(packed), SNAPSHOT_PART)])

    async def load_pairs(self, memory: Roster) -> None:
        for resident_ref, volunteer_ids in (await self.store.active_pairings()).items():
            memory.set_pairs(resident_ref, volunteer_ids)

    async def held(self) -> dict[str, list[int]]:
        held: dict[str, list[int]] = {}
        for volunteer_id, slot in await self.store.held_slots():
            held.setdefault(volunteer_id, []).append(slot)
        return held

    async def settle(self) -> None:
        """After a start from the snapshot: read the profiles themselves, in the background."""
        if not self.exact:
            started = time.monotonic()
            await self.load_profiles()
            log.info("roster of %d volunteers read from their profiles in %.1f s", len(self.memory),
                     time.monotonic() - started)

    async def catch_up(self) -> None:
        """Read the profiles other replicas changed since the last look: one read when nothing did."""
        async with self.lock:
            head = await self.store.roster_head()
            if head <= self.seq:
                return
            if head - self.seq <= RELOAD_AFTER:
                rows = await self.store.roster_changes(list(range(self.seq + 1, head + 1)))
                upto = applicable(self.seq, head, set(rows), self.waiting_since, self.clock(), self.patience)
                changes = [rows[s] for s in range(self.seq + 1, upto + 1) if s in rows]
                await self.refresh(sorted({volunteer for volunteer, _ in changes if volunteer}))
                await self.refresh_pairs(sorted({resident for _, resident in changes if resident}))
                self.seq = max(self.seq, upto)
                return
        await self.load_profiles()

    async def changed(self, volunteer_id: str) -> None:
        """After this replica saved a profile: log it for the others, and hold the saved one."""
        await self.store.log_roster_change(volunteer_id)
        await self.refresh([volunteer_id])

    async def pairs_changed(self, resident_ref: str) -> None:
        """After this replica saved a pairing: log it for the others, and hold the resident's pairings."""
        await self.store.log_roster_change("", resident_ref)
        await self.refresh_pairs([resident_ref])

    async def refresh_pairs(self, residents: list[str]) -> None:
        for resident_ref in residents:
            self.memory.set_pairs(resident_ref, await self.store.paired_volunteers(resident_ref))

    async def refresh(self, volunteer_ids: list[str]) -> None:
        if not volunteer_ids:
            return
        docs = await self.store.volunteers_by_id(volunteer_ids)
        held = await self.store.held_of(docs)
        found = {doc["_id"] for doc in docs}
        for doc in docs:
            self.memory.put(doc, held.get(doc["_id"], ()))
        for gone in set(volunteer_ids) - found:
            self.memory.forget(gone)

    async def reserve(self, volunteer_id: str, assignment_id: str) -> str | None:
        """Take one of the volunteer's free slots for the assignment, and say which; the database's
        compare-and-set decides."""
        if taken := await self._take_believed_free(volunteer_id, assignment_id):
            return taken
        await self.refresh([volunteer_id])  # the memory was wrong about them: ask once more with what is true
        return await self._take_believed_free(volunteer_id, assignment_id)

    async def _take_believed_free(self, volunteer_id: str, assignment_id: str) -> str | None:
        free = self.memory.free_slots(volunteer_id)
        if not free:
            return None
        self.memory.hold(volunteer_id, free[0])  # before the await, so this replica's other workers pass it by
        slot_id = f"{volunteer_id}:{free[0]}"
        # A lost compare-and-set: someone else took it, and the memory is stale for this volunteer.
        return slot_id if await self.store.take_slot(slot_id, FREE, assignment_id) else None

    async def release(self, assignment_id: str, slot_id: str | None = None) -> None:
        slot_id = await self.store.release(assignment_id, slot_id)
        if slot_id:
            self.memory.let_go(*slot_of(slot_id))

    async def release_all(self, assignment_ids: list[str]) -> None:
        for assignment_id in assignment_ids:
            await self.release(assignment_id)
