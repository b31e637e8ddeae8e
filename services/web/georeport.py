"""Open311 GeoReport v2 as Linli reads it: the documents a civic system gets back, and the pure decisions that
turn its requests into contract calls (no I/O here).

How the two fit: a GeoReport service is an item of the service menu (service_code = the item id); the
jurisdiction is the district (jurisdiction_id = district id); GeoReport has no grid, so `address_id` carries
the grid id, and a request without a known one is refused. A resident's name, phone and address go in and
never come back out: a request is shown by its service, state, times and place (community and grid by name)."""

import hashlib
from xml.etree import ElementTree
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from contracts.calls import SubmitRequest
from services.web.texts import Words

CLOSED = ("completed", "rated", "cancelled", "closed")
# GeoReport's default window for a list of requests: the last 90 days, at most 1,000 requests.
DEFAULT_SPAN = timedelta(days=90)
MOST_REQUESTS = 1000
# At most this many ids in one `service_request_id=a,b,c` question.
MOST_IDS = 100


class GeoError(BaseModel):
    code: int = Field(description="The HTTP status code of the answer.", examples=[400])
    description: str = Field(examples=["service_code: not on the service menu"])


class GeoService(BaseModel):
    service_code: str = Field(description="A service menu item's id.", examples=["repair.plumbing"])
    service_name: str = Field(examples=["水电维修"])
    description: str = ""
    metadata: bool = Field(default=False, description="Always false: a service asks for no attributes.")
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str = Field(default="", description="Comma-separated.")
    group: str = Field(default="", description="The menu category's name.", examples=["便民维修"])


class GeoAttributeValue(BaseModel):
    key: str
    name: str


class GeoAttribute(BaseModel):
    variable: bool
    code: str
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool
    datatype_description: str = ""
    order: int
    description: str
    values: list[GeoAttributeValue] = Field(default_factory=list)


class GeoServiceDefinition(BaseModel):
    service_code: str
    attributes: list[GeoAttribute] = Field(default_factory=list)


class GeoRequest(BaseModel):
    service_request_id: str = Field(description="The request's id (its short code is accepted wherever this is).")
    status: Literal["open", "closed"]
    status_notes: str | None = Field(default=None, description="The request's state in plain words.")
    service_name: str | None = None
    service_code: str
    description: str | None = Field(default=None, description="Never given back: it is the resident's own words.")
    agency_responsible: str | None = None
    service_notice: str | None = None
    requested_datetime: datetime
    updated_datetime: datetime | None = None
    expected_datetime: datetime | None = Field(default=None, description="The end of the window asked for.")
    address: str | None = Field(default=None, description="The community and grid by name; never the resident's.")
    address_id: str | None = Field(default=None, description="The grid id.")
    zipcode: str | None = None
    lat: float | None = None
    long: float | None = None
    media_url: str | None = None


class GeoCreated(BaseModel):
    service_request_id: str | None = None
    token: str | None = None
    service_notice: str | None = None
    account_id: str | None = None


class Refused(Exception):
    """An answer of GeoReport errors: HTTP `status` and one {code, description} per fault."""

    def __init__(self, status: int, *descriptions: str) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.errors = [GeoError(code=status, description=d) for d in descriptions]


@dataclass(frozen=True)
class ApiClient:
    """A civic system holding an api_key, and the one district (jurisdiction) it may act in."""

    name: str
    district: str


def parse_keys(text: str) -> dict[str, ApiClient]:
    """`api_key<TAB>client name<TAB>district` lines; blank lines and # comments are skipped."""
    keys: dict[str, ApiClient] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) == 3 and all(parts):
            keys[parts[0]] = ApiClient(parts[1], parts[2])
    return keys


def parse_accounts(text: str) -> list[tuple[str, str]]:
    """`user<TAB>password` lines of the operator accounts the web relays Open311 calls as."""
    found = []
    for line in text.splitlines():
        user, _, password = line.strip("\r\n").partition("\t")
        if user.strip() and not user.lstrip().startswith("#") and password:
            found.append((user.strip(), password))
    return found


def services(catalog: Mapping[str, Any], words: Words) -> list[GeoService]:
    return [
        GeoService(service_code=item["id"], service_name=words.name(item), group=words.name(category),
                   keywords=",".join((category["id"], item["id"])))
        for category in catalog.get("categories", []) for item in category.get("items", [])
    ]


def definition(catalog: Mapping[str, Any], code: str, words: Words) -> GeoServiceDefinition:
    if code not in {s.service_code for s in services(catalog, words)}:
        raise Refused(404, words("open311.unknown_service", code=code))
    return GeoServiceDefinition(service_code=code)


def idempotency_key(client: ApiClient, token: str, form: Mapping[str, str]) -> str:
    """The same client's repeat makes no second request: keyed on the client and its own token (the
    `Idempotency-Key` header) when it gives one, else on every field it sent."""
    said = token.strip() or "\n".join(f"{name}={form[name]}" for name in sorted(form) if name != "api_key")
    return "open311-" + hashlib.sha256(f"{client.name}\n{said}".encode()).hexdigest()[:48]


def submit_call(form: Mapping[str, str], client: ApiClient, grids: Iterable[str], codes: Iterable[str],
                token: str, words: Words) -> SubmitRequest:
    """The intake.submit call a GeoReport POST makes, or Refused(400) naming every fault."""
    faults = []
    if form.get("jurisdiction_id") and form["jurisdiction_id"] != client.district:
        faults.append(words("open311.other_jurisdiction", district=client.district))
    code = form.get("service_code", "")
    if not code:
        faults.append(words("open311.service_code_missing"))
    elif code not in set(codes):
        faults.append(words("open311.unknown_service", code=code))
    grid = form.get("address_id", "")
    if not grid:
        faults.append(words("open311.address_id_missing"))
    elif grid not in set(grids):
        faults.append(words("open311.unknown_address_id", grid=grid, district=client.district))
    if not form.get("phone"):
        faults.append(words("open311.phone_missing"))
    faults += coordinate_faults(form, words)
    if faults:
        raise Refused(400, *faults)
    name = " ".join(part for part in (form.get("first_name", ""), form.get("last_name", "")) if part.strip())
    try:
        return SubmitRequest.model_validate({
            "idempotency_key": idempotency_key(client, token, form), "district": client.district, "grid": grid,
            "service": code, "description": form.get("description", ""), "channel": "app",
            "resident": {"name": name or words("open311.anonymous_name"), "phone": form.get("phone", ""),
                         "address": form.get("address_string", "")},
        })
    except ValidationError as exc:
        raise Refused(400, *(invalid_field(problem, words) for problem in exc.errors())) from None


FORM_NAMES = {"resident.name": "first_name", "resident.phone": "phone", "resident.address": "address_string"}


def invalid_field(problem: Mapping[str, Any], words: Words) -> str:
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return words("open311.invalid_field", field=FORM_NAMES.get(where, where))


def coordinate_faults(form: Mapping[str, str], words: Words) -> list[str]:
    """lat and long are optional (the grid places the request) but, when given, are numbers on the globe."""
    faults = []
    for name, limit in (("lat", 90.0), ("long", 180.0)):
        if form.get(name):
            try:
                value = float(form[name])
            except ValueError:
                value = float("nan")
            if not -limit <= value <= limit:
                faults.append(words("open311.invalid_field", field=name))
    return faults


def geo_status(state: str) -> Literal["open", "closed"]:
    return "closed" if state in CLOSED else "open"


def from_status(status: Mapping[str, Any], service_names: Mapping[str, str], place: str, words: Words) -> GeoRequest:
    """A request as intake.status gives it (RequestStatus), in GeoReport's words."""
    history = status.get("history") or []
    return GeoRequest(
        service_request_id=status["request_id"], status=geo_status(status["status"]),
        status_notes=words(f"open311.state_{status['status']}"), service_code=status["service"],
        service_name=service_names.get(status["service"]), requested_datetime=status["created_at"],
        updated_datetime=history[-1]["at"] if history else status["created_at"],
        expected_datetime=status.get("window_end"), address=place or None, address_id=status["grid"],
    )


def from_summary(summary: Mapping[str, Any], service_names: Mapping[str, str], words: Words) -> GeoRequest:
    """A request as intake.requests lists it (RequestSummary): the list says when it was made, not when it
    last changed, so updated_datetime is left out; ask for the one request to have it."""
    return GeoRequest(
        service_request_id=summary["request_id"], status=geo_status(summary["status"]),
        status_notes=words(f"open311.state_{summary['status']}"), service_code=summary["service"],
        service_name=service_names.get(summary["service"]) or summary.get("service_name") or None,
        requested_datetime=summary["created_at"], expected_datetime=summary.get("window_end"),
        address=summary.get("place") or None, address_id=summary["grid"],
    )


@dataclass(frozen=True)
class ListQuestion:
    """GET requests.json's arguments, checked: ids (which override the rest), or a window and filters."""

    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def wants(self, request: GeoRequest) -> bool:
        return ((not self.service_codes or request.service_code in self.service_codes)
                and (not self.statuses or request.status in self.statuses))


def list_question(query: Mapping[str, str], now: datetime, words: Words) -> ListQuestion:
    """The list GET requests.json asks for, or Refused(400)."""
    def split(name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in query.get(name, "").split(",") if part.strip())

    ids = split("service_request_id")
    if len(ids) > MOST_IDS:
        raise Refused(400, words("open311.too_many_ids", n=MOST_IDS))
    statuses = split("status")
    faults = [words("open311.invalid_field", field="status") for s in statuses if s not in ("open", "closed")][:1]
    dates: dict[str, datetime | None] = {}
    for name in ("start_date", "end_date"):
        dates[name] = None
        if query.get(name):
            try:
                dates[name] = datetime.fromisoformat(query[name].replace("Z", "+00:00"))
            except ValueError:
                faults.append(words("open311.invalid_date", field=name))
                continue
            if dates[name].tzinfo is None:  # type: ignore[union-attr]
                faults.append(words("open311.invalid_date", field=name))
    if faults:
        raise Refused(400, *faults)
    until, since = dates["end_date"], dates["start_date"]
    if until is None:
        until = now if since is None else since + DEFAULT_SPAN
    if since is None:
        since = until - DEFAULT_SPAN
    if until < since or until - since > DEFAULT_SPAN:
        raise Refused(400, words("open311.span_too_long", days=DEFAULT_SPAN.days))
    return ListQuestion(ids, split("service_code"), statuses, since, until)


# XML, GeoReport's first format: the same documents, each list under its root, each item under its own name.
ROOTS = {"service": "services", "request": "service_requests", "error": "errors"}
ITEM_OF_LIST = {"attributes": "attribute", "values": "value"}


def to_xml(root: str, item: str | None, documents: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    """`<root><item>...</item>...</root>` for a list (item given), `<root>...</root>` for one document; a
    null is an empty element, a boolean true or false."""
    top = ElementTree.Element(root)
    for document in (documents if isinstance(documents, list) else [documents]):
        fill(ElementTree.SubElement(top, item) if item else top, document)
    return bytes(ElementTree.tostring(top, encoding="UTF-8", xml_declaration=True))


def fill(parent: ElementTree.Element, document: Mapping[str, Any]) -> None:
    for name, value in document.items():
        child = ElementTree.SubElement(parent, name)
        if isinstance(value, list):
            for entry in value:
                fill(ElementTree.SubElement(child, ITEM_OF_LIST.get(name, "item")), entry)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        elif value is not None:
            child.text = str(value)
