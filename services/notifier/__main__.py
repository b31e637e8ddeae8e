import asyncio

from services.common.runtime import configure_logging
from services.notifier.app import build

configure_logging("notifier")
asyncio.run(build().run_until_signalled())
