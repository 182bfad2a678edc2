"""What the routes of one app share: settings, lake, keys, the SQL runner, metrics, the compaction lock.

Built by ``create_app`` and kept on ``app.state``; nothing here is global, so two apps (tests) never share
state.  The API shares nothing with ingest but the lake and the status files ingest writes beside it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fastapi import Request

from api.ingest_rates import IngestRates
from api.metrics import ApiMetrics
from api.runner import QueryRunner
from store.keys import KeyStore
from store.lake import Lake
from store.settings import Settings


@dataclass
class Services:
    settings: Settings
    lake: Lake
    keys: KeyStore
    runner: QueryRunner
    metrics: ApiMetrics
    rates: IngestRates = field(default_factory=IngestRates)
    compaction: threading.Lock = field(default_factory=threading.Lock)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
