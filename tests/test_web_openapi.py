"""Open311 GeoReport v2 and the OpenAPI document of the HTTP side, against the whole system as `linli up` runs
it: a civic system lists the services, makes a request once however often it sends it, follows it from open to
closed, and is refused (403, 400, 404) with GeoReport's error array; schemathesis then checks every documented
operation for server errors and answers that do not match the document."""

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import API
from tests.browser import WebSystem, start_web_system

pytestmark = pytest.mark.system

KEY, ELSEWHERE = "k-12345-beibei-7f3a", "k-nanan-19c2"
V2 = "/open311/v2"
FORM = {"service_code": "repair.plumbing", "address_id": "quanwai-03", "phone": "13900001111",
        "first_name": "秀英", "address_string": "泉外园3栋401", "description": "厨房水管漏水"}
# No server error, and every answer's status, content type, headers and body as the document says. (Whether
# schema-valid input is accepted is not asked: a service code or grid the menu does not know is well-formed and
# still a 400.)
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]
# Few examples per operation: enough to reach each branch the document describes, on two shared cores.
EXAMPLES = 25


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSystem]:
    folder = tmp_path_factory.mktemp("open311")
    keys, accounts = folder / "open311-keys.tsv", folder / "open311-accounts.tsv"
    keys.write_text(f"# api_key\tclient\tdistrict\n{KEY}\t12345 hotline\tbeibei\n{ELSEWHERE}\tnanan 12345\tnanan\n")
    running = start_web_system(folder, env={"LINLI_OPEN311_KEYS": str(keys), "LINLI_OPEN311_ACCOUNTS": str(accounts)})
    web = next(running)
    try:
        password = "open311-relay-password"
        web.call(API.IDENTITY_OPERATOR_PUT, {"user": "open311-beibei", "role": "dispatcher", "district": "beibei",
                                             "password": password}, web.token("admin"))
        accounts.write_text(f"open311-beibei\t{password}\n")
        yield web
    finally:
        next(running, None)


@pytest.fixture(scope="module")
def http(web: WebSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, timeout=30) as client:
        yield client


def district_requests(web: WebSystem) -> list[dict[str, Any]]:
    reply = web.call(API.INTAKE_REQUESTS, {"district": "beibei", "limit": 500}, web.token("dispatcher"))
    return list(reply["items"])


def errors_of(response: httpx.Response, status: int) -> list[str]:
    """The descriptions of a GeoReport error answer, after checking its status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, list) and body and all(set(e) == {"code", "description"} for e in body)
    assert {e["code"] for e in body} == {status}
    return [str(e["description"]) for e in body]


def test_the_services_are_the_menu_and_each_has_its_definition(http: httpx.Client) -> None:
    services = http.get(f"{V2}/services.json", params={"lang": "en"}).json()
    plumbing = next(s for s in services if s["service_code"] == "repair.plumbing")
    assert plumbing["service_name"] == "Plumbing and wiring" and plumbing["type"] == "realtime"
    assert plumbing["metadata"] is False
    assert http.get(f"{V2}/services/repair.plumbing.json").json() == {"service_code": "repair.plumbing",
                                                                     "attributes": []}
    assert errors_of(http.get(f"{V2}/services/pothole.json"), 404)


def test_a_post_with_a_key_makes_one_request_and_its_repeat_makes_none(web: WebSystem, http: httpx.Client) -> None:
    before = len(district_requests(web))
    first = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY})
    again = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY})
    assert first.status_code == again.status_code == 200, first.text
    made = first.json()[0]["service_request_id"]
    assert again.json()[0]["service_request_id"] == made
    assert len(district_requests(web)) == before + 1

    status = web.call(API.INTAKE_STATUS, {"request_id": made})
    assert (status["district"], status["grid"], status["service"]) == ("beibei", "quanwai-03", "repair.plumbing")


def test_the_clients_own_token_keys_a_submission_and_a_different_one_under_it_is_refused(
    web: WebSystem, http: httpx.Client
) -> None:
    header = {"Idempotency-Key": "ticket-2026-0042"}
    one = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY, "description": "门锁坏了"}, headers=header)
    two = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY, "description": "门锁坏了"}, headers=header)
    assert one.json()[0]["service_request_id"] == two.json()[0]["service_request_id"]
    before = len(district_requests(web))
    other = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY, "description": "别的事"}, headers=header)
    assert errors_of(other, 400)[0].startswith("Idempotency-Key")
    assert len(district_requests(web)) == before


def test_a_request_shows_open_then_closed_once_cancelled_and_never_the_resident(
    web: WebSystem, http: httpx.Client
) -> None:
    made = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY, "description": "请来换灯泡"}).json()
    request_id = made[0]["service_request_id"]
    shown = http.get(f"{V2}/requests/{request_id}.json", params={"api_key": KEY}).json()
    assert len(shown) == 1 and shown[0]["status"] == "open" and shown[0]["address_id"] == "quanwai-03"
    assert shown[0]["requested_datetime"] and shown[0]["service_code"] == "repair.plumbing"
    text = str(shown)
    assert "13900001111" not in text and "秀英" not in text and "泉外园" not in text

    web.call(API.INTAKE_CANCEL, {"request_id": request_id, "reason": "resident fixed it"}, web.token("dispatcher"))
    closed = http.get(f"{V2}/requests/{request_id}.json", params={"api_key": KEY, "lang": "en"}).json()[0]
    assert closed["status"] == "closed" and closed["status_notes"] == "Cancelled"
    assert closed["updated_datetime"] > closed["requested_datetime"]
    listed = http.get(f"{V2}/requests.json", params={"api_key": KEY, "status": "closed"}).json()
    assert request_id in {r["service_request_id"] for r in listed}
    still_open = http.get(f"{V2}/requests.json", params={"api_key": KEY, "status": "open"}).json()
    assert request_id not in {r["service_request_id"] for r in still_open}


def test_without_a_known_key_nothing_is_made_or_shown(web: WebSystem, http: httpx.Client) -> None:
    before = len(district_requests(web))
    assert errors_of(http.post(f"{V2}/requests.json", data=FORM), 403)
    assert errors_of(http.post(f"{V2}/requests.json", data={**FORM, "api_key": "guess"}), 403)
    assert errors_of(http.get(f"{V2}/requests.json"), 403)
    assert errors_of(http.get(f"{V2}/requests/anything.json", params={"api_key": "guess"}), 403)
    assert len(district_requests(web)) == before


def test_a_bad_service_code_or_an_unknown_grid_is_a_400_naming_each_fault(web: WebSystem, http: httpx.Client) -> None:
    before = len(district_requests(web))
    bad = {**FORM, "api_key": KEY, "service_code": "pothole", "address_id": "mars-01"}
    faults = errors_of(http.post(f"{V2}/requests.json", params={"lang": "en"}, data=bad), 400)
    assert [f.split(":")[0] for f in faults] == ["service_code", "address_id"]
    assert errors_of(http.get(f"{V2}/requests.json", params={"api_key": KEY, "start_date": "yesterday"}), 400)
    elsewhere = errors_of(http.post(f"{V2}/requests.json", data={**FORM, "api_key": ELSEWHERE}), 400)
    assert elsewhere[0].startswith("address_id")  # quanwai-03 is a grid of beibei, not of the key's nanan
    assert len(district_requests(web)) == before


def test_an_unknown_id_or_another_districts_request_is_a_404(http: httpx.Client) -> None:
    assert errors_of(http.get(f"{V2}/requests/no-such-request.json", params={"api_key": KEY}), 404)
    made = http.post(f"{V2}/requests.json", data={**FORM, "api_key": KEY, "description": "修水龙头"}).json()
    request_id = made[0]["service_request_id"]
    assert errors_of(http.get(f"{V2}/requests/{request_id}.json", params={"api_key": ELSEWHERE}), 404)
    assert http.get(f"{V2}/requests.json", params={"api_key": ELSEWHERE, "service_request_id": request_id}).json() == []


def test_the_same_answers_come_as_xml_with_the_errors_in_xml_too(http: httpx.Client) -> None:
    services = http.get(f"{V2}/services.xml")
    assert services.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(services.content)
    assert root.tag == "services" and "repair.plumbing" in [s.findtext("service_code") for s in root]
    made = http.post(f"{V2}/requests.xml", data={**FORM, "api_key": KEY, "description": "XML 的请求"})
    request_id = ElementTree.fromstring(made.content).findtext("request/service_request_id")
    shown = ElementTree.fromstring(http.get(f"{V2}/requests/{request_id}.xml", params={"api_key": KEY}).content)
    assert shown.tag == "service_requests" and shown.findtext("request/status") == "open"
    refused = http.get(f"{V2}/requests.xml")
    assert refused.status_code == 403
    assert ElementTree.fromstring(refused.content).findtext("error/code") == "403"


def test_the_openapi_document_lists_the_open311_operations_and_no_page(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert set(paths) == {f"{V2}/{path}.{ext}" for ext in ("json", "xml") for path in (
        "services", "services/{service_code}", "requests", "requests/{service_request_id}")}


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(web: WebSystem) -> None:
    schema = schemathesis.openapi.from_url(f"{web.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    for operation in operations:
        # Half the cases carry the real key, so the checks reach past the 403 to the answers behind it.
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), keyed=st.booleans())
        def run(case: Any, keyed: bool) -> None:
            if keyed and isinstance(case.body, dict):
                case.body["api_key"] = KEY
            elif keyed and case.method == "GET" and "requests" in case.path:
                case.query = {**(case.query or {}), "api_key": KEY}
            case.call_and_validate(base_url=web.url, checks=CHECKS)

        run()
