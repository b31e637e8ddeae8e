from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import care
from contracts.events import AwayPeriod, Channel, Hours, Urgency, WeeklyWindow

Slug = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Lower-case id usable as a NATS subject token.")
ItemId = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,80}$", description="Catalogue category or item id.")
# Every string and list a call carries is bounded: ids, names and free text by max_length, lists by max_length
# and their items by the type below.
Id = Field(min_length=1, max_length=80)
Token = Annotated[str, Field(min_length=1, max_length=81)]


class Call(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class CatalogQuery(Call):
    district: str | None = Field(default=None, max_length=64)


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
    needs: list[Token] = Field(
        default_factory=list, max_length=10,
        description="Hard constraints: sign-language, dialect:<name>, woman, wheelchair.",
    )

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
    grids: list[Token] = Field(min_length=1, max_length=20)
    skills: list[Token] = Field(min_length=1, max_length=50)
    capacity: int = Field(default=1, ge=1, le=20)
    team: str = Field(default="", max_length=80, description="The volunteer team (志愿服务队).")
    attributes: list[Token] = Field(default_factory=list, max_length=20, examples=[["sign-language", "woman"]])
    availability: list[WeeklyWindow] = Field(
        default_factory=list, max_length=50, description="Weekly windows; empty means any time."
    )
    away: list[AwayPeriod] = Field(default_factory=list, max_length=50, description="Periods the volunteer is away.")

    @model_validator(mode="after")
    def ids_well_formed(self) -> "RegisterVolunteer":
        for value in [*self.grids, *self.skills]:
            if not value or not value.replace(".", "").replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"not a grid or catalogue id: {value!r}")
        return self


class RegisterReply(BaseModel):
    volunteer_id: str


PhoneLast4 = Field(
    default="", pattern=r"^([0-9]{4})?$",
    description="The last four digits of the resident's phone. Given, the call answers not_found unless they match: "
    "a page that knows only the code and these digits sees this request and nothing else.",
)


class RateRequest(Call):
    request_id: str = Id
    phone_last4: str = PhoneLast4
    stars: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=500)
    done: bool = Field(default=True, description="False when the resident says the service was not done.")


class StatusQuery(Call):
    request_id: str = Id
    phone_last4: str = PhoneLast4


class CancelRequest(Call):
    request_id: str = Id
    reason: str = Field(default="", max_length=500)
    operator: str = Field(default="", max_length=80, description="Who cancelled it, when not the resident.")


class StatusChange(BaseModel):
    status: str
    at: datetime
    note: str = ""


RequestState = Literal[
    "submitted", "offered", "accepted", "completed", "rated", "unmatched", "cancelled", "reopened", "closed"
]


class RequestStatus(BaseModel):
    request_id: str
    status: RequestState
    district: str
    grid: str
    service: str
    urgency: Urgency
    volunteer_id: str | None = None
    hours: Decimal | None = None
    stars: int | None = None
    created_at: datetime
    history: list[StatusChange]
    code: str = Field(default="", description="The short code, said aloud and typed where the id is.")
    volunteer_name: str = Field(default="", description="Who is coming, once a volunteer has accepted.")
    window_start: datetime | None = None
    window_end: datetime | None = None


class ContactQuery(Call):
    kind: Literal["volunteer", "resident"]
    id: str = Field(min_length=1, max_length=80, description="A volunteer id, or a request id for its resident.")


class Contact(BaseModel):
    name: str
    phone: str
    address: str = Field(default="", description="For a resident, where the service is done.")


class PlacesQuery(Call):
    district: str | None = Field(default=None, max_length=64, description="One district; none gives every district.")


class PlaceName(BaseModel):
    id: str
    name: str = Field(examples=["泉外社区"])
    name_en: str = ""


class CommunityPlace(PlaceName):
    street: str = Field(default="", description="The street (街道) id.")


class GridPlace(PlaceName):
    community: str = Field(default="", description="The community (社区) id.")
    neighbours: list[str] = Field(default_factory=list)


class DistrictPlaces(PlaceName):
    timezone: str = Field(default="Asia/Shanghai", description="The clock every time shown to people is read in.")
    streets: list[PlaceName]
    communities: list[CommunityPlace]
    grids: list[GridPlace]


class Places(BaseModel):
    districts: list[DistrictPlaces]


class DetailsQuery(Call):
    assignment_id: str = Field(min_length=1, max_length=80, description="The assignment id or its short code.")
    volunteer_id: str = Field(min_length=1, max_length=80, description="The volunteer asking: only the one who accepted.")


class AssignmentDetails(BaseModel):
    """What the accepted volunteer needs to serve; given only to that volunteer, and only until
    INTAKE_DETAILS_TTL after the work is done."""

    request_id: str
    code: str = Field(description="The request's short code.")
    assignment_id: str
    district: str
    grid: str
    place: str = Field(description="Community and grid by name.", examples=["泉外社区泉外第一网格"])
    service: str
    service_name: str = Field(examples=["水电维修"])
    urgency: Urgency
    description: str = ""
    window_start: datetime | None = None
    window_end: datetime | None = None
    resident_name: str
    resident_phone: str
    address: str
    access_until: datetime | None = Field(default=None, description="When these details stop being given out.")


class RequestsQuery(Call):
    state: Literal[
        "open", "offered", "assigned", "unmatched", "reopened", "overdue",
        "submitted", "accepted", "completed", "rated", "cancelled", "closed", "any",
    ] = Field(
        default="any",
        description="open: not yet accepted (submitted or offered); assigned: accepted, not yet done; overdue: open or "
        "assigned past its window's end (or INTAKE_OVERDUE_AFTER after it was made, when it has no window).",
    )
    district: str | None = Field(default=None, max_length=64)
    community: str | None = Field(default=None, max_length=64)
    grid: str | None = Field(default=None, max_length=64)
    since: datetime | None = Field(default=None, description="Made at or after this time.")
    until: datetime | None = Field(default=None, description="Made before this time.")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str = Field(default="", max_length=200, description="next_cursor of the previous page.")


class RequestSummary(BaseModel):
    request_id: str
    code: str
    status: RequestState
    overdue: bool = False
    district: str
    grid: str
    place: str = Field(description="Community and grid by name.")
    community: str = ""
    service: str
    service_name: str = ""
    urgency: Urgency
    created_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    volunteer_id: str | None = None


class RequestList(BaseModel):
    items: list[RequestSummary]
    next_cursor: str = Field(default="", description="Pass as cursor for the next page; empty on the last.")


class UpdateVolunteer(Call):
    volunteer_id: str = Field(min_length=1, max_length=80)
    grids: list[Token] | None = Field(default=None, min_length=1, max_length=20)
    skills: list[Token] | None = Field(default=None, min_length=1, max_length=50)
    capacity: int | None = Field(default=None, ge=1, le=20)
    team: str | None = Field(default=None, max_length=80)
    attributes: list[Token] | None = Field(default=None, max_length=20)
    availability: list[WeeklyWindow] | None = Field(default=None, max_length=50)
    away: list[AwayPeriod] | None = Field(default=None, max_length=50)
    name: str | None = Field(default=None, min_length=1, max_length=50)


class VolunteerProfile(BaseModel):
    volunteer_id: str
    name: str
    district: str
    grids: list[str]
    skills: list[str]
    capacity: int
    team: str = ""
    attributes: list[str] = Field(default_factory=list)
    availability: list[WeeklyWindow] = Field(default_factory=list)
    away: list[AwayPeriod] = Field(default_factory=list)
    active: bool = True


class LeaveVolunteer(Call):
    volunteer_id: str = Field(min_length=1, max_length=80)
    reason: str = Field(default="", max_length=500)


class CloseRequest(Call):
    request_id: str = Field(min_length=1, max_length=80, description="A reopened request's id or short code.")
    operator: str = Field(min_length=1, max_length=80)
    reason: str = Field(min_length=1, max_length=500)


class Respond(Call):
    assignment_id: str = Id
    volunteer_id: str = Id
    accept: bool
    reason: str = Field(default="", max_length=500)


class Complete(Call):
    assignment_id: str = Id
    volunteer_id: str = Id
    hours: Hours
    note: str = Field(default="", max_length=1000)


class AssignmentReply(BaseModel):
    assignment_id: str
    request_id: str
    status: Literal["offered", "accepted", "declined", "expired", "completed", "withdrawn"]
    code: str = Field(default="", description="The assignment's short code.")


class AssignmentsQuery(Call):
    volunteer_id: str = Id
    past: bool = Field(default=False, description="The finished ones instead (completed, declined, expired, "
                       "withdrawn), newest first.")
    limit: int = Field(default=50, ge=1, le=200, description="At most this many finished ones.")


class AssignmentView(BaseModel):
    assignment_id: str
    request_id: str
    status: str
    service: str
    grid: str
    urgency: Urgency
    expires_at: datetime
    code: str = Field(default="", description="The assignment's short code.")
    request_code: str = Field(default="", description="The request's short code.")
    district: str = ""
    place: str = Field(default="", description="How near: grid, neighbour, community, street or district.")
    description: str = ""
    window_start: datetime | None = None
    window_end: datetime | None = None
    hours: Decimal | None = Field(default=None, description="The hours given when it was marked done.")


class VolunteersQuery(Call):
    district: str = Field(min_length=1, max_length=64)
    grid: str | None = Field(default=None, max_length=64)
    skill: str | None = Field(default=None, max_length=81, description="A menu category or item id.")
    team: str | None = Field(default=None, max_length=80)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str = Field(default="", max_length=200)


class VolunteerLoad(BaseModel):
    volunteer_id: str
    district: str
    grids: list[str]
    skills: list[str]
    team: str = ""
    capacity: int
    load: int = Field(description="Offers and assignments open now.")
    offers_this_week: int = 0
    hours_this_week: Decimal = Decimal("0")


class VolunteerList(BaseModel):
    items: list[VolunteerLoad]
    next_cursor: str = ""


class Assignments(BaseModel):
    volunteer_id: str
    assignments: list[AssignmentView]


class BalanceQuery(Call):
    volunteer_id: str = Id


class Balance(BaseModel):
    volunteer_id: str
    hours: Decimal = Field(description="All hours credited.")
    points: Decimal = Field(description="Points earned less points spent.")
    services: int = Field(description="Completed services credited.")
    ratings: int = 0
    average_stars: Decimal | None = None


class ExplainQuery(Call):
    request_id: str = Id


class Explanation(BaseModel):
    request_id: str
    state: str
    urgency: Urgency
    code: str = Field(default="", description="The request's short code.")
    district: str = ""
    reopened: bool = Field(default=False, description="A poor rating sent it back: an operator may re-dispatch it.")
    offers: list[dict[str, Any]] = Field(description="Every offer made, in order, with its stage and score breakdown.")
    fell_out: list[dict[str, Any]] = Field(description="Volunteers offered who fell out, and why.")
    not_considered: dict[str, int] = Field(default_factory=dict)
    operator_actions: list[dict[str, Any]] = Field(default_factory=list)


class OperatorAssign(Call):
    request_id: str = Id
    volunteer_id: str = Id
    operator: str = Field(min_length=1, max_length=80, description="Who is assigning by hand.")
    reason: str = Field(min_length=1, max_length=500, description="Why; kept with the assignment.")
    confirmed: bool = Field(default=False, description="The operator already has the volunteer's yes.")


class OperatorReassign(Call):
    request_id: str = Id
    operator: str = Field(min_length=1, max_length=80)
    reason: str = Field(min_length=1, max_length=500)
    volunteer_id: str | None = Field(
        default=None, max_length=80, description="A named volunteer; without one, match again."
    )


class PairResident(Call):
    district: str = Slug
    resident_phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{4,19}$", description="Identifies the resident.")
    volunteer_id: str = Id
    kind: Literal["caring-parent", "care-group", "other"] = "care-group"


class Pairing(BaseModel):
    pairing_id: str
    volunteer_id: str
    kind: str
    active: bool


class EndPairing(Call):
    pairing_id: str = Id
    reason: str = Field(default="", max_length=500)


SignedAmount = Annotated[
    Decimal,
    Field(ge=-100000, le=100000, decimal_places=2, description="A change, exact to 0.01; negative takes away."),
]


class LedgerEntry(BaseModel):
    entry_id: str
    kind: Literal["credit", "bonus", "spend", "adjust", "import", "confirm"]
    volunteer_id: str
    seq: int = Field(description="Position in the volunteer's chain of entries, from 1.")
    hours: Decimal
    points: Decimal
    balance_hours: Decimal = Field(description="The volunteer's hours after this entry.")
    balance_points: Decimal = Field(description="The volunteer's points after this entry.")
    request_id: str = ""
    reason: str = ""
    rule_version: str = ""
    cause: str = Field(description="The event id or call idempotency key that caused the entry.")
    hash: str = Field(description="sha256 over the entry and the previous entry's hash.")


class AdjustBalance(Call):
    volunteer_id: str = Id
    hours: SignedAmount = Decimal("0")
    points: SignedAmount = Decimal("0")
    reason: str = Field(min_length=1, max_length=500, description="Why; kept in the entry for good.")
    operator: str = Field(min_length=1, max_length=80)
    idempotency_key: str = Field(min_length=8, max_length=128)
    request_id: str = Field(default="", max_length=80, description="The reviewed request this settles, if any.")

    @model_validator(mode="after")
    def changes_something(self) -> "AdjustBalance":
        if not self.hours and not self.points:
            raise ValueError("an adjustment changes hours, points or both")
        return self


class ConfirmService(Call):
    request_id: str = Id
    volunteer_id: str = Field(
        default="", max_length=80,
        description="Whose hours: needed only when a re-dispatched request was served by more than one volunteer.",
    )
    operator: str = Field(min_length=1, max_length=80)
    reason: str = Field(default="", max_length=500)


class ReviewQuery(Call):
    limit: int = Field(default=100, ge=1, le=1000)


class ReviewItem(BaseModel):
    request_id: str
    volunteer_id: str
    state: Literal["disputed", "overdue"] = Field(
        description="disputed: rated 1-2 stars or not done; overdue: not confirmed before the deadline."
    )
    hours: Decimal
    credited_at: datetime | None = None
    stars: int | None = None
    done: bool | None = None
    comment: str = ""


class ReviewQueue(BaseModel):
    items: list[ReviewItem]


class PutRewardItem(Call):
    item_id: str = ItemId
    name: str = Field(min_length=1, max_length=80, examples=["大米 5kg"])
    kind: Literal["goods", "course", "service"] = Field(description="Goods with stock, a course with seats, a service.")
    points: Decimal = Field(gt=0, le=1000000, decimal_places=2, description="Price in points of one unit.")
    stock: int | None = Field(
        default=None, ge=0, le=1_000_000,
        description="Units or seats on hand now, at most 1,000,000; null is unlimited.",
    )
    active: bool = True
    description: str = Field(default="", max_length=500)


class RewardItem(BaseModel):
    item_id: str
    name: str
    kind: str
    points: Decimal
    stock: int | None
    active: bool
    description: str = ""


class RewardCatalogQuery(Call):
    include_inactive: bool = False


class RewardCatalog(BaseModel):
    items: list[RewardItem]


class Redeem(Call):
    volunteer_id: str = Id
    item_id: str = Field(min_length=1, max_length=81)
    quantity: int = Field(default=1, ge=1, le=100)
    idempotency_key: str = Field(min_length=8, max_length=128)


class Redemption(BaseModel):
    redemption_id: str
    volunteer_id: str
    item_id: str
    quantity: int
    points: Decimal = Field(description="Points spent.")
    balance_points: Decimal = Field(description="The volunteer's points after the spend.")
    entry_id: str


class StatementQuery(Call):
    volunteer_id: str = Id


class StatementLine(BaseModel):
    kind: str = Field(examples=["credit"])
    category: str = Field(default="", description="For credits, the catalogue category.")
    entries: int
    hours: Decimal
    points: Decimal


class Statement(BaseModel):
    """A district's signed account of one volunteer's hours, carried to another district (转移接续)."""

    format: Literal["linli.statement/1"] = "linli.statement/1"
    statement_id: str = Field(description="The same account state always gives the same id.")
    district: str = Field(description="The issuing district; its public key verifies the signature.")
    volunteer_id: str = Field(description="The volunteer's id in the issuing district.")
    issued_at: datetime
    head_seq: int = Field(description="The last entry of the volunteer's chain the statement covers.")
    head_hash: str
    hours: Decimal = Field(description="All hours on the account.")
    confirmed_hours: Decimal = Field(description="Hours confirmed by the resident or an operator.")
    points: Decimal = Field(description="The point balance in the issuing district (not carried over).")
    services: int
    summary: list[StatementLine]


class SignedStatement(BaseModel):
    statement: dict[str, Any] = Field(description="A Statement, exactly as signed.")
    signature: str = Field(
        description="Base64 Ed25519 signature of the statement as UTF-8 JSON, keys sorted, no spaces, non-ASCII as is."
    )
    algorithm: Literal["Ed25519"] = "Ed25519"
    key_id: str = Field(description="First 16 hex digits of sha256 over the public key (DER).")


class ImportStatement(Call):
    statement: dict[str, Any] = Field(description="A Statement as signed; bounded by the size and depth of the body.")
    signature: str = Field(min_length=1, max_length=512)
    volunteer_id: str = Field(min_length=1, max_length=80, description="The volunteer's id in this district.")


class PublicKeyQuery(Call):
    pass


class PublicKey(BaseModel):
    district: str
    algorithm: Literal["Ed25519"] = "Ed25519"
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo).")
    key_id: str


class TrustDistrict(Call):
    district: str = Field(min_length=1, max_length=64, description="The district whose statements to accept.")
    public_key: str = Field(
        min_length=1, max_length=4000,
        description="That district's Ed25519 public key, PEM (SubjectPublicKeyInfo), as its linli.api.ledger.public_key "
        "gives it. A district already trusted gets this key instead of its old one.",
    )
    operator: str = Field(min_length=1, max_length=80)
    reason: str = Field(min_length=1, max_length=500)


class DistrustDistrict(Call):
    district: str = Field(min_length=1, max_length=64)
    operator: str = Field(min_length=1, max_length=80)
    reason: str = Field(min_length=1, max_length=500)


class TrustedKeysQuery(Call):
    pass


class TrustedKey(BaseModel):
    district: str
    key_id: str = Field(description="First 16 hex digits of sha256 over the public key (DER).")
    source: Literal["environment", "operator"] = Field(
        description="LEDGER_TRUSTED_KEYS (changed only by a restart), or a trust_put call."
    )
    operator: str = ""
    reason: str = ""
    trusted_at: datetime | None = Field(default=None, description="When an operator trusted it.")


class TrustedKeys(BaseModel):
    keys: list[TrustedKey]


class MonthReportQuery(Call):
    district: str = Slug
    month: str = Field(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])$", description="YYYY-MM (2000-01 to 2099-12) on the "
                       "district's clock.", examples=["2026-11"])
    by: Literal["grid", "team", "volunteer"] = Field(default="grid", description="One row per grid, team or volunteer.")
    format: Literal["json", "csv", "png", "svg"] = Field(
        default="json", description="json: the table only; csv, png, svg: the file too, as base64.")
    community: str = Field(default="", max_length=80, description="The name printed on the chart (default: the district's).")


class MonthReport(BaseModel):
    district: str
    district_name: str
    month: str
    by: str
    headline: str = Field(description="The chart's headline: services, residents and hours of the month.")
    headings: list[str] = Field(description="The table's column headings, bilingual, as in the CSV.")
    rows: list[list[str]] = Field(description="One row per group, then the total row.")
    content_type: str = Field(default="", description="text/csv, image/png or image/svg+xml; empty for json.")
    file_name: str = ""
    content_base64: str = Field(default="", description="The file, base64; empty for json.")


Role = Literal["dispatcher", "bank_clerk", "committee", "administrator"]
Secret = Field(min_length=1, max_length=200)


class SignIn(Call):
    user: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", examples=["wang.dispatch"])
    password: str = Secret


class DeviceSignIn(Call):
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["kiosk-quanwai-03"])
    secret: str = Secret


class CodeRequest(Call):
    volunteer_id: str = Field(default="", max_length=80, description="The volunteer's id; or give phone and district.")
    phone: str = Field(
        default="", pattern=r"^(\+?[0-9][0-9 -]{4,19})?$",
        description="The phone the volunteer registered with, instead of their id; needs district.",
    )
    district: str = Field(default="", max_length=64, description="The district the phone is registered in.")

    @model_validator(mode="after")
    def one_way_to_name_the_volunteer(self) -> "CodeRequest":
        if bool(self.volunteer_id) == bool(self.phone):
            raise ValueError("give volunteer_id, or phone and district")
        if self.phone and not self.district:
            raise ValueError("a phone needs its district")
        return self


class CodeSent(BaseModel):
    code_ref: str = Field(description="Give it back with the code the volunteer received.")
    expires_at: datetime


class CodeSignIn(Call):
    volunteer_id: str = Field(
        default="", max_length=80,
        description="The volunteer the code was sent to; may be left out when the code was asked for by phone.",
    )
    code_ref: str = Id
    code: str = Field(pattern=r"^[0-9]{6}$", description="The six digits sent to the volunteer's phone.")


class CodeQuery(Call):
    code_ref: str = Id


class CodeText(BaseModel):
    volunteer_id: str
    district: str
    code: str
    expires_at: datetime


class SignedIn(BaseModel):
    token: str = Field(description="Send it as the header `Authorization: Bearer <token>`.")
    expires_at: datetime
    sub: str = Field(description="The operator's user name, the volunteer id or the device id.")
    role: str = Field(examples=["dispatcher"])
    district: str = Field(description="The district the credential acts in; * for every district.")
    grid: str = ""


class TokenKeyQuery(Call):
    pass


class TokenKey(BaseModel):
    algorithm: Literal["EdDSA"] = "EdDSA"
    public_key: str = Field(description="Ed25519, PEM (SubjectPublicKeyInfo): verifies every token.")
    key_id: str = Field(description="The `kid` in each token's header.")


class PutOperator(Call):
    user: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    role: Role
    district: str = Field(pattern=r"^(\*|[a-z0-9][a-z0-9_-]{0,62})$", description="A district id, or * (administrators).")
    password: str = Field(min_length=10, max_length=200, description="At least 10 characters; stored as an argon2 hash.")
    active: bool = True


class Operator(BaseModel):
    user: str
    role: str
    district: str
    active: bool


class PutDevice(Call):
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    district: str = Slug
    grid: str = Slug


class DeviceCredential(BaseModel):
    device_id: str
    district: str
    grid: str
    secret: str = Field(description="Shown once; the kiosk signs in with it (linli.api.identity.device_login).")


class FindVolunteer(Call):
    district: str = Field(min_length=1, max_length=64)
    phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{4,19}$", description="The phone the volunteer registered with.")


class VolunteerFound(BaseModel):
    volunteer_id: str
    district: str


class CertificateQuery(Call):
    volunteer_id: str = Id
    issuer: str = Field(default="", max_length=80, description="Who issues it, printed above the seal; "
                        "LEDGER_CERTIFICATE_ISSUER when left out.")


class CertificateFile(BaseModel):
    file_name: str = Field(examples=["certificate-v-8c1d.pdf"])
    content_type: Literal["application/pdf"] = "application/pdf"
    pdf_base64: str = Field(description="The PDF, base64; kept under LEDGER_CERTIFICATE_MAX_BYTES so the reply "
                            "fits NATS's 1 MB max payload.")
    bytes: int = Field(description="The PDF's size before base64.")
    name: str = Field(description="The volunteer's name on it, as intake has it.")
    hours: Decimal
    services: int


CALLS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "intake.catalog": (CatalogQuery, Catalog),
    "intake.submit": (SubmitRequest, SubmitReply),
    "intake.register_volunteer": (RegisterVolunteer, RegisterReply),
    "intake.rate": (RateRequest, RequestStatus),
    "intake.status": (StatusQuery, RequestStatus),
    "intake.cancel": (CancelRequest, RequestStatus),
    "intake.contact": (ContactQuery, Contact),
    "intake.places": (PlacesQuery, Places),
    "intake.details": (DetailsQuery, AssignmentDetails),
    "intake.requests": (RequestsQuery, RequestList),
    "intake.update_volunteer": (UpdateVolunteer, VolunteerProfile),
    "intake.leave": (LeaveVolunteer, VolunteerProfile),
    "intake.close": (CloseRequest, RequestStatus),
    "matcher.respond": (Respond, AssignmentReply),
    "matcher.complete": (Complete, AssignmentReply),
    "matcher.assignments": (AssignmentsQuery, Assignments),
    "matcher.explain": (ExplainQuery, Explanation),
    "matcher.assign": (OperatorAssign, AssignmentReply),
    "matcher.reassign": (OperatorReassign, AssignmentReply),
    "matcher.volunteers": (VolunteersQuery, VolunteerList),
    "intake.pair": (PairResident, Pairing),
    "intake.unpair": (EndPairing, Pairing),
    "ledger.balance": (BalanceQuery, Balance),
    "ledger.adjust": (AdjustBalance, LedgerEntry),
    "ledger.confirm": (ConfirmService, LedgerEntry),
    "ledger.review": (ReviewQuery, ReviewQueue),
    "ledger.catalog_put": (PutRewardItem, RewardItem),
    "ledger.catalog_list": (RewardCatalogQuery, RewardCatalog),
    "ledger.redeem": (Redeem, Redemption),
    "ledger.statement": (StatementQuery, SignedStatement),
    "ledger.import_statement": (ImportStatement, LedgerEntry),
    "ledger.public_key": (PublicKeyQuery, PublicKey),
    "ledger.trust_put": (TrustDistrict, TrustedKey),
    "ledger.trust_remove": (DistrustDistrict, TrustedKey),
    "ledger.trust_list": (TrustedKeysQuery, TrustedKeys),
    "ledger.report": (MonthReportQuery, MonthReport),
    "identity.login": (SignIn, SignedIn),
    "identity.device_login": (DeviceSignIn, SignedIn),
    "identity.code_request": (CodeRequest, CodeSent),
    "identity.code_verify": (CodeSignIn, SignedIn),
    "identity.code": (CodeQuery, CodeText),
    "identity.public_key": (TokenKeyQuery, TokenKey),
    "identity.operator_put": (PutOperator, Operator),
    "identity.device_put": (PutDevice, DeviceCredential),
    "care.create_plan": (care.CreatePlan, care.CarePlan),
    "care.change_plan": (care.ChangePlan, care.CarePlan),
    "care.end_plan": (care.EndPlan, care.CarePlan),
    "care.plan": (care.PlanQuery, care.CarePlan),
    "care.check_in": (care.CheckIn, care.CheckInReply),
    "care.log_contact": (care.LogContact, care.ContactLogged),
    "care.assign_cover": (care.AssignCover, care.CarePlan),
    "care.safeguard_queue": (care.SafeguardQuery, care.SafeguardQueue),
    "care.report": (care.ReportQuery, care.CareReport),
    "intake.find_volunteer": (FindVolunteer, VolunteerFound),
    "ledger.certificate": (CertificateQuery, CertificateFile),
}
