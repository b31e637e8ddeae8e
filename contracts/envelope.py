import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

D = TypeVar("D", bound=BaseModel)

SCHEMA_VERSION = 1
ID_NAMESPACE = uuid.UUID("6f1c3a52-58a4-4b7e-9d55-0c6d1f3b9a10")


def derived_id(*parts: str) -> str:
    """An id computed from what caused it, so a retried step produces the same id again."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


def dataschema_for(event_type: str, version: int = SCHEMA_VERSION) -> str:
    return f"urn:linli:schema:{event_type}:{version}"


class Envelope(BaseModel, Generic[D]):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique event id; also the Nats-Msg-Id header.", examples=["0b6f1c1e-..."])
    source: str = Field(description="The producing service.", examples=["linli/intake"])
    type: str = Field(description="linli.<entity>.<verb>", examples=["linli.request.created"])
    time: datetime = Field(description="When the fact happened (UTC).")
    subject: str = Field(description="The request or volunteer id the event is about.")
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(
        description="Schema id with its major version; a consumer checks the version it understands.",
        examples=["urn:linli:schema:request.created:1"],
    )
    district: str = Field(description="District the event belongs to.", examples=["beibei"])
    correlationid: str = Field(description="The request this event belongs to (or the volunteer, for sign-ups).")
    causationid: str | None = Field(default=None, description="Id of the event or call that caused this one.")
    data: D

    @field_validator("dataschema")
    @classmethod
    def understood_version(cls, value: str) -> str:
        version = value.rsplit(":", 1)[-1]
        if not version.isdigit() or int(version) > SCHEMA_VERSION:
            raise ValueError(f"schema version {version} is newer than the {SCHEMA_VERSION} this consumer understands")
        return value

    @property
    def schema_version(self) -> int:
        return int(self.dataschema.rsplit(":", 1)[1])

    @property
    def short_type(self) -> str:
        return self.type.removeprefix("linli.")


def new_event(
    data: BaseModel,
    *,
    source: str,
    district: str,
    subject: str,
    correlationid: str,
    causationid: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> Envelope[Any]:
    from contracts.subjects import type_of

    short = type_of(type(data))
    return Envelope[Any](
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=f"linli.{short}",
        time=time or datetime.now(UTC),
        subject=subject,
        dataschema=dataschema_for(short),
        district=district,
        correlationid=correlationid,
        causationid=causationid,
        data=data,
    )
