import sys

from avatar4d.cli import main

sys.exit(main())
