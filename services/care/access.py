"""Who may make a care call when tokens are required: the reader a call states must be the signed-in actor.

Operators are dispatchers, committee members and administrators, scoped to their district. A member of a
care group (a neighbour, family, a grid or community worker, a caring parent) signs in as a volunteer: the
token's sub is their person_id in the plan's group. A children's director reads and checks in as a member
with a volunteer token; what only operators and directors may do (create, change or end a plan, assign
cover, the safeguarding queue, the month's report) needs an operator token of the district. With
LINLI_AUTH=off the stated reader is taken as it is, as before. Pure: no I/O.
"""

from contracts.care import Reader
from services.common import auth
from services.common.auth import Actor

CARE_OPERATORS = ("dispatcher", "committee", "administrator")


def reader_of(actor: Actor, stated: Reader) -> Reader:
    """The reader the care rules check: the stated one, once it agrees with the token; `forbidden` if not."""
    if actor.open:
        return stated
    if actor.role == "volunteer":
        if stated.role != "member" or stated.person_id != actor.sub or stated.district != actor.district:
            raise auth.forbidden(actor, "a volunteer reads care plans only as themself, a member of the group")
        return stated
    auth.allow(actor, CARE_OPERATORS, stated.district)
    if stated.role != "operator" or stated.person_id != actor.sub:
        raise auth.forbidden(actor, "the reader stated in the call is not the signed-in operator")
    return stated


def may_record_for(actor: Actor, by: str, plan_district: str) -> None:
    """A check-in or contact is recorded by the member themself, or by an operator of the plan's district
    (a member who phoned it in)."""
    if actor.open:
        return
    if actor.role == "volunteer":
        if actor.sub != by:
            raise auth.forbidden(actor, "a volunteer records check-ins and contacts only as themself")
        return
    auth.allow(actor, CARE_OPERATORS, plan_district)
