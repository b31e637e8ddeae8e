import time

from contracts import API, Envelope
from contracts.calls import Balance, BalanceQuery
from contracts.events import HoursLogged, RequestRated, VolunteerRegistered
from services.common.bus import api_call, on_call, on_event
from services.common.runtime import Service
from services.ledger import handlers
from services.ledger.config import LedgerSettings
from services.ledger.store import LedgerStore


def build(settings: LedgerSettings | None = None) -> Service:
    settings = settings or LedgerSettings()
    service = Service.create("ledger", settings.bus)
    broker, outbox, inbox = service.broker, service.outbox, service.inbox
    store = LedgerStore(service.db)
    tariff = handlers.Tariff(settings.points_per_hour, settings.category_rates)
    service.on_start.append(store.ensure_indexes)

    @on_event(broker, settings.bus, "ledger", "hours.logged")
    async def hours_logged(event: Envelope[HoursLogged]) -> None:
        async with inbox.once("ledger-hours", event) as first:
            if first:
                # The entry id is derived from the event id: a repeat finds the stored entry and re-sends its event.
                entry = await store.add_entry(handlers.credit_entry(event, tariff, time.time()))
                balance = await store.points_through(entry["volunteer_id"], entry["posted"])
                await outbox.send([handlers.earned_event(entry, balance)])

    @on_event(broker, settings.bus, "ledger", "request.rated")
    async def request_rated(event: Envelope[RequestRated]) -> None:
        async with inbox.once("ledger-ratings", event) as first:
            if first:
                await store.add_rating(handlers.rating(event))  # keyed on the request id

    @on_event(broker, settings.bus, "ledger", "volunteer.registered")
    async def volunteer_registered(event: Envelope[VolunteerRegistered]) -> None:
        async with inbox.once("ledger-volunteers", event) as first:
            if first:
                await store.open_account(handlers.account(event))  # keyed on the volunteer id

    @on_call(broker, API.LEDGER_BALANCE, "ledger")
    @api_call(BalanceQuery)
    async def balance(call: BalanceQuery) -> Balance:
        ratings, stars = await store.rating_totals(call.volunteer_id)
        return handlers.balance_view(call.volunteer_id, await store.totals(call.volunteer_id), ratings, stars)

    return service
