"""The pointcount warehouse: DuckDB schema (SQL migrations), idempotent loads, aggregation by sketch union,
alarms and the read-only analyst snapshot. See docs/warehouse.md."""

from warehouse.aggregate import ResultError
from warehouse.store import MigrationError, Warehouse, WarehouseError

__all__ = ["MigrationError", "ResultError", "Warehouse", "WarehouseError"]
