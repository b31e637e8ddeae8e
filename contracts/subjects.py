from pydantic import BaseModel

from contracts import events as ev

EVENT_TYPES: dict[str, type[BaseModel]] = {
    "request.created": ev.RequestCreated,
    "request.cancelled": ev.RequestCancelled,
    "request.rated": ev.RequestRated,
    "request.unmatched": ev.RequestUnmatched,
    "volunteer.registered": ev.VolunteerRegistered,
    "volunteer.assigned": ev.VolunteerAssigned,
    "assignment.accepted": ev.AssignmentAccepted,
    "assignment.declined": ev.AssignmentDeclined,
    "assignment.expired": ev.AssignmentExpired,
    "assignment.completed": ev.AssignmentCompleted,
    "hours.logged": ev.HoursLogged,
    "points.earned": ev.PointsEarned,
    "notification.delivered": ev.NotificationDelivered,
    "notification.failed": ev.NotificationFailed,
}
_TYPE_OF = {model: name for name, model in EVENT_TYPES.items()}

STREAM = "LINLI"
STREAM_SUBJECTS = ["linli.evt.>"]


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
    MATCHER_RESPOND = "linli.api.matcher.respond"
    MATCHER_COMPLETE = "linli.api.matcher.complete"
    MATCHER_ASSIGNMENTS = "linli.api.matcher.assignments"
    LEDGER_BALANCE = "linli.api.ledger.balance"
    NOTIFIER_LIST = "linli.api.notifier.list"
