from contracts.envelope import Envelope, new_event
from contracts.errors import ApiError, ErrorReply
from contracts.subjects import API, EVENT_TYPES, event_subject, public_subject

__all__ = [
    "API",
    "EVENT_TYPES",
    "ApiError",
    "Envelope",
    "ErrorReply",
    "event_subject",
    "new_event",
    "public_subject",
]
