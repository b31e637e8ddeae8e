import json
from typing import Any

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
from services.care.config import CareSettings
from services.care.store import CareStore
from services.care.watch import Care, Clock, SystemClock
from contracts.events import AssignmentCompleted
from services.common.bus import api_call, on_call, on_event
from services.common.places import Places
from services.common.runtime import Service


def build(settings: CareSettings | None = None, clock: Clock | None = None) -> Service:
    return assemble(settings, clock)[0]


def assemble(settings: CareSettings | None = None, clock: Clock | None = None) -> tuple[Service, Care]:
    """The service and its care steps, for tests and the benchmark that drive the watchdog themselves."""
    settings = settings or CareSettings()
    service = Service.create("care", settings.bus)
    broker, inbox = service.broker, service.inbox

    async def ask_intake(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply = await broker.request(json.dumps(payload).encode(), subject, timeout=settings.intake_timeout)
        answer: dict[str, Any] = json.loads(reply.body)
        return answer

    care = Care(CareStore(service.db), service.outbox, settings, Places.load(settings.places_path),
                clock or SystemClock(), ask_intake)
    service.on_start.append(care.start)
    service.loops.append(care.watch_forever)

    @on_call(broker, API.CARE_CREATE_PLAN, "care")
    @api_call(CreatePlan)
    async def create_plan(call: CreatePlan) -> CarePlan:
        return await care.create_plan(call)  # keyed on the idempotency key

    @on_call(broker, API.CARE_CHANGE_PLAN, "care")
    @api_call(ChangePlan)
    async def change_plan(call: ChangePlan) -> CarePlan:
        return await care.change_plan(call)

    @on_call(broker, API.CARE_END_PLAN, "care")
    @api_call(EndPlan)
    async def end_plan(call: EndPlan) -> CarePlan:
        return await care.end_plan(call)

    @on_call(broker, API.CARE_PLAN, "care")
    @api_call(PlanQuery)
    async def plan(call: PlanQuery) -> CarePlan:
        return await care.plan(call.plan_id, call.reader)

    @on_call(broker, API.CARE_CHECK_IN, "care")
    @api_call(CheckIn)
    async def check_in(call: CheckIn) -> CheckInReply:
        return await care.check_in(call)  # keyed on the idempotency key

    @on_call(broker, API.CARE_LOG_CONTACT, "care")
    @api_call(LogContact)
    async def log_contact(call: LogContact) -> ContactLogged:
        return await care.log_contact(call)  # keyed on the idempotency key

    @on_call(broker, API.CARE_ASSIGN_COVER, "care")
    @api_call(AssignCover)
    async def assign_cover(call: AssignCover) -> CarePlan:
        return await care.assign_cover(call)

    @on_call(broker, API.CARE_SAFEGUARD_QUEUE, "care")
    @api_call(SafeguardQuery)
    async def safeguard_queue(call: SafeguardQuery) -> SafeguardQueue:
        return await care.safeguard_queue(call.reader, call.limit)

    @on_call(broker, API.CARE_REPORT, "care")
    @api_call(ReportQuery)
    async def report(call: ReportQuery) -> CareReport:
        return CareReport.model_validate(await care.report(call))

    @on_event(broker, settings.bus, "care", "assignment.completed")
    async def completed(event: Envelope[AssignmentCompleted]) -> None:
        async with inbox.once("care-completed", event) as first:
            if first:
                await care.request_done(event.data.request_id, event.time)  # a $set: a repeat changes nothing

    return service, care
