"""Where tests find GSM8K: $PRESRM_GSM8K_DIR, else $PRESRM_DATA_DIR/gsm8k (the variable presrm's
task loader reads), else ../shared/data/gsm8k beside the repo."""

import os
from pathlib import Path


def _gsm8k_dir() -> Path:
    if os.environ.get("PRESRM_GSM8K_DIR"):
        return Path(os.environ["PRESRM_GSM8K_DIR"])
    if os.environ.get("PRESRM_DATA_DIR"):
        return Path(os.environ["PRESRM_DATA_DIR"]) / "gsm8k"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


GSM8K_DIR = _gsm8k_dir()
