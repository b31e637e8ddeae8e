"""`linli asyncapi` documents every channel of the public contract: each call, and each event."""

import json
import subprocess
import sys
from typing import Any

import pytest

from contracts.subjects import API, EVENT_TYPES
from linli.cli import asyncapi

pytestmark = pytest.mark.domain
SERVICES = ("identity", "intake", "matcher", "notifier", "ledger", "care")  # the feed answers no call of its own


@pytest.fixture(scope="module")
def documents() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(asyncapi())
    return parsed


def addresses(document: dict[str, Any]) -> set[str]:
    return {channel["address"] for channel in document["channels"].values()}


def test_linli_asyncapi_prints_one_asyncapi_3_document_per_service_and_one_of_the_events() -> None:
    printed = subprocess.run([sys.executable, "-m", "linli", "asyncapi"], capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    documents = json.loads(printed.stdout)
    assert set(documents) == {*SERVICES, "events"}
    assert all(document["asyncapi"].startswith("3.") for document in documents.values())


def test_every_call_of_the_contract_is_a_channel_of_the_service_that_answers_it(documents: dict[str, Any]) -> None:
    calls = {value for name, value in vars(API).items() if name.isupper()}
    for subject in calls:
        service = subject.split(".")[2]
        assert subject in addresses(documents[service]), f"{subject} is not in {service}'s document"


def test_every_event_type_is_a_channel_with_its_envelope_and_data_schema(documents: dict[str, Any]) -> None:
    events = documents["events"]
    assert addresses(events) == {f"linli.evt.{kind}.{{district}}" for kind in EVENT_TYPES}
    schemas = events["components"]["schemas"]
    for kind, model in EVENT_TYPES.items():
        assert model.__name__ in schemas and f"Envelope[{model.__name__}]" in schemas, kind


def test_every_event_a_service_reads_is_an_event_of_the_contract(documents: dict[str, Any]) -> None:
    read = {address for name in SERVICES for address in addresses(documents[name]) if address.startswith("linli.evt.")}
    assert read and read <= {f"linli.evt.{kind}.*" for kind in EVENT_TYPES}
