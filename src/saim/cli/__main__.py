import sys

from saim.cli.main import main

sys.exit(main())
