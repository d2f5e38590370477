import sys

from presrm.cli import main

sys.exit(main())
