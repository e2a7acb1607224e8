"""The demo shop's database: orders (seeded by the project), repair and return requests.

SQLAlchemy Core, so the same code runs on the default SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from actions.shop import Order, OrderStatus

SEED_FILE = Path(__file__).resolve().parent / "data" / "orders_seed.json"

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("number", String(16), primary_key=True),
    Column("customer_name", String(120), nullable=False),
    Column("items", Text, nullable=False),  # JSON list of product names
    Column("status", String(32), nullable=False),
    Column("placed_on", Date, nullable=False),
    Column("shipped_on", Date),
    Column("delivered_on", Date),
    Column("estimated_delivery", Date),
    Column("tracking_url", String(300)),
)

service_requests = Table(
    "service_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # repair | return
    Column("order_number", String(16), nullable=False),
    Column("sender_id", String(128), nullable=False),
    # The user message that completed the form: a retried action call
    # (Rasa retries on timeouts) finds its first request instead of a twin.
    Column("request_key", String(200), nullable=False),
    Column("device", String(200)),
    Column("issue", Text),
    Column("return_reason", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("kind", "request_key", name="uq_service_request_key"),
)

REFERENCE_PREFIX = {"repair": "RP", "return": "RT"}


@dataclass(frozen=True)
class ServiceRequest:
    kind: str
    order_number: str
    sender_id: str
    request_key: str
    device: str | None = None
    issue: str | None = None
    return_reason: str | None = None


def reference_for(kind: str, request_id: int) -> str:
    return f"{REFERENCE_PREFIX[kind]}-{request_id:06d}"


def _row_to_order(row: Any) -> Order:
    return Order(
        number=row.number,
        customer_name=row.customer_name,
        items=tuple(json.loads(row.items)),
        status=OrderStatus(row.status),
        placed_on=row.placed_on,
        shipped_on=row.shipped_on,
        delivered_on=row.delivered_on,
        estimated_delivery=row.estimated_delivery,
        tracking_url=row.tracking_url,
    )


def seed_rows(seed: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    """Seed entries give dates as days before `today`, so the demo never goes stale."""

    def days_ago(entry: dict[str, Any], key: str) -> date | None:
        value = entry.get(key)
        return None if value is None else today - timedelta(days=int(value))

    return [
        {
            "number": entry["number"],
            "customer_name": entry["customer_name"],
            "items": json.dumps(entry["items"]),
            "status": OrderStatus(entry["status"]).value,
            "placed_on": days_ago(entry, "placed_days_ago"),
            "shipped_on": days_ago(entry, "shipped_days_ago"),
            "delivered_on": days_ago(entry, "delivered_days_ago"),
            "estimated_delivery": days_ago(entry, "eta_days_ago"),
            "tracking_url": entry.get("tracking_url"),
        }
        for entry in seed
    ]


class ShopDatabase:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> ShopDatabase:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(create_engine(url))

    def create_and_seed(self, today: date, seed_file: Path = SEED_FILE) -> int:
        """Create missing tables; seed orders into an empty table. Returns rows seeded."""
        metadata.create_all(self._engine)
        with self._engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(orders)).scalar_one():
                return 0
            rows = seed_rows(json.loads(seed_file.read_text(encoding="utf-8")), today)
            conn.execute(insert(orders), rows)
            return len(rows)

    def get_order(self, number: str) -> Order | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.number == number)).first()
        return None if row is None else _row_to_order(row)

    def cancel_order(self, number: str) -> bool:
        """Cancel only while still processing; the WHERE makes check-and-set atomic."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(orders)
                .where(orders.c.number == number, orders.c.status == OrderStatus.PROCESSING.value)
                .values(status=OrderStatus.CANCELLED.value)
            )
        return result.rowcount == 1

    def create_service_request(self, request: ServiceRequest) -> str:
        """Store the request once and return its reference (the same one on a retry)."""
        values = {
            "kind": request.kind,
            "order_number": request.order_number,
            "sender_id": request.sender_id,
            "request_key": request.request_key,
            "device": request.device,
            "issue": request.issue,
            "return_reason": request.return_reason,
            "created_at": datetime.now(timezone.utc),
        }
        try:
            with self._engine.begin() as conn:
                new_id = conn.execute(insert(service_requests).values(**values)).inserted_primary_key[0]
        except IntegrityError:
            with self._engine.connect() as conn:
                new_id = conn.execute(
                    select(service_requests.c.id).where(
                        service_requests.c.kind == request.kind,
                        service_requests.c.request_key == request.request_key,
                    )
                ).scalar_one()
        return reference_for(request.kind, int(new_id))

    def service_requests_for(self, order_number: str) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(service_requests)
                .where(service_requests.c.order_number == order_number)
                .order_by(service_requests.c.id)
            ).mappings()
            return [dict(row) for row in rows]
