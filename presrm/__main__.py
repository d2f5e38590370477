"""``python -m presrm``. The guard matters: vLLM starts its workers with spawn, which re-imports this module."""

import sys

from presrm.cli import main

if __name__ == "__main__":
    sys.exit(main())
