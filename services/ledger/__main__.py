import asyncio

from services.common.runtime import configure_logging
from services.ledger.app import build

configure_logging("ledger")
asyncio.run(build().run_until_signalled())
