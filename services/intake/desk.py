"""The intake desk's steps: requests as the resident sees them, volunteers as they signed up, and who may read
a resident's details. Each step is idempotent, so a retry, a redelivery or another replica may repeat it."""

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from contracts import ApiError, Envelope
from contracts.calls import (
    AssignmentDetails,
    CancelRequest,
    CloseRequest,
    Contact,
    ContactQuery,
    DetailsQuery,
    EndPairing,
    FindVolunteer,
    LeaveVolunteer,
    PairResident,
    Pairing,
    Places as PlacesView,
    RateRequest,
    RegisterReply,
    RegisterVolunteer,
    RequestList,
    RequestsQuery,
    RequestStatus,
    SubmitReply,
    SubmitRequest,
    UpdateVolunteer,
    VolunteerFound,
    VolunteerProfile,
)
from contracts.envelope import derived_id
from contracts.events import (
    AssignmentAccepted,
    AssignmentCompleted,
    AssignmentWithdrawn,
    RequestRedispatched,
    RequestUnmatched,
    VolunteerAssigned,
)
from services.common.bus import Outbox
from services.common.memory import Recent
from services.common.places import Places
from services.intake import handlers
from services.intake.config import IntakeSettings
from services.intake.handlers import Menu, Move
from services.intake.store import Doc, IntakeStore

log = logging.getLogger("linli.intake")
CODE_LENGTHS = (6, 7, 8, 10)


def not_found(what: str, **details: Any) -> ApiError:
    return ApiError("not_found", f"no {what} with this id or code", details)


class Desk:
    def __init__(self, store: IntakeStore, outbox: Outbox, settings: IntakeSettings, menu: Menu, places: Places,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.outbox = outbox
        self.settings = settings
        self.menu = menu
        self.places = places
        self.clock = clock
        self.keys: dict[str, bytes] = {}
        # Volunteers' names for the history lines: they rarely change and decide nothing.
        self.names: Recent[str, str] = Recent(settings.name_ttl)

    async def start(self) -> None:
        await self.upgrade_pseudonyms()
        await self.store.ensure_indexes()

    # --- pseudonyms ------------------------------------------------------------------------------------------

    async def key(self, district: str) -> bytes:
        if district not in self.keys:
            self.keys[district] = await self.store.district_key(district, secrets.token_bytes(32))
        return self.keys[district]

    async def resident_ref(self, district: str, phone: str) -> str:
        return handlers.resident_ref_for(await self.key(district), district, phone)

    async def upgrade_pseudonyms(self) -> None:
        """Volunteers stored before keyed pseudonyms keep their ids and are found by their phone again."""
        for volunteer in await self.store.volunteers_without_phone_key():
            key = await self.key(volunteer["district"])
            await self.store.set_phone_key(volunteer["_id"], handlers.phone_key_for(
                key, volunteer["district"], volunteer["phone"]))

    async def upgrade_pairings(self) -> None:
        """Standing pairings made before keyed pseudonyms move to the resident's keyed ref, so the resident's
        new requests still find them (announced as pairing.ended and pairing.created). Runs once the bus is
        up; a second start or replica finds nothing left to move."""
        for pairing in await self.store.active_pairings():
            if not handlers.is_legacy_ref(pairing["resident_ref"]):
                continue
            request = await self.store.request_of_resident(pairing["resident_ref"])
            if request is None:
                log.warning("pairing %s keeps its version 1 resident ref: no request holds the resident's phone",
                            pairing["_id"])
                continue
            try:
                await self.pair(PairResident(district=pairing["district"], resident_phone=request["resident"]["phone"],
                                             volunteer_id=pairing["volunteer_id"], kind=pairing["kind"]))
            except (ApiError, ValidationError) as refused:  # the volunteer has left, or the phone is unusable
                log.warning("pairing %s not moved to version 2: %s", pairing["_id"], refused)
            await self.unpair(EndPairing(pairing_id=pairing["_id"], reason="pseudonym version 2"))

    # --- requests ------------------------------------------------------------------------------------------

    async def submit(self, call: SubmitRequest) -> SubmitReply:
        handlers.check_needs(call.needs)
        handlers.check_places(self.places, call.district, [call.grid])
        now = self.clock()
        after = self.settings.overdue_after_for(call.urgency)
        self.menu.category_of(call.service)  # refused before the district's secret is first made
        resident_ref = await self.resident_ref(call.district, call.resident.phone)
        for length in CODE_LENGTHS:
            doc, _ = handlers.new_request(call, self.menu, now, after, length, resident_ref)
            try:
                stored = await self.store.add_request(doc)
                break
            except DuplicateKeyError:
                continue  # two ids share a short code: this one takes a longer code
        else:
            raise RuntimeError(f"no free short code for {doc['_id']}")
        if stored:
            handlers.same_submission(stored, call)
            doc = stored
        if not doc["announced"]:
            await self.announce(doc)
        return SubmitReply(request_id=doc["_id"], status=doc["status"])

    async def announce(self, doc: Doc) -> None:
        """The request itself is the outbox of its request.created: stored with `announced: false`, published
        under an id derived from it, then marked; what a crash leaves unmarked the sweep publishes again."""
        await self.outbox.publish_own([handlers.created_event(doc)])
        await self.store.mark_announced(doc["_id"])

    async def announce_forgotten(self) -> None:
        while True:
            for doc in await self.store.unannounced(self.settings.announce_after):
                log.warning("announcing request %s that was stored but not yet published", doc["_id"])
                await self.announce(doc)
            await asyncio.sleep(self.settings.announce_after)

    # --- whose district a call acts in, for the authorization checked before it ---------------------

    async def request_district(self, id_or_code: str) -> str | None:
        doc = await self.store.request(id_or_code)
        if doc is None and (code := handlers.as_code(id_or_code)):
            doc = await self.store.request_by_code(code)
        return doc.get("district") if doc else None

    async def volunteer_district(self, volunteer_id: str) -> str | None:
        volunteer = await self.store.volunteer(volunteer_id)
        return volunteer.get("district") if volunteer else None

    async def pairing_district(self, pairing_id: str) -> str | None:
        pairing = await self.store.pairing(pairing_id)
        return pairing.get("district") if pairing else None

    async def request(self, id_or_code: str) -> Doc:
        doc = await self.store.request(id_or_code)
        if doc is None and (code := handlers.as_code(id_or_code)):
            doc = await self.store.request_by_code(code)
        if doc is None:
            raise not_found("request", request_id=id_or_code)
        return doc

    async def view(self, doc: Doc) -> RequestStatus:
        stored_apart = await self.store.history_stored_apart(doc["_id"]) if handlers.history_stored_apart(doc) else []
        return handlers.status_view(doc, handlers.history_lines(doc, stored_apart))

    async def status(self, id_or_code: str, phone_last4: str = "") -> RequestStatus:
        return await self.view(await self.resident_request(id_or_code, phone_last4))

    async def resident_request(self, id_or_code: str, phone_last4: str) -> Doc:
        """The request, when the caller who gave the phone's last four digits gave the right ones."""
        doc = await self.request(id_or_code)
        if not handlers.phone_matches(doc, phone_last4):
            raise not_found("request", request_id=id_or_code)
        return doc

    async def move(self, request_id: str, decide: Callable[[Doc], Move | None], doc: Doc | None = None) -> Doc | None:
        """Decide on the request as stored (as read by the caller, when given) and save the decision with its
        history line in one compare-and-set, deciding again if another change came first."""
        for _ in range(50):
            if doc is None and (doc := await self.store.request(request_id)) is None:
                return None
            move = decide(doc)
            if move is None or handlers.made(doc, move):
                return doc
            if changed := await self.store.change(doc, move.update(time.time())):
                return changed
            doc = None
        raise RuntimeError(f"request {request_id} kept changing under this step")

    async def rate(self, call: RateRequest) -> RequestStatus:
        now = self.clock()
        doc: Doc | None = None
        if not call.phone_last4 and not handlers.as_code(call.request_id):  # nothing to check before the rating
            expect, move = handlers.plain_rate(call, now)
            doc = await self.store.change_unread(call.request_id, expect, move.update(time.time()))
        if doc is None:  # read, to rate any other request or to say why not
            doc = await self.resident_request(call.request_id, call.phone_last4)
            doc = await self.move(doc["_id"], lambda d: handlers.rate(d, call, now), doc) or doc
        await self.outbox.send(handlers.rating_events(doc, now))
        return await self.view(doc)

    async def cancel(self, call: CancelRequest) -> RequestStatus:
        doc = await self.request(call.request_id)
        now = self.clock()
        doc = await self.move(doc["_id"], lambda d: handlers.cancel(d, call.reason, call.operator, now), doc) or doc
        await self.outbox.send([handlers.cancelled_event(doc, doc.get("cancel_reason", call.reason), now)])
        return await self.view(doc)

    async def close(self, call: CloseRequest) -> RequestStatus:
        doc = await self.request(call.request_id)
        now = self.clock()
        doc = await self.move(doc["_id"], lambda d: handlers.close(d, call, now), doc) or doc
        await self.outbox.send([handlers.closed_event(doc, now)])
        return await self.view(doc)

    async def requests(self, call: RequestsQuery) -> RequestList:
        now = self.clock().timestamp()
        queries = handlers.requests_queries(call, self.places, now)
        pages = await asyncio.gather(*[self.store.page(query, call.limit + 1) for query in queries])
        docs = sorted((d for page in pages for d in page), key=lambda d: (d["created"], d["_id"]))[: call.limit + 1]
        more = len(docs) > call.limit
        docs = docs[: call.limit]
        return RequestList(
            items=[handlers.summary_view(d, self.places, self.menu, now) for d in docs],
            next_cursor=handlers.cursor_after(docs[-1]) if more else "",
        )

    # --- what the matcher tells intake ------------------------------------------------------------------------

    async def follow(self, request_id: str, status: str, event: Envelope[Any], note: str,
                     assignment_id: str | None = None, **changes: Any) -> None:
        """A request of the first round still behind `status` is moved on in one command; any other is read and
        decided on. A repeated event finds the request moved on already, and changes nothing."""
        expect, move = handlers.plain_follow(status, event, note, assignment_id, **changes)
        if not await self.store.change_unread(request_id, expect, move.update(time.time())):
            await self.move(request_id, lambda doc: handlers.follow(
                doc, status, event, note, assignment_id, **changes))

    async def offered(self, event: Envelope[VolunteerAssigned]) -> None:
        d = event.data
        await self.follow(d.request_id, "offered", event, "a volunteer has been asked", d.assignment_id)

    async def accepted(self, event: Envelope[AssignmentAccepted]) -> None:
        d = event.data
        name = await self.volunteer_name(d.volunteer_id)
        await self.store.record_assignment(d.assignment_id, {
            "request_id": d.request_id, "volunteer_id": d.volunteer_id, "accepted_at": event.time.isoformat(),
            **({"code": d.code} if d.code else {}),
        })
        await self.follow(d.request_id, "accepted", event, f"{name or 'a volunteer'} is coming", d.assignment_id,
                          volunteer_id=d.volunteer_id, volunteer_name=name, assignment_code=d.code)

    async def completed(self, event: Envelope[AssignmentCompleted]) -> None:
        d = event.data
        name = await self.volunteer_name(d.volunteer_id)
        await self.store.record_assignment(d.assignment_id, {
            "request_id": d.request_id, "volunteer_id": d.volunteer_id, "completed_at": event.time.isoformat(),
            **({"code": d.code} if d.code else {}),
        })
        await self.follow(d.request_id, "completed", event, f"done in {d.hours} h", d.assignment_id,
                          volunteer_id=d.volunteer_id, volunteer_name=name, hours=str(d.hours))

    async def withdrawn(self, event: Envelope[AssignmentWithdrawn]) -> None:
        d = event.data
        # A volunteer taken off the work is no longer given the resident's details.
        await self.store.record_assignment(d.assignment_id, {
            "request_id": d.request_id, "volunteer_id": d.volunteer_id, "withdrawn_at": event.time.isoformat()})

    async def unmatched(self, event: Envelope[RequestUnmatched]) -> None:
        await self.follow(event.data.request_id, "unmatched", event,
                          "no volunteer found yet; an operator will follow up")

    async def redispatched(self, event: Envelope[RequestRedispatched]) -> None:
        await self.move(event.data.request_id, lambda doc: handlers.redispatch(doc, event))

    # --- volunteers ------------------------------------------------------------------------------------------

    async def register(self, call: RegisterVolunteer) -> RegisterReply:
        handlers.check_places(self.places, call.district, call.grids)
        now = self.clock()
        self.menu.check_skills(call.skills)  # refused before the district's secret is first made
        phone_key = handlers.phone_key_for(await self.key(call.district), call.district, call.phone)
        fresh = handlers.new_volunteer(call, self.menu, now, f"v-{uuid.uuid4()}", phone_key)
        doc = fresh
        if stored := await self.store.add_volunteer(fresh):
            handlers.check_phone(stored, call)
            doc = stored
            if not stored.get("active", True):
                doc = handlers.rejoined(stored, fresh)
                if not await self.store.replace_volunteer(stored, doc):
                    raise ApiError("conflict", "this volunteer changed at the same time; try again")
        # Sent again for a repeat: the same event id, so a crash before the first send loses nothing.
        await self.outbox.send([handlers.registered_event(doc, now)])
        self.remember(doc)
        return RegisterReply(volunteer_id=doc["_id"])

    async def volunteer(self, volunteer_id: str) -> Doc:
        doc = await self.store.volunteer(volunteer_id)
        if doc is None:
            raise ApiError("not_found", "no volunteer with this id", {"volunteer_id": volunteer_id})
        return doc

    async def find_volunteer(self, call: FindVolunteer) -> VolunteerFound:
        # The same answer for a district that does not exist, a phone nobody registered and a volunteer
        # who left: it tells a guesser nothing more than an unknown id would.
        refused = ApiError("not_found", "no active volunteer with this phone in this district")
        if call.district not in self.places.districts:
            raise refused
        phone_key = handlers.phone_key_for(await self.key(call.district), call.district, call.phone)
        doc = await self.store.volunteer_by_phone_key(phone_key)
        if doc is None or not doc.get("active", True) or doc["district"] != call.district:
            raise refused
        return VolunteerFound(volunteer_id=doc["_id"], district=doc["district"])

    async def volunteer_name(self, volunteer_id: str) -> str:
        if (kept := self.names.fresh(volunteer_id)) is not None:
            return kept
        doc = await self.store.volunteer(volunteer_id)
        if doc is None:
            return ""
        self.remember(doc)
        return str(doc["name"])

    def remember(self, volunteer: Doc) -> None:
        self.names.put(volunteer["_id"], volunteer["name"])

    async def update_volunteer(self, call: UpdateVolunteer) -> VolunteerProfile:
        return await self.revise(call.volunteer_id, lambda stored, now: handlers.updated_volunteer(
            stored, call, self.menu, self.places, now), handlers.registered_event)

    async def leave(self, call: LeaveVolunteer) -> VolunteerProfile:
        return await self.revise(call.volunteer_id, lambda stored, now: handlers.left_volunteer(
            stored, call.reason, now), handlers.left_event)

    async def revise(self, volunteer_id: str, change: Callable[[Doc, datetime], Doc],
                     announce: Callable[[Doc, datetime], Envelope[Any]]) -> VolunteerProfile:
        now = self.clock()
        for _ in range(20):
            stored = await self.volunteer(volunteer_id)
            doc = change(stored, now)
            if doc is stored or await self.store.replace_volunteer(stored, doc):
                break
        else:
            raise ApiError("conflict", "this volunteer kept changing; try again")
        await self.outbox.send([announce(doc, now)])  # a repeat re-sends the same event id
        self.remember(doc)
        return handlers.profile_view(doc)

    # --- who may read what -----------------------------------------------------------------------------------

    async def contact(self, call: ContactQuery) -> Contact:
        if call.kind == "volunteer":
            if volunteer := await self.store.volunteer(call.id):
                self.remember(volunteer)
                return Contact(name=volunteer["name"], phone=volunteer["phone"])
        elif request := await self.store.request(call.id):
            resident = request["resident"]
            return Contact(name=resident["name"], phone=resident["phone"], address=resident.get("address", ""))
        raise ApiError("not_found", f"no {call.kind} with this id", {"id": call.id})

    async def details(self, call: DetailsQuery) -> AssignmentDetails:
        assignment = await self.store.assignment(call.assignment_id)
        if assignment is None and (code := handlers.as_code(call.assignment_id)):
            assignment = await self.store.assignment_by_code(code)
        if assignment is None or "volunteer_id" not in assignment:
            raise ApiError("not_found", "no accepted assignment with this id or code",
                           {"assignment_id": call.assignment_id})
        request = await self.store.request(assignment["request_id"])
        if request is None:
            raise not_found("request", request_id=assignment["request_id"])
        return handlers.details_view(assignment, call.volunteer_id, request, self.places, self.menu,
                                     self.settings.details_ttl, self.clock())

    def place_list(self, district: str | None) -> PlacesView:
        return handlers.places_view(self.places, district)

    # --- standing pairings -------------------------------------------------------------------------------

    async def pair(self, call: PairResident) -> Pairing:
        volunteer = await self.store.volunteer(call.volunteer_id)
        if volunteer is None or volunteer["district"] != call.district or not volunteer.get("active", True):
            raise ApiError("unknown_volunteer", "no active volunteer with this id in the district",
                           {"volunteer_id": call.volunteer_id})
        resident_ref = await self.resident_ref(call.district, call.resident_phone)
        pairing_id = "pr-" + derived_id("pairing", call.district, resident_ref, call.volunteer_id)
        existing = await self.store.pairing(pairing_id)
        if existing and existing["active"]:
            return Pairing(pairing_id=pairing_id, volunteer_id=call.volunteer_id, kind=existing["kind"], active=True)
        now = self.clock()
        await self.store.save_pairing({"_id": pairing_id, "district": call.district, "resident_ref": resident_ref,
                                       "volunteer_id": call.volunteer_id, "kind": call.kind, "active": True,
                                       "started": now.timestamp()})
        await self.outbox.send([handlers.pairing_event(call.district, pairing_id, resident_ref, call.volunteer_id,
                                                       call.kind, now)])
        return Pairing(pairing_id=pairing_id, volunteer_id=call.volunteer_id, kind=call.kind, active=True)

    async def unpair(self, call: EndPairing) -> Pairing:
        pairing = await self.store.pairing(call.pairing_id)
        if pairing is None:
            raise ApiError("not_found", "no pairing with this id", {"pairing_id": call.pairing_id})
        await self.store.end_pairing(call.pairing_id)
        await self.outbox.send([handlers.pairing_ended_event(pairing, call.reason, self.clock())])
        return Pairing(pairing_id=pairing["_id"], volunteer_id=pairing["volunteer_id"], kind=pairing["kind"],
                       active=False)
