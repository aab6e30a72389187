"""pantau ("to watch over"): streaming anomaly detection for Indonesian election result tallies."""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def demo_data() -> Path:
    """The 1,000 real DKI Jakarta Sirekap documents shipped with pantau (MIT, see data/NOTICE.md)."""
    return Path(str(resources.files("pantau") / "data" / "raw_ppwp_dki_1000.jsonl.gz"))
