import json
from typing import Any, TypeVar

from contracts import API, Envelope
from contracts.care import (
    AssignCover,
    CarePlan,
    CareReport,
    ChangePlan,
    CheckIn,
    CheckInReply,
    ContactLogged,
    CreatePlan,
    EndPlan,
    LogContact,
    PlanQuery,
    ReportQuery,
    SafeguardQuery,
    SafeguardQueue,
)
from services.care.access import reader_of
from services.care.config import CareSettings
from services.care.store import CareStore
from services.care.watch import Care, Clock, SystemClock
from contracts.events import AssignmentCompleted
from services.common.auth import Actor
from services.common.bus import api_call, on_call, on_event
from services.common.places import Places
from services.common.runtime import Service


Read = TypeVar("Read", CreatePlan, ChangePlan, EndPlan, AssignCover, ReportQuery)


def signed(call: Read, actor: Actor) -> Read:
    """The call with its reader checked against the token (the body's reader stays for older callers)."""
    return call.model_copy(update={"reader": reader_of(actor, call.reader)})


def build(settings: CareSettings | None = None, clock: Clock | None = None) -> Service:
    return assemble(settings, clock)[0]


def assemble(settings: CareSettings | None = None, clock: Clock | None = None) -> tuple[Service, Care]:
    """The service and its care steps, for tests and the benchmark that drive the watchdog themselves."""
    settings = settings or CareSettings()
    service = Service.create("care", settings.bus)
    broker, gate = service.broker, service.gate

    async def ask_intake(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await broker.request(json.dumps(payload).encode(), subject, timeout=settings.intake_timeout)
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    care = Care(CareStore(service.db), service.outbox, settings, Places.load(settings.places_path),
                clock or SystemClock(), ask_intake)
    service.on_start.append(care.start)
    service.loops.append(care.watch_forever)

    @on_call(broker, API.CARE_CREATE_PLAN, "care")
    @api_call(CreatePlan, gate)
    async def create_plan(call: CreatePlan, actor: Actor) -> CarePlan:
        return await care.create_plan(signed(call, actor))  # keyed on the idempotency key

    @on_call(broker, API.CARE_CHANGE_PLAN, "care")
    @api_call(ChangePlan, gate)
    async def change_plan(call: ChangePlan, actor: Actor) -> CarePlan:
        return await care.change_plan(signed(call, actor))

    @on_call(broker, API.CARE_END_PLAN, "care")
    @api_call(EndPlan, gate)
    async def end_plan(call: EndPlan, actor: Actor) -> CarePlan:
        return await care.end_plan(signed(call, actor))

    @on_call(broker, API.CARE_PLAN, "care")
    @api_call(PlanQuery, gate)
    async def plan(call: PlanQuery, actor: Actor) -> CarePlan:
        return await care.plan(call.plan_id, reader_of(actor, call.reader))

    @on_call(broker, API.CARE_CHECK_IN, "care")
    @api_call(CheckIn, gate)
    async def check_in(call: CheckIn, actor: Actor) -> CheckInReply:
        return await care.check_in(call, actor)  # keyed on the idempotency key

    @on_call(broker, API.CARE_LOG_CONTACT, "care")
    @api_call(LogContact, gate)
    async def log_contact(call: LogContact, actor: Actor) -> ContactLogged:
        return await care.log_contact(call, actor)  # keyed on the idempotency key

    @on_call(broker, API.CARE_ASSIGN_COVER, "care")
    @api_call(AssignCover, gate)
    async def assign_cover(call: AssignCover, actor: Actor) -> CarePlan:
        return await care.assign_cover(signed(call, actor))

    @on_call(broker, API.CARE_SAFEGUARD_QUEUE, "care")
    @api_call(SafeguardQuery, gate)
    async def safeguard_queue(call: SafeguardQuery, actor: Actor) -> SafeguardQueue:
        return await care.safeguard_queue(reader_of(actor, call.reader), call.limit)

    @on_call(broker, API.CARE_REPORT, "care")
    @api_call(ReportQuery, gate)
    async def report(call: ReportQuery, actor: Actor) -> CareReport:
        return CareReport.model_validate(await care.report(signed(call, actor)))

    @on_event(broker, settings.bus, "care", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        await care.request_done(event.data.request_id, event.time)  # only moves later: a repeat changes nothing

    return service, care
