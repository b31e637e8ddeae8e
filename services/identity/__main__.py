import asyncio

from services.common.runtime import configure_logging
from services.identity.app import build

configure_logging("identity")
asyncio.run(build().run_until_signalled())
