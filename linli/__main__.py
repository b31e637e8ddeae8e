import sys

from linli.cli import main

sys.exit(main())
