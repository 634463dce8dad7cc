import sys

from medtl.cli import main

sys.exit(main())
