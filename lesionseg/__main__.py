import sys

from lesionseg.cli.main import main

sys.exit(main())
