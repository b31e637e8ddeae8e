import asyncio

from services.common.runtime import configure_logging
from services.intake.app import build

configure_logging("intake")
asyncio.run(build().run_until_signalled())
