"""The calls a volunteer's own pages need: signing in by phone (no id to remember), and the service
certificate as a PDF, for the volunteer themself or an operator of their district, with the name intake has."""

import base64
import uuid
from decimal import Decimal
from typing import Any

import pypdfium2
import pytest

from contracts import API
from tests.test_authorization import Linli, code_of, linli  # noqa: F401  (the fixture)

pytestmark = pytest.mark.service


def pdf_text(pdf: bytes) -> str:
    document = pypdfium2.PdfDocument(pdf)
    try:
        return "".join(page.get_textpage().get_text_range() for page in document)
    finally:
        document.close()


async def credited(linli: Linli, volunteer_id: str, hours: str) -> None:
    clerk = await linli.operator(f"clerk-{uuid.uuid4().hex[:6]}", "bank_clerk", "beibei")
    entry = await linli.call(API.LEDGER_ADJUST, {
        "volunteer_id": volunteer_id, "hours": hours, "reason": "service before the system", "operator": "clerk",
        "idempotency_key": f"adj-{uuid.uuid4()}"}, clerk)
    assert "error" not in entry, entry


async def test_a_volunteer_signs_in_by_phone_and_district_without_knowing_their_id(linli: Linli) -> None:
    volunteer = await linli.register("13900000031")
    await linli.bus.wait_for("volunteer.registered", volunteer_id=volunteer)
    sent = await linli.call(API.IDENTITY_CODE_REQUEST, {"phone": "13900000031", "district": "beibei"})
    assert set(sent) == {"code_ref", "expires_at"}  # the reply does not say whose phone it is
    code = await linli.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]})
    assert code["volunteer_id"] == volunteer
    signed = await linli.call(API.IDENTITY_CODE_VERIFY, {"code_ref": sent["code_ref"], "code": code["code"]})
    assert (signed["sub"], signed["role"], signed["district"]) == (volunteer, "volunteer", "beibei")


async def test_an_unknown_phone_is_refused_as_an_unknown_id_is_and_tells_nothing_more(linli: Linli) -> None:
    await linli.register("13900000032")
    unknown = await linli.call(API.IDENTITY_CODE_REQUEST, {"phone": "13900000099", "district": "beibei"})
    elsewhere = await linli.call(API.IDENTITY_CODE_REQUEST, {"phone": "13900000032", "district": "tieling"})
    nowhere = await linli.call(API.IDENTITY_CODE_REQUEST, {"phone": "13900000032", "district": "no-such-place"})
    assert unknown == elsewhere == nowhere
    assert code_of(unknown) == "not_found" and not unknown["error"].get("details")
    assert code_of(await linli.call(API.IDENTITY_CODE_REQUEST, {"phone": "13900000032"})) == "invalid_request"
    both = {"volunteer_id": "v-1", "phone": "13900000032", "district": "beibei"}
    assert code_of(await linli.call(API.IDENTITY_CODE_REQUEST, both)) == "invalid_request"


async def test_a_code_asked_for_by_id_still_needs_that_id(linli: Linli) -> None:
    volunteer, other = await linli.register("13900000033"), await linli.register("13900000034")
    sent = await linli.call(API.IDENTITY_CODE_REQUEST, {"volunteer_id": volunteer})
    code = await linli.call(API.IDENTITY_CODE, {"code_ref": sent["code_ref"]})
    wrong = {"volunteer_id": other, "code_ref": sent["code_ref"], "code": code["code"]}
    assert code_of(await linli.call(API.IDENTITY_CODE_VERIFY, wrong)) == "unauthenticated"


async def test_the_volunteer_downloads_their_certificate_with_the_name_intake_has(linli: Linli) -> None:
    volunteer = await linli.register("13900000035")
    await credited(linli, volunteer, "3.5")
    token = await linli.volunteer(volunteer)
    reply = await linli.call(API.LEDGER_CERTIFICATE, {"volunteer_id": volunteer}, token)
    assert "error" not in reply, reply
    pdf = base64.b64decode(reply["pdf_base64"])
    assert pdf.startswith(b"%PDF") and len(pdf) == reply["bytes"] < 700_000  # fits a NATS reply, base64 and all
    assert reply["file_name"] == f"certificate-{volunteer}.pdf"
    assert reply["name"] == "志愿者0035" and "志愿者0035" in pdf_text(pdf)
    assert Decimal(reply["hours"]) == Decimal("3.5")


async def test_another_volunteer_may_not_have_someones_certificate(linli: Linli) -> None:
    volunteer, other = await linli.register("13900000036"), await linli.register("13900000037")
    await credited(linli, volunteer, "1")
    reply: dict[str, Any] = await linli.call(API.LEDGER_CERTIFICATE, {"volunteer_id": volunteer},
                                             await linli.volunteer(other))
    assert code_of(reply) == "forbidden"


async def test_a_certificate_of_a_volunteer_nobody_knows_is_not_found(linli: Linli) -> None:
    clerk = await linli.operator("clerk-cert", "bank_clerk", "beibei")
    assert code_of(await linli.call(API.LEDGER_CERTIFICATE, {"volunteer_id": "v-nobody"}, clerk)) == "not_found"
    volunteer = await linli.register("13900000038")  # known, but no hours yet
    assert code_of(await linli.call(API.LEDGER_CERTIFICATE, {"volunteer_id": volunteer}, clerk)) == "nothing_to_certify"


async def test_an_issuer_the_certificate_cannot_print_is_refused_before_anything_is_drawn(linli: Linli) -> None:
    volunteer = await linli.register("13900000039")
    await credited(linli, volunteer, "2")
    token = await linli.volunteer(volunteer)
    reply = await linli.call(API.LEDGER_CERTIFICATE, {"volunteer_id": volunteer, "issuer": "站\u001b\U0001f600"}, token)
    assert code_of(reply) == "invalid_request" and reply["error"]["details"]["errors"][0]["loc"] == ["issuer"]


async def test_a_declined_offer_leaves_the_open_list_for_the_past_one(linli: Linli) -> None:
    volunteer = await linli.register("13900000040")
    dispatcher = await linli.operator("disp-past", "dispatcher", "beibei")
    request = await linli.call(API.INTAKE_SUBMIT, {
        "idempotency_key": f"k-{uuid.uuid4()}", "district": "beibei", "grid": "g1", "service": "repair.plumbing",
        "channel": "hotline", "resident": {"name": "李淑君", "phone": "13800000002"}}, dispatcher)
    offer = (await linli.bus.wait_for("volunteer.assigned", request_id=request["request_id"]))[0]["data"]
    assert offer["volunteer_id"] == volunteer
    token = await linli.volunteer(volunteer)
    declined = await linli.call(API.MATCHER_RESPOND, {"assignment_id": offer["assignment_id"], "volunteer_id": volunteer,
                                                      "accept": False, "reason": "不在家"}, token)
    assert declined["status"] == "declined", declined
    open_now = await linli.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": volunteer})
    past = await linli.call(API.MATCHER_ASSIGNMENTS, {"volunteer_id": volunteer, "past": True})
    assert open_now["assignments"] == []
    assert [(a["assignment_id"], a["status"]) for a in past["assignments"]] == [(offer["assignment_id"], "declined")]
