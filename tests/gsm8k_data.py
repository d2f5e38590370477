"""Where tests find GSM8K: $PRESRM_GSM8K_DIR, else ../shared/data/gsm8k beside the repo."""

import os
from pathlib import Path

GSM8K_DIR = Path(os.environ.get("PRESRM_GSM8K_DIR")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k")
