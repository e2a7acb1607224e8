"""Settings of the action server, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ActionSettings:
    # SQLAlchemy URL of the demo shop database (orders, repairs, returns).
    shop_db_url: str
    # Days after delivery during which a return is accepted.
    return_window_days: int
    # Years of warranty from the delivery date.
    warranty_years: int


def load_settings() -> ActionSettings:
    default_db = PROJECT_ROOT / "var" / "shop.db"
    return ActionSettings(
        shop_db_url=os.environ.get("SHOP_DB_URL", f"sqlite:///{default_db}"),
        return_window_days=int(os.environ.get("RETURN_WINDOW_DAYS", "30")),
        warranty_years=int(os.environ.get("WARRANTY_YEARS", "2")),
    )
