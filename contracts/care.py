"""Care plans, check-ins, the watchdog's escalations and safeguarding for children (linli.api.care.*).

Health notes, medicines and family phones travel only in calls to and answers from the care service; the
events below carry pseudonyms (resident_ref), ids and the kind of alert, never a note.
"""

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Slug = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
Id = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 -]{4,19}$")]
Short = Annotated[str, Field(min_length=1, max_length=100)]

ResidentKind = Literal["elderly_alone", "empty_nest", "disabled", "child"]
MemberRole = Literal["grid_worker", "community_worker", "neighbour", "family", "caring_parent", "director", "other"]
DutyKind = Literal["visit", "call", "medicine"]
Rhythm = Literal["daily", "weekly", "dates"]
Outcome = Literal["fine", "unwell", "needs_help", "not_home", "refused"]
ReaderRole = Literal["operator", "director", "member"]
Level = Literal["holder", "group", "grid_worker", "operators"]
Alert = Literal["missed", "not_home"]


class Call(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class Reader(Call):
    """Who asks, checked against the plan: operators and directors of the plan's district, and members of
    its care group. With tokens required it must agree with the caller's token, or the call is forbidden."""

    person_id: str = Id
    role: ReaderRole
    district: str = Slug


class Member(Call):
    person_id: str = Id
    name: str = Field(min_length=1, max_length=50, examples=["李网格"])
    role: MemberRole
    phone: Phone | None = None


class DutySpec(Call):
    duty_id: str = Slug
    kind: DutyKind
    rhythm: Rhythm
    due: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="Deadline, district's local time.",
                     examples=["18:00"])
    weekday: int = Field(default=0, ge=0, le=6, description="For weekly duties: 0 is Monday.")
    dates: list[date] = Field(default_factory=list, max_length=60, description="For duties on given dates.")
    holder: str = Id

    @model_validator(mode="after")
    def dates_for_dated(self) -> "DutySpec":
        if self.rhythm == "dates" and not self.dates:
            raise ValueError("a duty on given dates needs dates")
        return self


class CreatePlan(Call):
    idempotency_key: str = Field(min_length=8, max_length=128)
    reader: Reader
    district: str = Slug
    community: str = Slug
    grid: str = Slug
    resident_name: str = Field(min_length=1, max_length=50)
    resident_phone: Phone
    address: str = Field(default="", max_length=200)
    resident_kind: ResidentKind
    health_notes: str = Field(default="", max_length=2000)
    medicines: list[Short] = Field(default_factory=list, max_length=20)
    family_phones: list[Phone] = Field(default_factory=list, max_length=5)
    group: list[Member] = Field(min_length=1, max_length=10)
    duties: list[DutySpec] = Field(default_factory=list, max_length=10)
    reason: str = Field(default="", max_length=500)


class ChangePlan(Call):
    plan_id: str = Id
    reader: Reader
    reason: str = Field(min_length=1, max_length=500)
    health_notes: str | None = Field(default=None, max_length=2000)
    medicines: list[Short] | None = Field(default=None, max_length=20)
    family_phones: list[Phone] | None = Field(default=None, max_length=5)
    group: list[Member] | None = Field(default=None, min_length=1, max_length=10)
    duties: list[DutySpec] | None = Field(default=None, max_length=10)


class EndPlan(Call):
    plan_id: str = Id
    reader: Reader
    reason: str = Field(min_length=1, max_length=500)


class PlanQuery(Call):
    plan_id: str = Id
    reader: Reader


class Change(BaseModel):
    at: datetime
    by: str
    action: str = Field(examples=["created", "changed", "ended", "cover"])
    reason: str = ""


class Cover(BaseModel):
    person_id: str
    name: str
    for_person: str
    start: date
    end: date
    by: str
    reason: str = ""


class CarePlan(BaseModel):
    plan_id: str
    district: str
    community: str
    grid: str
    resident_ref: str = Field(description="Pseudonym of the resident, as in events.")
    resident_name: str
    resident_kind: ResidentKind
    address: str = ""
    health_notes: str = ""
    medicines: list[str] = Field(default_factory=list)
    family_phones: list[str] = Field(default_factory=list)
    group: list[Member]
    duties: list[DutySpec]
    covers: list[Cover] = Field(default_factory=list)
    active: bool
    history: list[Change]


class CheckIn(Call):
    idempotency_key: str = Field(min_length=8, max_length=128)
    plan_id: str = Id
    duty_id: str = Slug
    by: str = Id
    mode: Literal["visit", "call", "pickup"]
    outcome: Outcome
    at: datetime | None = Field(default=None, description="When it happened; now if not given.")
    note: str = Field(default="", max_length=500, description="Stays in the care service.")


class CheckInReply(BaseModel):
    checkin_id: str
    duty_id: str
    due_at: datetime | None = Field(default=None, description="The deadline this check-in answered, if any.")
    on_time: bool | None = None
    stopped_escalation: bool = False
    escalation_started: bool = False
    request_id: str | None = Field(default=None, description="The urgent request raised for unwell or needs_help.")


class LogContact(Call):
    idempotency_key: str = Field(min_length=8, max_length=128)
    plan_id: str = Id
    by: str = Id
    at: datetime | None = None
    where: str = Field(min_length=1, max_length=200)
    what: str = Field(min_length=1, max_length=1000)


class ContactLogged(BaseModel):
    contact_id: str
    plan_id: str
    at: datetime


class AssignCover(Call):
    plan_id: str = Id
    reader: Reader
    for_person: str = Id
    cover: Member
    start: date
    end: date
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def in_order(self) -> "AssignCover":
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class SafeguardQuery(Call):
    reader: Reader
    limit: int = Field(default=100, ge=1, le=500)


class QuietPairing(BaseModel):
    plan_id: str
    resident_ref: str
    caring_parent: str
    last_contact: datetime | None
    days: int


class SafeguardQueue(BaseModel):
    items: list[QuietPairing]


class ReportQuery(Call):
    reader: Reader
    community: str = Slug
    month: str = Field(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])$", examples=["2026-12"])


class ResidentLine(BaseModel):
    plan_id: str
    resident_ref: str
    last_contact: datetime | None


class CareReport(BaseModel):
    district: str
    community: str
    month: str
    due: int
    on_time: int
    late: int
    missed: int
    escalations: int
    endings: dict[str, int] = Field(description="How each escalation ended: checked_in, open, plan_ended.")
    residents: list[ResidentLine]
    csv: str


# ---- events -------------------------------------------------------------------------------------------

class Event(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CarePlanChanged(Event):
    plan_id: str
    district: str
    community: str = ""
    resident_ref: str = Field(description="Pseudonym; never a name, phone or note.")
    action: Literal["created", "changed", "ended", "cover"]
    by: str


class DutyMissed(Event):
    plan_id: str
    duty_id: str
    duty_kind: DutyKind = Field(default="visit", description="visit, call or medicine (pickup).")
    district: str
    resident_ref: str
    due_at: datetime
    alert: Alert = Field(description="missed: no check-in by the deadline; not_home: a visit found nobody in.")


class Escalated(Event):
    plan_id: str
    duty_id: str
    duty_kind: DutyKind = Field(default="visit", description="visit, call or medicine (pickup).")
    district: str
    resident_ref: str
    due_at: datetime
    step: int = Field(ge=1, le=4)
    level: Level
    recipients: list[str] = Field(description="person:<id> of the care group told, or operators.")
    alert: Alert


class EscalationStopped(Event):
    plan_id: str
    duty_id: str
    district: str
    resident_ref: str
    due_at: datetime
    step: int
    by: str = Field(description="Who checked in.")


class ContactOverdue(Event):
    plan_id: str
    district: str
    resident_ref: str
    caring_parent: str
    director: str = Field(description="person:<id> of the children's director told, or operators.")
    days: int
