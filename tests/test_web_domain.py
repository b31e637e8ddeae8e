"""The web's pure parts: every word in both languages, every key a template asks for, the kiosk's form
check, the resident's guess limit, and where a sign-in may send someone."""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

from contracts.calls import SubmitRequest
from services.web.config import WebSettings
from services.web.kiosk import check_form
from services.web.pages import Refusal, explain_invalid
from services.web.resident import Tries, plain_status, when_words
from services.web.signin import safe_next
from services.web.texts import LANGUAGES, Words, load

pytestmark = pytest.mark.domain
SETTINGS = WebSettings()
TEXTS = load(SETTINGS.texts)
ZH, EN = Words("zh", TEXTS["zh"]), Words("en", TEXTS["en"])
SERVICES = {"repair.plumbing": {"id": "repair.plumbing", "name": "水电维修"}}


def test_every_text_is_said_in_both_languages() -> None:
    assert set(TEXTS["zh"]) == set(TEXTS["en"])
    assert all(text.strip() for language in LANGUAGES for text in TEXTS[language].values())


def test_every_key_a_template_or_a_page_asks_for_exists() -> None:
    asked = set()
    for path in [*SETTINGS.templates.glob("*.html"), *Path(SETTINGS.templates.parent).glob("*.py")]:
        asked |= set(re.findall(r"""\b(?:t|words)\(\s*["']([a-z0-9_]+\.[a-z0-9_]+)["']""", path.read_text()))
    assert asked, "the scan found no keys at all"
    # a key ending in "_" is completed in the template ("kiosk.step_" ~ n): some key must complete it
    missing = [key for key in asked if key not in TEXTS["zh"] and not (
        key.endswith("_") and any(known.startswith(key) for known in TEXTS["zh"]))]
    assert sorted(missing) == []


def test_chinese_texts_carry_no_english_words() -> None:
    english = {key: text for key, text in TEXTS["zh"].items()
               # a word with a small letter is English; CSV, PNG and PDF are the files' own names
               if re.search(r"(?<![A-Za-z])(?=[A-Za-z]*[a-z])[A-Za-z]{3,}", re.sub(r"\{[a-z_]+\}", "", text))
               and key != "common.language_switch"
               and not key.startswith("open311.")}  # GeoReport's own field names (api_key, address_id) are the spec's
    assert english == {}


def test_a_kiosk_form_with_a_phone_makes_the_submit_call_and_a_blank_name_is_said_as_resident() -> None:
    call = check_form({"service": "repair.plumbing", "phone": "13800138000", "key": "web-12345678"}, "beibei",
                      "quanwai-03", "kiosk", ZH, SERVICES)
    assert isinstance(call, SubmitRequest)
    assert call.resident.name == "居民" and call.grid == "quanwai-03" and call.idempotency_key == "web-12345678"


def test_a_bad_kiosk_form_names_each_bad_field_in_the_pages_language() -> None:
    refused = check_form({"service": "repair.plumbing", "phone": "12ab", "name": "x" * 51, "key": "web-12345678"},
                         "beibei", "quanwai-03", "kiosk", EN, SERVICES)
    assert isinstance(refused, Refusal)
    assert refused.fields == {"phone": EN("common.phone_invalid"), "name": EN("common.too_long", n=50)}
    unknown = check_form({"service": "nothing", "phone": "13800138000"}, "beibei", "quanwai-03", "kiosk", ZH, SERVICES)
    assert isinstance(unknown, Refusal) and unknown.fields == {"service": ZH("kiosk.choose_service")}
    blank = check_form({"service": "repair.plumbing", "phone": ""}, "beibei", "quanwai-03", "kiosk", ZH, SERVICES)
    assert isinstance(blank, Refusal) and blank.fields["phone"] == ZH("common.required")


def test_an_invalid_field_is_explained_under_the_forms_name_for_it() -> None:
    class Form(BaseModel):
        hours: float = Field(gt=0)

    with pytest.raises(ValidationError) as raised:
        Form.model_validate({"hours": 0})
    assert explain_invalid(raised.value, ZH, {"hours": "f-hours"}).fields == {"f-hours": ZH("common.invalid")}


def test_five_wrong_guesses_of_a_code_block_it_for_a_quarter_of_an_hour() -> None:
    tries = Tries(limit=5, window=900)
    for n in range(5):
        assert not tries.blocked("ABCDEF", now=n)
        tries.fail("abcdef", now=n)
    assert tries.blocked("ABCDEF", now=10)
    assert not tries.blocked("GHJKMN", now=10)
    assert not tries.blocked("ABCDEF", now=905)


def test_the_status_is_said_in_plain_words_with_who_and_when_in_the_districts_clock() -> None:
    status = {"status": "accepted", "volunteer_name": "王师傅",
              "window_start": "2026-12-03T06:00:00+00:00", "window_end": "2026-12-03T09:00:00+00:00"}
    assert when_words(status, "Asia/Shanghai", ZH) == "12月3日 14:00–17:00"
    assert plain_status(status, "Asia/Shanghai", ZH) == "王师傅 会来帮您，时间：12月3日 14:00–17:00。"
    assert "as soon as possible" in plain_status({**status, "window_start": None}, "Asia/Shanghai", EN)


@pytest.mark.parametrize("asked, sent", [
    ("/ops/requests", "/ops/requests"), ("https://evil.example/", "/ops"), ("//evil.example/x", "/ops"),
    ("javascript:alert(1)", "/ops"), ("/hotline", "/hotline"),
])
def test_a_sign_in_sends_people_only_to_a_page_of_this_site(asked: str, sent: str) -> None:
    assert safe_next(asked) == sent


def test_a_hotline_form_without_the_callers_grid_asks_for_it_and_sends_nothing() -> None:
    refused = check_form({"service": "repair.plumbing", "phone": "13800138000", "key": "web-12345678"}, "beibei",
                         "", "hotline", ZH, SERVICES)
    assert isinstance(refused, Refusal) and refused.fields == {"grid": ZH("kiosk.choose_grid")}
