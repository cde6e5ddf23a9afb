import sys

from lessor.cli import main

sys.exit(main())
