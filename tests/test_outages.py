"""Outages of PostgreSQL and Redis are answers, not errors (issue 9, item 3).

Everything here runs on a private PostgreSQL and a private Redis (tests/outage_helpers.py) that are
stopped and started for real; the machine's own servers stay up for the rest of the suite.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from outage_helpers import _port_open

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_private_instances_stop_and_start_for_real(private_postgres: Any, private_redis: Any) -> None:
    url = private_postgres.url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        for _ in range(2):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            private_postgres.stop()
            private_redis.stop()
            assert not private_postgres.running and not private_redis.running
            with pytest.raises(sa.exc.OperationalError), engine.connect():
                pass
            assert _port_open(5432) and _port_open(6379)  # the machine's own servers are untouched
            private_postgres.start()
            private_redis.start()
            assert private_postgres.running and private_redis.running
    finally:
        engine.dispose()
