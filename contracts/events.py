from datetime import date, datetime
from typing import Any
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Urgency = Literal["routine", "soon", "urgent"]
Channel = Literal["kiosk", "hotline", "app", "operator"]
Hours = Annotated[
    Decimal,
    Field(gt=0, le=24, decimal_places=2, description="Service hours, exact to 0.01 h.", examples=["1.5"]),
]
Points = Annotated[Decimal, Field(decimal_places=2, description="Volunteer points, exact to 0.01.", examples=["15"])]


class Event(BaseModel):
    # Consumers ignore fields they do not know; producers only ever add fields.
    model_config = ConfigDict(extra="ignore")


class RequestCreated(Event):
    request_id: str = Field(description="Id of the request.", examples=["r-3f2a..."])
    district: str = Field(examples=["beibei"])
    grid: str = Field(description="The resident's grid (网格).", examples=["quanwai-01"])
    service: str = Field(description="Catalogue item id.", examples=["repair.plumbing"])
    category: str = Field(description="Catalogue category id of the item.", examples=["repair"])
    urgency: Urgency = Field(examples=["routine"])
    description: str = Field(default="", description="What the resident needs, without contact data.")
    window_start: datetime | None = Field(default=None, description="Earliest time the service is wanted.")
    window_end: datetime | None = Field(default=None, description="Latest time the service is wanted.")
    channel: Channel = Field(default="kiosk", description="Where the request was placed.")
    resident_ref: str = Field(
        default="",
        description="A pseudonym of the resident (the same person gives the same value), never a name or phone.",
    )
    needs: list[str] = Field(
        default_factory=list,
        description="Hard constraints a volunteer must meet: sign-language, dialect:<name>, woman, wheelchair.",
        examples=[["sign-language"]],
    )
    code: str = Field(default="", description="The request's short code, said aloud and typed where its id is.",
                      examples=["K7QX3M"])


class RequestCancelled(Event):
    request_id: str
    reason: str = Field(default="", examples=["resident no longer needs it"])


class RequestRated(Event):
    request_id: str
    volunteer_id: str
    stars: int = Field(ge=1, le=5, examples=[5])
    comment: str = Field(default="", examples=["师傅很细心"])
    done: bool = Field(default=True, description="False when the resident says the service was not done.")


class RequestReopened(Event):
    request_id: str
    volunteer_id: str
    stars: int = Field(ge=1, le=5, examples=[2])
    reason: str = Field(
        description="Why the request needs an operator's review.", examples=["rated 2 stars: 没修好"]
    )


Weekday = Annotated[int, Field(ge=0, le=6)]


class WeeklyWindow(Event):
    days: list[Weekday] = Field(
        max_length=7, description="Days of the week, 0 = Monday, each once.", examples=[[0, 1, 2, 3, 4]]
    )
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="Local time (Asia/Shanghai).")
    end: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$", examples=["18:00"])

    @field_validator("days")
    @classmethod
    def each_day_once(cls, days: list[int]) -> list[int]:
        if len(set(days)) != len(days):
            raise ValueError("each day of the week at most once")
        return days


class AwayPeriod(Event):
    start: date = Field(description="First day away.")
    end: date = Field(description="Last day away.")


class VolunteerRegistered(Event):
    volunteer_id: str = Field(examples=["v-8c1d..."])
    district: str = Field(examples=["beibei"])
    grids: list[str] = Field(min_length=1, description="Grids where the volunteer lives or works.")
    skills: list[str] = Field(min_length=1, description="Catalogue category or item ids.", examples=[["repair"]])
    capacity: int = Field(ge=1, le=20, description="Open assignments the volunteer takes at once.", examples=[1])
    team: str = Field(default="", description="The volunteer team (志愿服务队) the volunteer belongs to.")
    attributes: list[str] = Field(
        default_factory=list, description="What the volunteer offers beyond skills, matched against needs.",
        examples=[["sign-language", "woman"]],
    )
    availability: list["WeeklyWindow"] = Field(
        default_factory=list, description="When the volunteer can serve each week; empty means any time."
    )
    away: list["AwayPeriod"] = Field(default_factory=list, description="Exceptions, such as away this week.")


class VolunteerAssigned(Event):
    request_id: str
    volunteer_id: str
    assignment_id: str
    expires_at: datetime = Field(description="The offer lapses at this time unless accepted.")
    service: str = Field(default="", examples=["repair.plumbing"])
    category: str = Field(default="", examples=["repair"])
    grid: str = Field(default="", examples=["quanwai-01"])
    urgency: Urgency = "routine"
    stage: str = Field(default="", description="Dispatch stage: pairing, nearby, wider, fan-out or operator.")
    explanation: dict[str, Any] = Field(
        default_factory=dict, description="Why this volunteer: the score and each rule's part in it."
    )
    code: str = Field(default="", description="The assignment's short code, said aloud and typed where its id is.")
    request_code: str = Field(default="", description="The request's short code.")
    district: str = Field(default="", examples=["beibei"])
    description: str = Field(default="", description="What the resident needs, without contact data.")
    window_start: datetime | None = Field(default=None, description="Earliest time the service is wanted.")
    window_end: datetime | None = Field(default=None, description="Latest time the service is wanted.")
    place: str = Field(
        default="", description="How near the volunteer lives: grid, neighbour, community, street or district.",
        examples=["neighbour"],
    )


class AssignmentEvent(Event):
    request_id: str
    volunteer_id: str
    assignment_id: str
    code: str = Field(default="", description="The assignment's short code.")
    request_code: str = Field(default="", description="The request's short code.")


class AssignmentAccepted(AssignmentEvent):
    service: str = Field(default="", examples=["repair.plumbing"])
    window_start: datetime | None = Field(default=None, description="Earliest time the service is wanted.")
    window_end: datetime | None = Field(default=None, description="Latest time the service is wanted.")


class AssignmentDeclined(AssignmentEvent):
    reason: str = Field(default="", examples=["not at home this week"])


class AssignmentExpired(AssignmentEvent):
    pass


class AssignmentWithdrawn(AssignmentEvent):
    reason: str = Field(examples=["another volunteer accepted first"])
    by: str = Field(
        default="matcher",
        description="matcher, the operator who withdrew it, resident (cancelled) or volunteer (the volunteer left).",
    )


class AssignmentCompleted(AssignmentEvent):
    hours: Hours
    note: str = ""


class FellOut(Event):
    volunteer_id: str
    why: str = Field(examples=["declined: 在上班", "did not answer in time", "at full capacity"])


UnmatchedReason = Literal["", "no_volunteers", "no_skill", "none_eligible", "all_fell_out", "fatigue"]


class RequestUnmatched(Event):
    request_id: str
    reason: str = Field(examples=["no volunteer with this skill is free in the district"])
    reason_code: UnmatchedReason = Field(
        default="",
        description="The reason as a code a notification template is chosen by: no_volunteers (none registered in "
        "the district), no_skill (none with this skill), none_eligible (the hard rules left nobody), all_fell_out "
        "(everyone offered declined or did not answer), fatigue (everyone left had reached a weekly limit).",
    )
    request_code: str = Field(default="", description="The request's short code.")
    tried: list[str] = Field(default_factory=list, description="Volunteer ids that were offered and fell out.")
    candidates: list[FellOut] = Field(
        default_factory=list, description="Each volunteer considered and why they fell out."
    )
    not_considered: dict[str, int] = Field(
        default_factory=dict, description="How many volunteers each hard rule left out.",
        examples=[{"skill": 12, "needs": 3}],
    )


class RequestRedispatched(Event):
    request_id: str
    operator: str = Field(description="Who sent the request out again.")
    reason: str = Field(description="Why; kept with the request.")
    excluded: list[str] = Field(
        default_factory=list, description="Volunteers left out this time (the one it was reopened against)."
    )
    volunteer_id: str | None = Field(default=None, description="The volunteer an operator named, if any.")


class RequestClosed(Event):
    request_id: str
    operator: str = Field(description="Who closed the reopened request.")
    reason: str = Field(description="Why it needs nothing more.")


class VolunteerLeft(Event):
    volunteer_id: str
    district: str
    reason: str = Field(default="", max_length=500)


class HoursLogged(Event):
    volunteer_id: str
    request_id: str
    assignment_id: str = ""
    hours: Hours
    category: str = Field(examples=["repair"])
    service: str = Field(default="", examples=["repair.plumbing"])
    grid: str = Field(default="", description="The grid where the service was done.")
    urgency: Urgency = "routine"
    resident_ref: str = Field(default="", description="Pseudonym of the resident served.")
    completed_at: datetime | None = Field(default=None, description="When the volunteer reported it done.")


class PointsEarned(Event):
    volunteer_id: str
    request_id: str
    hours: Hours
    points: Points
    balance_points: Points = Field(description="The volunteer's point balance after this credit.")
    rate: Decimal = Field(description="Points per hour applied.", examples=["10"])
    bonus_points: Points = Field(
        default=Decimal("0"), description="Bonus points credited with these hours (urgent, night, holiday)."
    )
    rule_version: str = Field(default="", description="Version of the points rules that priced it.")


class PointsRedeemed(Event):
    redemption_id: str
    volunteer_id: str
    item_id: str = Field(examples=["goods.rice-5kg"])
    item_name: str = Field(default="", examples=["大米 5kg"])
    quantity: int = Field(ge=1)
    points: Points = Field(description="Points spent.")
    balance_points: Points = Field(description="The volunteer's point balance after this spend.")


class PairingCreated(Event):
    pairing_id: str
    district: str
    resident_ref: str = Field(description="Pseudonym of the resident; no name or phone.")
    volunteer_id: str
    kind: str = Field(description="caring-parent (爱心家长), care-group (三人关爱小组) or other.", examples=["caring-parent"])


class PairingEnded(Event):
    pairing_id: str
    resident_ref: str
    volunteer_id: str
    reason: str = ""


class NotificationOutcome(Event):
    notification_id: str
    channel: str = Field(examples=["webhook"])
    recipient: str = Field(description="volunteer:<id>, resident:<request id> or operators.")
    kind: str = Field(description="What the notification was about.", examples=["offer"])
    attempts: int = Field(ge=1)


class NotificationDelivered(NotificationOutcome):
    pass


class NotificationFailed(NotificationOutcome):
    error: str = ""


class LedgerCheckpoint(Event):
    """The ledger's signed word on every volunteer's chain head at one moment. Whoever keeps it can later show
    that a chain rewritten and rehashed in the database after this moment is not the chain that was signed."""

    checkpoint_id: str = Field(description="Derived from the root: the same heads give the same id.",
                               examples=["cp-4f1a..."])
    district: str = Field(description="The district the ledger issues for, or 'all' when it serves several.",
                          examples=["beibei"])
    at: datetime = Field(description="When the heads were read.")
    volunteers: int = Field(ge=0, description="How many chains the checkpoint covers.")
    entries: int = Field(ge=0, description="How many entries those chains held (the sum of their heads' seq).")
    root: str = Field(pattern=r"^[0-9a-f]{64}$",
                      description="SHA-256 over the sorted (volunteer id, seq, hash) of every chain head.")
    signature: str = Field(description="Ed25519 signature (base64) over district, at, volunteers, entries and root.")
    key_id: str = Field(description="Id of the ledger's public key (linli.api.ledger.public_key).")


class CodeRequested(Event):
    """A volunteer asked to sign in: the notifier fetches the one-time code (linli.api.identity.code, by
    code_ref) and sends it to the volunteer's phone. The event never carries the code."""

    volunteer_id: str
    district: str
    code_ref: str = Field(description="Names the code for the notifier; useless without the notifier's credential.")
    expires_at: datetime
