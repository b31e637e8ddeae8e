import asyncio

from services.common.runtime import configure_logging
from services.matcher.app import build

configure_logging("matcher")
asyncio.run(build().run_until_signalled())
