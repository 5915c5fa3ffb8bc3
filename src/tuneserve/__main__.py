import sys

from tuneserve.cli import main

sys.exit(main())
