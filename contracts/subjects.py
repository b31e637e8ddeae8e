from pydantic import BaseModel

from contracts import care
from contracts import events as ev

EVENT_TYPES: dict[str, type[BaseModel]] = {
    "request.created": ev.RequestCreated,
    "request.cancelled": ev.RequestCancelled,
    "request.rated": ev.RequestRated,
    "request.reopened": ev.RequestReopened,
    "request.unmatched": ev.RequestUnmatched,
    "request.redispatched": ev.RequestRedispatched,
    "request.closed": ev.RequestClosed,
    "volunteer.registered": ev.VolunteerRegistered,
    "volunteer.left": ev.VolunteerLeft,
    "volunteer.assigned": ev.VolunteerAssigned,
    "assignment.accepted": ev.AssignmentAccepted,
    "assignment.declined": ev.AssignmentDeclined,
    "assignment.expired": ev.AssignmentExpired,
    "assignment.completed": ev.AssignmentCompleted,
    "assignment.withdrawn": ev.AssignmentWithdrawn,
    "pairing.created": ev.PairingCreated,
    "pairing.ended": ev.PairingEnded,
    "hours.logged": ev.HoursLogged,
    "points.earned": ev.PointsEarned,
    "points.redeemed": ev.PointsRedeemed,
    "ledger.checkpoint": ev.LedgerCheckpoint,
    "notification.delivered": ev.NotificationDelivered,
    "notification.failed": ev.NotificationFailed,
    "identity.code_requested": ev.CodeRequested,
    "care.plan.changed": care.CarePlanChanged,
    "care.duty.missed": care.DutyMissed,
    "care.escalated": care.Escalated,
    "care.escalation.stopped": care.EscalationStopped,
    "care.contact.overdue": care.ContactOverdue,
}
_TYPE_OF = {model: name for name, model in EVENT_TYPES.items()}

STREAM = "LINLI"
STREAM_SUBJECTS = ["linli.evt.>"]
# The public feed's own stream, so a district system can replay what it missed.
PUBLIC_STREAM = "LINLI_PUBLIC"
PUBLIC_STREAM_SUBJECTS = ["linli.pub.>"]

# The one service allowed to publish each event type: the server refuses anyone else's publish on its
# subject, so an event a consumer reads came from its owner. A key ending in ".*" covers every type
# under that prefix (care.visit.logged, identity.code.requested...).
OWNERS: dict[str, str] = {
    "request.created": "intake",
    "request.cancelled": "intake",
    "request.rated": "intake",
    "request.reopened": "intake",
    "request.closed": "intake",
    "volunteer.registered": "intake",
    "volunteer.left": "intake",
    "pairing.created": "intake",
    "pairing.ended": "intake",
    "volunteer.assigned": "matcher",
    "assignment.accepted": "matcher",
    "assignment.declined": "matcher",
    "assignment.expired": "matcher",
    "assignment.completed": "matcher",
    "assignment.withdrawn": "matcher",
    "request.unmatched": "matcher",
    "request.redispatched": "matcher",
    "hours.logged": "matcher",
    "notification.delivered": "notifier",
    "notification.failed": "notifier",
    "points.earned": "ledger",
    "points.redeemed": "ledger",
    "ledger.checkpoint": "ledger",
    "care.*": "care",
    "identity.*": "identity",
}


def owner_of(event_type: str) -> str | None:
    """The service that owns the event type, or None for a type nobody may publish."""
    if event_type in OWNERS:
        return OWNERS[event_type]
    for key, owner in OWNERS.items():
        if key.endswith(".*") and event_type.startswith(key[:-1]):
            return owner
    return None


def owned_by(service: str) -> list[str]:
    return [event_type for event_type, owner in OWNERS.items() if owner == service]


def type_of(model: type[BaseModel]) -> str:
    return _TYPE_OF[model]


def event_subject(event_type: str, district: str) -> str:
    return f"linli.evt.{event_type}.{district}"


def public_subject(event_type: str, district: str) -> str:
    return f"linli.pub.{event_type}.{district}"


class API:
    INTAKE_CATALOG = "linli.api.intake.catalog"
    INTAKE_SUBMIT = "linli.api.intake.submit"
    INTAKE_REGISTER_VOLUNTEER = "linli.api.intake.register_volunteer"
    INTAKE_RATE = "linli.api.intake.rate"
    INTAKE_STATUS = "linli.api.intake.status"
    INTAKE_CANCEL = "linli.api.intake.cancel"
    INTAKE_CONTACT = "linli.api.intake.contact"
    INTAKE_PLACES = "linli.api.intake.places"
    INTAKE_DETAILS = "linli.api.intake.details"
    INTAKE_REQUESTS = "linli.api.intake.requests"
    INTAKE_UPDATE_VOLUNTEER = "linli.api.intake.update_volunteer"
    INTAKE_LEAVE = "linli.api.intake.leave"
    INTAKE_CLOSE = "linli.api.intake.close"
    MATCHER_RESPOND = "linli.api.matcher.respond"
    MATCHER_COMPLETE = "linli.api.matcher.complete"
    MATCHER_ASSIGNMENTS = "linli.api.matcher.assignments"
    MATCHER_EXPLAIN = "linli.api.matcher.explain"
    MATCHER_ASSIGN = "linli.api.matcher.assign"
    MATCHER_REASSIGN = "linli.api.matcher.reassign"
    MATCHER_VOLUNTEERS = "linli.api.matcher.volunteers"
    INTAKE_PAIR = "linli.api.intake.pair"
    INTAKE_UNPAIR = "linli.api.intake.unpair"
    LEDGER_BALANCE = "linli.api.ledger.balance"
    LEDGER_ADJUST = "linli.api.ledger.adjust"
    LEDGER_CONFIRM = "linli.api.ledger.confirm"
    LEDGER_REVIEW = "linli.api.ledger.review"
    LEDGER_CATALOG_PUT = "linli.api.ledger.catalog_put"
    LEDGER_CATALOG_LIST = "linli.api.ledger.catalog_list"
    LEDGER_REDEEM = "linli.api.ledger.redeem"
    LEDGER_STATEMENT = "linli.api.ledger.statement"
    LEDGER_IMPORT_STATEMENT = "linli.api.ledger.import_statement"
    LEDGER_PUBLIC_KEY = "linli.api.ledger.public_key"
    LEDGER_TRUST_PUT = "linli.api.ledger.trust_put"
    LEDGER_TRUST_REMOVE = "linli.api.ledger.trust_remove"
    LEDGER_TRUST_LIST = "linli.api.ledger.trust_list"
    LEDGER_REPORT = "linli.api.ledger.report"
    IDENTITY_LOGIN = "linli.api.identity.login"
    IDENTITY_DEVICE_LOGIN = "linli.api.identity.device_login"
    IDENTITY_CODE_REQUEST = "linli.api.identity.code_request"
    IDENTITY_CODE_VERIFY = "linli.api.identity.code_verify"
    IDENTITY_CODE = "linli.api.identity.code"
    IDENTITY_PUBLIC_KEY = "linli.api.identity.public_key"
    IDENTITY_OPERATOR_PUT = "linli.api.identity.operator_put"
    IDENTITY_DEVICE_PUT = "linli.api.identity.device_put"
    CARE_CREATE_PLAN = "linli.api.care.create_plan"
    CARE_CHANGE_PLAN = "linli.api.care.change_plan"
    CARE_END_PLAN = "linli.api.care.end_plan"
    CARE_PLAN = "linli.api.care.plan"
    CARE_CHECK_IN = "linli.api.care.check_in"
    CARE_LOG_CONTACT = "linli.api.care.log_contact"
    CARE_ASSIGN_COVER = "linli.api.care.assign_cover"
    CARE_SAFEGUARD_QUEUE = "linli.api.care.safeguard_queue"
    CARE_REPORT = "linli.api.care.report"
    INTAKE_FIND_VOLUNTEER = "linli.api.intake.find_volunteer"
    LEDGER_CERTIFICATE = "linli.api.ledger.certificate"
