"""Care's access rules with tokens required, without I/O: the stated reader must be the signed-in actor."""

import pytest

from contracts import ApiError
from contracts.care import Reader
from services.care.access import may_record_for, reader_of
from services.common import auth
from services.common.auth import Actor

pytestmark = pytest.mark.domain

DISPATCHER = Actor(sub="op-1", role="dispatcher", district="beibei")
NEIGHBOUR = Actor(sub="neighbour-1", role="volunteer", district="beibei")


def reader(person_id: str, role: str = "member", district: str = "beibei") -> Reader:
    return Reader.model_validate({"person_id": person_id, "role": role, "district": district})


def test_with_tokens_off_the_stated_reader_is_taken_as_it_is() -> None:
    stated = reader("anyone", "director", "jiangbei")
    assert reader_of(auth.OPEN, stated) == stated


def test_an_operator_of_the_district_reads_as_itself_and_an_administrator_of_every_district_anywhere() -> None:
    assert reader_of(DISPATCHER, reader("op-1", "operator")).person_id == "op-1"
    admin = Actor(sub="admin", role="administrator", district="*")
    assert reader_of(admin, reader("admin", "operator", "jiangbei")).district == "jiangbei"


@pytest.mark.parametrize("actor, stated", [
    (DISPATCHER, reader("op-1", "operator", "jiangbei")),  # a district the token does not cover
    (DISPATCHER, reader("op-2", "operator")),  # another operator's name
    (DISPATCHER, reader("op-1", "director")),  # a role the token does not give
    (Actor(sub="clerk", role="bank_clerk", district="beibei"), reader("clerk", "operator")),
    (Actor(sub="k1", role="kiosk", district="beibei", grid="g1"), reader("k1", "operator")),
    (NEIGHBOUR, reader("neighbour-2")),  # another member
    (NEIGHBOUR, reader("neighbour-1", "operator")),
    (NEIGHBOUR, reader("neighbour-1", "director")),
    (NEIGHBOUR, reader("neighbour-1", "member", "jiangbei")),
])


def test_a_stated_reader_that_disagrees_with_the_token_is_forbidden(actor: Actor, stated: Reader) -> None:
    with pytest.raises(ApiError) as refusal:
        reader_of(actor, stated)
    assert refusal.value.code == "forbidden"


def test_a_volunteer_records_only_as_themself_and_an_operator_only_in_its_district() -> None:
    may_record_for(NEIGHBOUR, "neighbour-1", "jiangbei")
    may_record_for(DISPATCHER, "worker-1", "beibei")
    may_record_for(auth.OPEN, "anyone", "beibei")
    for actor, by, district in ((NEIGHBOUR, "worker-1", "beibei"), (DISPATCHER, "worker-1", "jiangbei")):
        with pytest.raises(ApiError) as refusal:
            may_record_for(actor, by, district)
        assert refusal.value.code == "forbidden"
