"""Tokens and the rules of who may do what, without I/O."""

import time

import jwt
import pytest

from contracts import ApiError
from services.common import auth
from services.common.auth import Actor
from services.identity import handlers

pytestmark = pytest.mark.domain

KEY = auth.load_private(auth.new_private_pem())
PUBLIC = auth.public_pem(KEY)
KEY_ID = auth.key_id(PUBLIC)


def refusal(check: object, *args: object) -> str:
    try:
        check(*args)  # type: ignore[operator]
    except ApiError as exc:
        return exc.code
    return "allowed"


def test_a_token_names_its_holder_role_district_and_grid() -> None:
    token, expires = auth.issue(KEY, KEY_ID, "kiosk-g1", "kiosk", "beibei", 3600, grid="g1")
    actor = auth.verify(PUBLIC, auth.bearer({"Authorization": f"Bearer {token}"}))
    assert (actor.sub, actor.role, actor.district, actor.grid) == ("kiosk-g1", "kiosk", "beibei", "g1")
    assert actor.token_id and expires > time.time()
    assert auth.key_id_of(token) == KEY_ID


def test_an_expired_a_foreign_and_an_altered_token_are_unauthenticated() -> None:
    expired, _ = auth.issue(KEY, KEY_ID, "wang", "dispatcher", "beibei", 60, now=time.time() - 120)
    other = auth.load_private(auth.new_private_pem())
    foreign, _ = auth.issue(other, KEY_ID, "wang", "administrator", "*", 3600)
    good, _ = auth.issue(KEY, KEY_ID, "wang", "dispatcher", "beibei", 3600)
    claims = jwt.decode(good, options={"verify_signature": False})
    header, _, signature = good.split(".")
    altered = ".".join([header, jwt.utils.base64url_encode(
        jwt.api_jws.json.dumps({**claims, "role": "administrator"}).encode()).decode(), signature])
    for token in (expired, foreign, altered, "", "a.b.c"):
        assert refusal(auth.verify, PUBLIC, token) == "unauthenticated"


def test_a_token_with_an_unknown_role_is_unauthenticated() -> None:
    token, _ = auth.issue(KEY, KEY_ID, "x", "superuser", "beibei", 3600)
    assert refusal(auth.verify, PUBLIC, token) == "unauthenticated"


def test_only_a_bearer_header_carries_a_token() -> None:
    assert auth.bearer({"Authorization": "Bearer abc"}) == "abc"
    assert auth.bearer({"Authorization": "Basic abc"}) == ""
    assert auth.bearer(None) == ""


CLERK = Actor("li", "bank_clerk", "beibei", token_id="t1")
ADMIN_ALL = Actor("admin", "administrator", "*")
ADMIN_TIELING = Actor("zhao", "administrator", "tieling")
DISPATCHER = Actor("wang", "dispatcher", "beibei")
VOLUNTEER = Actor("v-1", "volunteer", "beibei")
KIOSK = Actor("kiosk-g1", "kiosk", "beibei", grid="g1")


def test_an_operator_acts_only_in_their_own_district_with_their_own_role() -> None:
    assert refusal(auth.allow, CLERK, ["bank_clerk"], "beibei") == "allowed"
    assert refusal(auth.allow, CLERK, ["bank_clerk"], "tieling") == "forbidden"
    assert refusal(auth.allow, DISPATCHER, ["bank_clerk"], "beibei") == "forbidden"
    assert refusal(auth.allow, ADMIN_ALL, ["bank_clerk"], "tieling") == "allowed"
    assert refusal(auth.allow, ADMIN_TIELING, ["bank_clerk"], "beibei") == "forbidden"
    assert refusal(auth.allow, KIOSK, ["dispatcher"], "beibei") == "forbidden"
    assert refusal(auth.allow, auth.OPEN, ["administrator"], "beibei") == "allowed"


def test_a_volunteer_acts_only_for_themself() -> None:
    assert refusal(auth.allow_self_or, VOLUNTEER, "v-1", ["dispatcher"], "beibei") == "allowed"
    assert refusal(auth.allow_self_or, VOLUNTEER, "v-2", ["dispatcher"], "beibei") == "forbidden"
    assert refusal(auth.allow_self_or, DISPATCHER, "v-2", ["dispatcher"], "beibei") == "allowed"
    assert refusal(auth.allow_self_or, DISPATCHER, "v-2", [], "beibei") == "forbidden"


def test_a_kiosk_submits_only_for_its_own_district_and_grid() -> None:
    assert refusal(auth.allow_kiosk_or, KIOSK, "beibei", "g1", ["dispatcher"]) == "allowed"
    assert refusal(auth.allow_kiosk_or, KIOSK, "beibei", "g2", ["dispatcher"]) == "forbidden"
    assert refusal(auth.allow_kiosk_or, KIOSK, "tieling", "g1", ["dispatcher"]) == "forbidden"
    assert refusal(auth.allow_kiosk_or, DISPATCHER, "beibei", "g2", ["dispatcher"]) == "allowed"


def test_a_code_signs_in_only_its_volunteer_in_time_and_within_its_tries() -> None:
    now = 1000.0
    code = {"volunteer_id": "v-1", "used": False, "expires": now + 60, "tries": 1}
    assert handlers.code_refusal(code, "v-1", now, 5) is None
    assert handlers.code_refusal(code, "v-2", now, 5) is not None
    assert handlers.code_refusal({**code, "expires": now}, "v-1", now, 5) is not None
    assert handlers.code_refusal({**code, "used": True}, "v-1", now, 5) is not None
    assert handlers.code_refusal({**code, "tries": 6}, "v-1", now, 5) is not None
    assert handlers.code_refusal(None, "v-1", now, 5) is not None
    assert len(handlers.new_code()) == 6 and handlers.new_code().isdigit()
