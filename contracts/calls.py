from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.events import Channel, Hours, Urgency

Slug = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Lower-case id usable as a NATS subject token.")
ItemId = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,80}$", description="Catalogue category or item id.")


class Call(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class CatalogQuery(Call):
    district: str | None = None


class CatalogItem(BaseModel):
    id: str = Field(examples=["repair.plumbing"])
    name: str = Field(examples=["水电维修"])
    name_en: str = Field(default="", examples=["Plumbing and wiring repairs"])
    hours_hint: Decimal = Field(default=Decimal("1"), description="Typical duration in hours.")


class CatalogCategory(BaseModel):
    id: str = Field(examples=["repair"])
    name: str = Field(examples=["便民维修"])
    name_en: str = Field(default="", examples=["Repairs"])
    items: list[CatalogItem]


class Catalog(BaseModel):
    categories: list[CatalogCategory]


class Resident(Call):
    name: str = Field(min_length=1, max_length=50, examples=["王秀英"])
    phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{4,19}$", examples=["13800138000"])
    address: str = Field(default="", max_length=200, examples=["泉外园小区3栋2单元401"])


class SubmitRequest(Call):
    idempotency_key: str = Field(
        min_length=8, max_length=128, description="Chosen by the caller; the same key never creates two requests."
    )
    district: str = Slug
    grid: str = Slug
    service: str = ItemId
    description: str = Field(default="", max_length=2000)
    urgency: Urgency = "routine"
    window_start: datetime | None = None
    window_end: datetime | None = None
    resident: Resident
    channel: Channel = "kiosk"

    @model_validator(mode="after")
    def window_in_order(self) -> "SubmitRequest":
        if self.window_start and self.window_end and self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class SubmitReply(BaseModel):
    request_id: str
    status: str = Field(examples=["submitted"])


class RegisterVolunteer(Call):
    name: str = Field(min_length=1, max_length=50, examples=["袁文"])
    phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{4,19}$", examples=["13900139000"])
    district: str = Slug
    grids: list[str] = Field(min_length=1, max_length=20)
    skills: list[str] = Field(min_length=1, max_length=50)
    capacity: int = Field(default=1, ge=1, le=20)
    team: str = Field(default="", max_length=80, description="The volunteer team (志愿服务队).")

    @model_validator(mode="after")
    def ids_well_formed(self) -> "RegisterVolunteer":
        for value in [*self.grids, *self.skills]:
            if not value or not value.replace(".", "").replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"not a grid or catalogue id: {value!r}")
        return self


class RegisterReply(BaseModel):
    volunteer_id: str


class RateRequest(Call):
    request_id: str = Field(min_length=1)
    stars: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=500)


class StatusQuery(Call):
    request_id: str = Field(min_length=1)


class CancelRequest(Call):
    request_id: str = Field(min_length=1)
    reason: str = Field(default="", max_length=500)


class StatusChange(BaseModel):
    status: str
    at: datetime
    note: str = ""


class RequestStatus(BaseModel):
    request_id: str
    status: Literal["submitted", "accepted", "completed", "rated", "unmatched", "cancelled"]
    district: str
    grid: str
    service: str
    urgency: Urgency
    volunteer_id: str | None = None
    hours: Decimal | None = None
    stars: int | None = None
    created_at: datetime
    history: list[StatusChange]


class ContactQuery(Call):
    kind: Literal["volunteer", "resident"]
    id: str = Field(min_length=1, description="A volunteer id, or a request id for its resident.")


class Contact(BaseModel):
    name: str
    phone: str


class Respond(Call):
    assignment_id: str = Field(min_length=1)
    volunteer_id: str = Field(min_length=1)
    accept: bool
    reason: str = Field(default="", max_length=500)


class Complete(Call):
    assignment_id: str = Field(min_length=1)
    volunteer_id: str = Field(min_length=1)
    hours: Hours
    note: str = Field(default="", max_length=1000)


class AssignmentReply(BaseModel):
    assignment_id: str
    request_id: str
    status: Literal["offered", "accepted", "declined", "expired", "completed", "withdrawn"]


class AssignmentsQuery(Call):
    volunteer_id: str = Field(min_length=1)


class AssignmentView(BaseModel):
    assignment_id: str
    request_id: str
    status: str
    service: str
    grid: str
    urgency: Urgency
    expires_at: datetime


class Assignments(BaseModel):
    volunteer_id: str
    assignments: list[AssignmentView]


class BalanceQuery(Call):
    volunteer_id: str = Field(min_length=1)


class Balance(BaseModel):
    volunteer_id: str
    hours: Decimal = Field(description="All hours credited.")
    points: Decimal = Field(description="Points earned less points spent.")
    services: int = Field(description="Completed services credited.")
    ratings: int = 0
    average_stars: Decimal | None = None


CALLS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "intake.catalog": (CatalogQuery, Catalog),
    "intake.submit": (SubmitRequest, SubmitReply),
    "intake.register_volunteer": (RegisterVolunteer, RegisterReply),
    "intake.rate": (RateRequest, RequestStatus),
    "intake.status": (StatusQuery, RequestStatus),
    "intake.cancel": (CancelRequest, RequestStatus),
    "intake.contact": (ContactQuery, Contact),
    "matcher.respond": (Respond, AssignmentReply),
    "matcher.complete": (Complete, AssignmentReply),
    "matcher.assignments": (AssignmentsQuery, Assignments),
    "ledger.balance": (BalanceQuery, Balance),
}
