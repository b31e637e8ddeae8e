import json
from datetime import UTC, datetime

from contracts import API, ApiError, Envelope
from contracts.calls import (
    AdjustBalance,
    Balance,
    BalanceQuery,
    CertificateFile,
    CertificateQuery,
    ConfirmService,
    DistrustDistrict,
    ImportStatement,
    LedgerEntry,
    MonthReport,
    MonthReportQuery,
    PublicKey,
    PublicKeyQuery,
    PutRewardItem,
    Redeem,
    Redemption,
    ReviewQuery,
    ReviewQueue,
    RewardCatalog,
    RewardCatalogQuery,
    RewardItem,
    SignedStatement,
    StatementQuery,
    TrustDistrict,
    TrustedKey,
    TrustedKeys,
    TrustedKeysQuery,
)
from contracts.events import HoursLogged, RequestRated, VolunteerRegistered
from services.common import auth
from services.common.auth import Actor, signed_by
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.ledger import handlers, monthly
from services.ledger.bank import Bank
from services.ledger.certificates import Certificates
from services.ledger.config import LedgerSettings
from services.ledger.report_store import ReportStore
from services.ledger.store import LedgerStore


CLERKS = ["bank_clerk"]  # and administrators, who hold every operator role
CERTIFIERS = ["bank_clerk", "committee"]
# Who reads a district's month: its committee, its clerks and its dispatchers (and administrators).
REPORT_READERS = ["committee", "bank_clerk", "dispatcher"]


def build(settings: LedgerSettings | None = None) -> Service:
    settings = settings or LedgerSettings()
    service = Service.create("ledger", settings.bus)
    broker, outbox, inbox, gate = service.broker, service.outbox, service.inbox, service.gate
    bank = Bank(LedgerStore(service.db), outbox, settings)
    service.on_start.append(bank.start)
    service.loops.append(bank.sweep_forever)
    service.loops.append(bank.checkpoint_forever)

    async def name_of(volunteer_id: str) -> str:
        try:
            reply = await broker.request(json.dumps({"kind": "volunteer", "id": volunteer_id}).encode(),
                                         API.INTAKE_CONTACT, timeout=5.0)
            answer = json.loads(reply.body)
        except Exception as exc:  # intake is not answering: the volunteer asks again in a moment
            raise ApiError("unavailable", "the volunteer's name cannot be read right now; try again") from exc
        return "" if "error" in answer else str(answer.get("name", ""))

    certificates = Certificates(ReportStore(service.db), name_of, settings)

    @on_event(broker, settings.bus, "ledger", "hours.logged")
    async def hours_logged(event: Envelope[HoursLogged]) -> None:
        # No inbox: entry ids derive from the event id, and the proof of service names the points.earned sent.
        await bank.earn(event)

    @on_event(broker, settings.bus, "ledger", "request.rated")
    async def request_rated(event: Envelope[RequestRated]) -> None:
        # No inbox: the rating is keyed on the request and volunteer, its entries too, and nothing is published.
        await bank.rated(event)

    @on_event(broker, settings.bus, "ledger", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("ledger-volunteers", event) as first:
            if first:
                await bank.registered(event)  # keyed on the volunteer id

    @on_call(broker, API.LEDGER_BALANCE, "ledger")
    @api_call(BalanceQuery)
    async def balance(call: BalanceQuery) -> Balance:
        return await bank.balance(call.volunteer_id)

    @on_call(broker, API.LEDGER_ADJUST, "ledger")
    @api_call(AdjustBalance, gate)
    async def adjust(call: AdjustBalance, actor: Actor) -> LedgerEntry:
        auth.allow(actor, CLERKS, await bank.district_of(call.volunteer_id))
        call = signed_by(call, actor)
        return handlers.entry_view(await bank.adjust(call))  # keyed on the idempotency key

    @on_call(broker, API.LEDGER_CONFIRM, "ledger")
    @api_call(ConfirmService, gate)
    async def confirm(call: ConfirmService, actor: Actor) -> LedgerEntry:
        auth.allow(actor, CLERKS)
        for district in await bank.districts_of_request(call.request_id, call.volunteer_id):
            auth.allow(actor, CLERKS, district)
        call = signed_by(call, actor)
        return handlers.entry_view(await bank.confirm(call))  # one confirmation per request

    @on_call(broker, API.LEDGER_REVIEW, "ledger")
    @api_call(ReviewQuery, gate)
    async def review(call: ReviewQuery, actor: Actor) -> ReviewQueue:
        auth.allow(actor, CLERKS)
        return ReviewQueue(items=await bank.review(call.limit))

    @on_call(broker, API.LEDGER_CATALOG_PUT, "ledger")
    @api_call(PutRewardItem, gate)
    async def catalog_put(call: PutRewardItem, actor: Actor) -> RewardItem:
        auth.allow(actor, CLERKS, settings.district or None)
        return await bank.put_reward(call)

    @on_call(broker, API.LEDGER_CATALOG_LIST, "ledger")
    @api_call(RewardCatalogQuery)
    async def catalog_list(call: RewardCatalogQuery) -> RewardCatalog:
        return RewardCatalog(items=await bank.rewards(call.include_inactive))

    @on_call(broker, API.LEDGER_REDEEM, "ledger")
    @api_call(Redeem, gate)
    async def redeem(call: Redeem, actor: Actor) -> Redemption:
        auth.allow_self_or(actor, call.volunteer_id, CLERKS, await bank.district_of(call.volunteer_id))
        return handlers.redemption_view(await bank.redeem(call))  # keyed on the idempotency key

    @on_call(broker, API.LEDGER_STATEMENT, "ledger")
    @api_call(StatementQuery)
    async def statement(call: StatementQuery) -> SignedStatement:
        return await bank.statement(call.volunteer_id)

    @on_call(broker, API.LEDGER_IMPORT_STATEMENT, "ledger")
    @api_call(ImportStatement, gate)
    async def import_statement(call: ImportStatement, actor: Actor) -> LedgerEntry:
        auth.allow(actor, CLERKS, await bank.district_of(call.volunteer_id))
        return handlers.entry_view(await bank.import_statement(call))  # once per statement id

    @on_call(broker, API.LEDGER_CERTIFICATE, "ledger")
    @api_call(CertificateQuery, gate)
    async def certificate(call: CertificateQuery, actor: Actor) -> CertificateFile:
        auth.allow_self_or(actor, call.volunteer_id, CERTIFIERS, await bank.district_of(call.volunteer_id))
        return await certificates.issue(call.volunteer_id, call.issuer)  # reads only; asking again draws it again

    @on_call(broker, API.LEDGER_PUBLIC_KEY, "ledger")
    @api_call(PublicKeyQuery)
    async def public_key(call: PublicKeyQuery) -> PublicKey:
        public, key_id = bank.public_key()
        return PublicKey(district=settings.district, public_key=public, key_id=key_id)

    @on_call(broker, API.LEDGER_TRUST_PUT, "ledger")
    @api_call(TrustDistrict, gate)
    async def trust_put(call: TrustDistrict, actor: Actor) -> TrustedKey:
        auth.allow(actor, ["administrator"], settings.district or None)
        call = signed_by(call, actor)
        return await bank.trust(call)  # the same key again changes nothing

    @on_call(broker, API.LEDGER_TRUST_REMOVE, "ledger")
    @api_call(DistrustDistrict, gate)
    async def trust_remove(call: DistrustDistrict, actor: Actor) -> TrustedKey:
        auth.allow(actor, ["administrator"], settings.district or None)
        call = signed_by(call, actor)
        return await bank.distrust(call)

    @on_call(broker, API.LEDGER_TRUST_LIST, "ledger")
    @api_call(TrustedKeysQuery)
    async def trust_list(call: TrustedKeysQuery) -> TrustedKeys:
        return TrustedKeys(keys=await bank.trusted())

    @on_call(broker, API.LEDGER_REPORT, "ledger")
    @api_call(MonthReportQuery, gate)
    async def report(call: MonthReportQuery, actor: Actor) -> MonthReport:
        auth.allow(actor, REPORT_READERS, call.district)
        return await monthly.month_report(ReportStore(service.db), call, datetime.now(UTC))

    return service
