import sys

from corewarding.cli import main

sys.exit(main())
