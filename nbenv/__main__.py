import sys

from nbenv.cli import main

sys.exit(main())
