"""Who may do what on the bus: every NATS user and its subject permissions, in one table.

The server enforces it (nats-server `authorization { users: [...] }`), so a process cannot do what its
user may not, whatever code it runs. Both the embedded server's configuration (`linli up`) and
deploy/nats.conf (compose) are rendered from here; `python -m linli.permissions > deploy/nats.conf`
regenerates the checked-in file, and a test fails when it is out of date; `python -m linli.permissions
env > .env` makes the passwords compose gives it.

Every service is a user of its own name, whether or not it runs: a user nobody connects as costs
nothing. A service user may
- publish the events it owns (contracts.subjects.OWNERS) and nothing else under linli.evt.>;
- answer its own calls: only it subscribes linli.api.<service>.>, so nobody else can join its queue
  group, and it replies through allow_responses;
- make the calls listed in CALLS;
- create, read and pull its own durable consumers (READS) and acknowledge what they deliver;
- receive replies on its own inbox prefix, _INBOX_<user>, which nobody else may read.
Only the administrator may delete, update or purge a stream or a consumer.
"""

import json
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contracts.subjects import PUBLIC_STREAM, STREAM, owned_by
from services.common.bus import consumer_name
from services.common.config import inbox_prefix_for

# The services that answer calls on linli.api.<service>.> and publish events; linli/system.py starts
# those it has code for, and the rest keep an unused user.
SERVICE_USERS = ("intake", "matcher", "notifier", "ledger", "care", "identity", "feed")

# The event types each service reads through its own durable consumers (named service-event-type).
READS: dict[str, tuple[str, ...]] = {
    "intake": ("volunteer.assigned", "assignment.accepted", "assignment.completed", "assignment.withdrawn",
               "request.unmatched", "request.redispatched"),
    "matcher": ("volunteer.registered", "request.created", "request.cancelled", "request.rated", "request.closed",
                "volunteer.left", "pairing.created", "pairing.ended"),
    "notifier": ("volunteer.assigned", "assignment.accepted", "assignment.withdrawn", "assignment.expired",
                 "assignment.completed", "request.redispatched", "request.closed", "request.reopened",
                 "request.unmatched", "points.earned", "identity.code_requested", "care.escalated",
                 "care.contact.overdue"),
    "ledger": ("hours.logged", "request.rated", "volunteer.registered"),
    "care": ("assignment.completed",),
    "identity": ("volunteer.registered", "volunteer.left"),
    "feed": ("request.created", "assignment.accepted", "assignment.completed", "request.rated", "hours.logged",
             "points.redeemed"),
}

# The calls (linli.api.<call>) each user may make. A service always may call its own.
CALLS: dict[str, tuple[str, ...]] = {
    "intake": (),
    "matcher": (),
    "notifier": ("intake.contact", "intake.catalog", "identity.code"),
    # The certificate carries the volunteer's name as intake has it, never one the caller typed.
    "ledger": ("intake.contact",),
    "care": ("intake.submit", "intake.status", "intake.cancel", "intake.catalog", "intake.places"),
    # A volunteer signs in by phone: intake alone holds phones, and says whose it is to identity alone.
    "identity": ("intake.find_volunteer",),
    "feed": (),
    # A neighbourhood kiosk: residents ask for help and follow their request.
    "kiosk": ("intake.submit", "intake.catalog", "intake.places", "intake.status"),
    # The front door (services/web) residents, volunteers and operators use through a browser, and other
    # civic systems through Open311; every privileged call it relays carries the person's own token, which
    # the answering service checks, so the web may ask what its signed-in people may.
    "web": ("intake.submit", "intake.catalog", "intake.places", "intake.status", "intake.rate", "intake.cancel",
            "intake.register_volunteer", "intake.update_volunteer", "intake.leave", "intake.details",
            "intake.requests", "intake.close", "intake.pair", "intake.unpair",
            "matcher.respond", "matcher.complete", "matcher.assignments", "matcher.explain", "matcher.assign",
            "matcher.reassign", "matcher.volunteers",
            "ledger.balance", "ledger.statement", "ledger.catalog_list", "ledger.redeem", "ledger.public_key",
            "ledger.review", "ledger.confirm", "ledger.adjust",
            "intake.dead_letters", "matcher.dead_letters", "notifier.dead_letters", "ledger.dead_letters",
            "care.dead_letters", "identity.>", "ledger.certificate", "ledger.report"),
    # A district's own system: the public feed and nothing else.
    "district": (),
}

EVERY_SERVICE_CALLS = ("identity.public_key",)

# The events the web's live pages follow as they happen (core subscriptions, no consumer): requests and
# assignments, which carry ids, places and codes, never a resident's name, phone or address.
WEB_FOLLOWS = ("linli.evt.request.>", "linli.evt.volunteer.assigned.>", "linli.evt.assignment.>")

# What nobody but the administrator may do with the JetStream API, whatever else their user allows.
JS_ADMIN_ONLY = (
    "$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.SNAPSHOT.>", "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>", "$JS.API.STREAM.LEADER.>", "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.PAUSE.>", "$JS.API.CONSUMER.UNPIN.>", "$JS.API.CONSUMER.LEADER.>",
    "$JS.API.ACCOUNT.>", "$JS.API.META.>", "$JS.API.SERVER.>",
)

ADMIN = "admin"
USERS = (*SERVICE_USERS, "kiosk", "web", "district", ADMIN)


@dataclass(frozen=True)
class User:
    name: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()
    allow_responses: bool = False

    @property
    def inbox(self) -> str:
        return inbox_prefix_for(self.name)


def event_subjects(event_type: str) -> str:
    return f"linli.evt.{event_type[:-2]}.>" if event_type.endswith(".*") else f"linli.evt.{event_type}.*"


def own_consumers(service: str, stream: str, event_types: Iterable[str]) -> list[str]:
    """Creating (in each of the forms nats-py uses), reading and pulling a durable, and acknowledging."""
    subjects = []
    for event_type in event_types:
        durable = consumer_name(service, event_type)
        subjects += [
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}", f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}", f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>",
        ]
    return subjects


def calls(names: Iterable[str]) -> list[str]:
    return [f"linli.api.{name}" for name in names]


def service_user(service: str) -> User:
    publish = [event_subjects(event_type) for event_type in owned_by(service)]
    if service == "feed":
        publish += ["linli.pub.>", f"$JS.API.STREAM.CREATE.{PUBLIC_STREAM}", f"$JS.API.STREAM.INFO.{PUBLIC_STREAM}"]
    # Every service may ask for the key that signs people's tokens, to check the token a call carries.
    publish += calls(dict.fromkeys([*CALLS.get(service, ()), *EVERY_SERVICE_CALLS]))
    publish += [f"linli.api.{service}.>"]  # its own health and calls, as `linli health` inside its container
    publish += [
        "$JS.API.INFO",
        # Creating the stream the way it already is changes nothing; the first service to start may create
        # it. A different configuration is an update, and only the administrator may make one.
        f"$JS.API.STREAM.CREATE.{STREAM}", f"$JS.API.STREAM.INFO.{STREAM}",
        # Dead letters: the message an advisory names is read back by its sequence.
        f"$JS.API.STREAM.MSG.GET.{STREAM}", f"$JS.API.DIRECT.GET.{STREAM}", f"$JS.API.DIRECT.GET.{STREAM}.>",
        *own_consumers(service, STREAM, READS.get(service, ())),
    ]
    subscribe = [
        f"linli.api.{service}.>",
        f"{inbox_prefix_for(service)}.>",
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.*",
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{STREAM}.*",
    ]
    return User(service, tuple(publish), tuple(subscribe), deny_publish=JS_ADMIN_ONLY, allow_responses=True)


def caller(name: str) -> User:
    publish = calls(CALLS.get(name, ()))
    subscribe = [f"{inbox_prefix_for(name)}.>"]
    if name == "web":
        subscribe += list(WEB_FOLLOWS)
    if name == "district":
        subscribe.append("linli.pub.>")
        # Replaying the public stream through a consumer of its own; deleting one is the administrator's.
        publish += [
            "$JS.API.INFO", f"$JS.API.STREAM.INFO.{PUBLIC_STREAM}", f"$JS.API.CONSUMER.CREATE.{PUBLIC_STREAM}",
            f"$JS.API.CONSUMER.CREATE.{PUBLIC_STREAM}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{PUBLIC_STREAM}.>",
            f"$JS.API.CONSUMER.INFO.{PUBLIC_STREAM}.>", f"$JS.API.CONSUMER.MSG.NEXT.{PUBLIC_STREAM}.>",
            f"$JS.ACK.{PUBLIC_STREAM}.>",
        ]
    return User(name, tuple(publish), tuple(subscribe), deny_publish=JS_ADMIN_ONLY)


def user(name: str) -> User:
    if name == ADMIN:
        return User(ADMIN, (">",), (">",))
    return service_user(name) if name in SERVICE_USERS else caller(name)


def users() -> list[User]:
    return [user(name) for name in USERS]


def password_variable(name: str) -> str:
    return f"LINLI_{name.upper()}_PASSWORD"


def _strings(key: str, values: Iterable[str], indent: str) -> list[str]:
    return [f"{indent}{key}: [", *(f"{indent}  {json.dumps(v)}" for v in values), f"{indent}]"]


def _side(key: str, allow: tuple[str, ...], deny: tuple[str, ...]) -> list[str]:
    lines = [f"      {key}: {{", *_strings("allow", allow, "        ")]
    if deny:
        lines += _strings("deny", deny, "        ")
    return [*lines, "      }"]


def render_user(user: User, password: str) -> str:
    """One entry of the server's users list; `password` is written as is, so `$VAR` stays a reference."""
    lines = [f"    {{user: {json.dumps(user.name)}, password: {password}, permissions: {{"]
    lines += _side("publish", user.publish, user.deny_publish)
    lines += _side("subscribe", user.subscribe, user.deny_subscribe)
    if user.allow_responses:
        lines.append("      allow_responses: true")
    lines.append("    }}")
    return "\n".join(lines)


def authorization(passwords: dict[str, str] | None = None) -> str:
    """The server's authorization block: with `passwords`, the passwords themselves (for the embedded
    server, in a file only its owner reads); without, references to $LINLI_<USER>_PASSWORD."""
    entries = [
        render_user(u, json.dumps(passwords[u.name]) if passwords else f"${password_variable(u.name)}")
        for u in users()
    ]
    return "authorization {\n  users: [\n" + "\n".join(entries) + "\n  ]\n}\n"


DEPLOY_HEADER = """\
# Generated by `python -m linli.permissions > deploy/nats.conf` from linli/permissions.py; edit that,
# not this file (a test checks they agree). Every password is an environment variable of the nats
# container (LINLI_<USER>_PASSWORD, see compose.yaml).
#
# JetStream for a production node. Hours and points are money-like: fsync every write
# (sync_interval: always) so an acknowledged event survives a power cut on this node; it costs
# write throughput. With three replicas across failure domains the default interval is a choice.
port: 4222
http_port: 8222
jetstream {
  store_dir: /data
  sync_interval: always
}
"""


def deploy_config() -> str:
    return DEPLOY_HEADER + authorization()


# Where `linli up` keeps the passwords it generated: the same variables compose reads, one a line.
CREDENTIALS = Path("credentials") / "nats.env"


def load_credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / CREDENTIALS
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        for name in USERS:
            if key.strip() == password_variable(name):
                found[name] = value.strip()
    return found


def ensure_credentials(data_dir: Path) -> dict[str, str]:
    """The passwords of every user: those made on an earlier start, and new ones for users added since.
    Only the folder's owner may read them."""
    folder = data_dir / CREDENTIALS.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    passwords = load_credentials(data_dir)
    if missing := [name for name in USERS if name not in passwords]:
        passwords.update({name: secrets.token_urlsafe(24) for name in missing})
        path = data_dir / CREDENTIALS
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text("".join(f"{password_variable(name)}={passwords[name]}\n" for name in USERS))
    return passwords


def url_with(url: str, name: str, password: str) -> str:
    """nats://host:port as the user, with the password."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{name}:{password}@{rest.rsplit('@', 1)[-1]}"


def fresh_env() -> str:
    """New passwords for every user, as the .env file compose reads."""
    return "".join(f"{password_variable(name)}={secrets.token_urlsafe(24)}\n" for name in USERS)


if __name__ == "__main__":
    # `python -m linli.permissions` prints deploy/nats.conf; `... env` new passwords for compose's .env.
    sys.stdout.write(fresh_env() if sys.argv[1:] == ["env"] else deploy_config())
