"""The public feed: what a district system outside the trust reads on linli.pub.<entity>.<verb>.<district>.

Every event here is made from an internal one with each name, phone, address and free-text field left out,
and every id and pseudonym replaced by a public reference the feed computes with its own secret: the same
request, volunteer or resident always has the same public reference, and none can be turned back into an
internal id, a pseudonym or a phone number without that secret.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import Channel, Hours, Points, Urgency

P = TypeVar("P", bound=BaseModel)

PUBLIC_STREAM = "LINLI_PUBLIC"
PUBLIC_STREAM_SUBJECTS = ["linli.pub.>"]
PUBLIC_SCHEMA_VERSION = 1

OptionalRef = Annotated[str, Field(pattern=r"^([a-z]{2}-[0-9a-f]{26})?$",
                                   description="A public reference, or empty when the internal event had none.")]
PublicRef = Annotated[str, Field(pattern=r"^[a-z]{2}-[0-9a-f]{26}$", description="A public reference (no internal id).",
                                 examples=["rq-5b0c9e7f1d2a4c3b8e6f0a1d2c"])]


class PublicData(BaseModel):
    # Consumers ignore fields they do not know; the feed only ever adds fields.
    model_config = ConfigDict(extra="ignore")


class PublicRequestCreated(PublicData):
    request: PublicRef
    resident: OptionalRef = Field(default="", description="The same resident gives the same value.")
    grid: str = Field(examples=["quanwai-01"])
    service: str = Field(description="Catalogue item id.", examples=["repair.plumbing"])
    category: str = Field(examples=["repair"])
    urgency: Urgency = "routine"
    channel: Channel = "kiosk"
    window_start: datetime | None = None
    window_end: datetime | None = None


class PublicRequestAssigned(PublicData):
    request: PublicRef
    volunteer: PublicRef
    service: str = Field(default="", examples=["repair.plumbing"])


class PublicRequestCompleted(PublicData):
    request: PublicRef
    volunteer: PublicRef
    hours: Hours


class PublicRequestRated(PublicData):
    request: PublicRef
    volunteer: PublicRef
    stars: int = Field(ge=1, le=5)
    done: bool = True


class PublicHoursLogged(PublicData):
    request: PublicRef
    volunteer: PublicRef
    resident: OptionalRef = Field(default="", description="Public reference of the resident served.")
    hours: Hours
    category: str = Field(examples=["repair"])
    service: str = ""
    grid: str = ""
    urgency: Urgency = "routine"
    completed_at: datetime | None = None


class PublicPointsRedeemed(PublicData):
    redemption: PublicRef
    volunteer: PublicRef
    item_id: str = Field(examples=["goods.rice-5kg"])
    quantity: int = Field(ge=1)
    points: Points = Field(description="Points spent.", examples=[Decimal("30")])


# The public event types, each with the internal event it is made from.
PUBLIC_TYPES: dict[str, tuple[str, type[PublicData]]] = {
    "request.created": ("request.created", PublicRequestCreated),
    "request.assigned": ("assignment.accepted", PublicRequestAssigned),
    "request.completed": ("assignment.completed", PublicRequestCompleted),
    "request.rated": ("request.rated", PublicRequestRated),
    "hours.logged": ("hours.logged", PublicHoursLogged),
    "points.redeemed": ("points.redeemed", PublicPointsRedeemed),
}


def public_dataschema(public_type: str, version: int = PUBLIC_SCHEMA_VERSION) -> str:
    return f"urn:linli:public:{public_type}:{version}"


class PublicEnvelope(BaseModel, Generic[P]):
    """A CloudEvents 1.0 event in structured JSON mode, with nothing an outsider could trace back."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique public event id; also the Nats-Msg-Id header.", pattern=r"^ev-[0-9a-f]{26}$")
    source: Literal["linli/feed"] = "linli/feed"
    type: str = Field(description="linli.pub.<entity>.<verb>", examples=["linli.pub.request.created"])
    time: datetime = Field(description="When the fact happened (UTC).")
    subject: str = Field(description="The public reference of the request or redemption.")
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(examples=["urn:linli:public:request.created:1"])
    district: str = Field(examples=["beibei"])
    data: P
