import asyncio

from services.care.app import build
from services.common.runtime import configure_logging

configure_logging("care")
asyncio.run(build().run_until_signalled())
