import sys

from lb.cli import main

sys.exit(main())
