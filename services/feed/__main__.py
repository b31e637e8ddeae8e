import asyncio

from services.common.runtime import configure_logging
from services.feed.app import build

configure_logging("feed")
asyncio.run(build().run_until_signalled())
