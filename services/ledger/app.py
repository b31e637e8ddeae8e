from contracts import API, Envelope
from contracts.calls import (
    AdjustBalance,
    Balance,
    BalanceQuery,
    ConfirmService,
    DistrustDistrict,
    ImportStatement,
    LedgerEntry,
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
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.ledger import handlers
from services.ledger.bank import Bank
from services.ledger.config import LedgerSettings
from services.ledger.store import LedgerStore


def build(settings: LedgerSettings | None = None) -> Service:
    settings = settings or LedgerSettings()
    service = Service.create("ledger", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    bank = Bank(LedgerStore(service.db), outbox, settings)
    service.on_start.append(bank.start)
    service.loops.append(bank.sweep_forever)

    @on_event(broker, settings.bus, "ledger", "hours.logged")
    async def hours_logged(event: Envelope[HoursLogged]) -> None:
        # The inbox keeps a repeat from publishing points.earned again (the stream would drop it, but not
        # every subscriber reads the stream).
        async with inbox.once("ledger-hours", event) as first:
            if first:
                # Entry ids derive from the event id: a repeat finds the stored entries and re-sends their event.
                credit, bonuses = await bank.credit(event)
                await outbox.send([handlers.earned_event(credit, bonuses)])

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
    @api_call(AdjustBalance)
    async def adjust(call: AdjustBalance) -> LedgerEntry:
        return handlers.entry_view(await bank.adjust(call))  # keyed on the idempotency key

    @on_call(broker, API.LEDGER_CONFIRM, "ledger")
    @api_call(ConfirmService)
    async def confirm(call: ConfirmService) -> LedgerEntry:
        return handlers.entry_view(await bank.confirm(call))  # one confirmation per request

    @on_call(broker, API.LEDGER_REVIEW, "ledger")
    @api_call(ReviewQuery)
    async def review(call: ReviewQuery) -> ReviewQueue:
        return ReviewQueue(items=await bank.review(call.limit))

    @on_call(broker, API.LEDGER_CATALOG_PUT, "ledger")
    @api_call(PutRewardItem)
    async def catalog_put(call: PutRewardItem) -> RewardItem:
        return await bank.put_reward(call)

    @on_call(broker, API.LEDGER_CATALOG_LIST, "ledger")
    @api_call(RewardCatalogQuery)
    async def catalog_list(call: RewardCatalogQuery) -> RewardCatalog:
        return RewardCatalog(items=await bank.rewards(call.include_inactive))

    @on_call(broker, API.LEDGER_REDEEM, "ledger")
    @api_call(Redeem)
    async def redeem(call: Redeem) -> Redemption:
        return handlers.redemption_view(await bank.redeem(call))  # keyed on the idempotency key

    @on_call(broker, API.LEDGER_STATEMENT, "ledger")
    @api_call(StatementQuery)
    async def statement(call: StatementQuery) -> SignedStatement:
        return await bank.statement(call.volunteer_id)

    @on_call(broker, API.LEDGER_IMPORT_STATEMENT, "ledger")
    @api_call(ImportStatement)
    async def import_statement(call: ImportStatement) -> LedgerEntry:
        return handlers.entry_view(await bank.import_statement(call))  # once per statement id

    @on_call(broker, API.LEDGER_PUBLIC_KEY, "ledger")
    @api_call(PublicKeyQuery)
    async def public_key(call: PublicKeyQuery) -> PublicKey:
        public, key_id = bank.public_key()
        return PublicKey(district=settings.district, public_key=public, key_id=key_id)

    @on_call(broker, API.LEDGER_TRUST_PUT, "ledger")
    @api_call(TrustDistrict)
    async def trust_put(call: TrustDistrict) -> TrustedKey:
        return await bank.trust(call)  # the same key again changes nothing

    @on_call(broker, API.LEDGER_TRUST_REMOVE, "ledger")
    @api_call(DistrustDistrict)
    async def trust_remove(call: DistrustDistrict) -> TrustedKey:
        return await bank.distrust(call)

    @on_call(broker, API.LEDGER_TRUST_LIST, "ledger")
    @api_call(TrustedKeysQuery)
    async def trust_list(call: TrustedKeysQuery) -> TrustedKeys:
        return TrustedKeys(keys=await bank.trusted())

    return service
