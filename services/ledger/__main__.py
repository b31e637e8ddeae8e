import asyncio
import sys

from services.common.runtime import configure_logging

if sys.argv[1:2] == ["verify"]:
    from services.ledger.verify import main

    sys.exit(main(sys.argv[2:]))

from services.ledger.app import build  # noqa: E402

configure_logging("ledger")
asyncio.run(build().run_until_signalled())
