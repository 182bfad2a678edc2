"""What ``corridorhub demo`` adds after capture: a first open-data release and the catalog page to see it.

:func:`publish_first_release` publishes every default dataset for yesterday's Japan-time date (the day
the demo fleet's history was replayed into) with the ordinary privacy settings (k, dominance share,
complementary suppression; nothing is relaxed for the demo) but one: a day closes at midnight here
(``publish_lateness_h`` 0), where a hub waits 48 h for late uploads before publishing a day once.  A
small fleet leaves many cells under k: the release is still made (``allow_empty``), and the summary says
how many cells were suppressed and why, so that a newcomer sees the real rule at work rather than a
weakened one.

:class:`CatalogServer` runs the HTTP service (``api.create_app``) under uvicorn in a thread on a loopback
port, so the catalog page (``/``) and the public ``/v1/datasets`` routes are there while the demo runs.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType

import uvicorn

from api import create_app
from corridorhub.demo_fleet import yesterday_jst
from publish.datasets import default_ids
from publish.release import ReleaseResult, publish_release
from store.errors import CorridorHubError
from store.lake import Lake
from store.settings import Settings


def _suppressed(result: ReleaseResult) -> int:
    p = result.privacy
    earlier = int(p.extra.get("cells_suppressed_earlier_releases", 0))
    return p.cells_suppressed_k + p.cells_suppressed_dominance + p.cells_suppressed_complementary + earlier


def publish_first_release(lake: Lake, settings: Settings, echo: Callable[[str], None]) -> list[ReleaseResult]:
    """Release every default dataset for yesterday (JST); one line per dataset, failures reported, not
    raised."""
    day = yesterday_jst()
    settings = replace(settings, publish_lateness_h=0.0)
    echo(
        f"publishing a first open-data release for {day} (JST) into {settings.releases} (the demo closes a "
        "day at midnight; a hub waits publish_lateness_h = 48 h for late uploads, then publishes a day "
        "once):"
    )
    results = []
    for dataset in default_ids(settings):
        try:
            result = publish_release(lake, dataset, day, day, settings, allow_empty=True)
        except CorridorHubError as exc:  # e.g. no data for a stream yet: say so, publish the others
            echo(f"  {dataset}: not published: {exc}")
            continue
        results.append(result)
        echo(f"  {result.describe()}")
    if any(_suppressed(r) for r in results):
        k = results[0].privacy.k
        echo(
            f"  cells seen by fewer than k={k} distinct devices (or dominated by one operator) are "
            "suppressed, never published (docs/PRIVACY.md): a short run of a small demo fleet leaves most "
            "of them; more --devices and a later --publish-after publish more cells"
        )
    return results


def _listen(host: str, port: int, *, fallback: bool) -> socket.socket:
    """A listening socket on ``port`` (0: any free port); with ``fallback``, a free one if it is taken."""
    for candidate in (port, 0) if fallback else (port,):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if fallback and exc.errno == errno.EADDRINUSE:
                continue
            raise CorridorHubError(f"Cannot listen on {host}:{candidate} for the catalog: {exc}") from None
        sock.listen(128)
        return sock
    raise CorridorHubError(f"Cannot listen on {host} for the catalog")  # pragma: no cover


class CatalogServer:
    """The HTTP service on ``host``:``port`` in a background thread (a context manager).

    ``port`` None: ``settings.port`` (8080 unless configured), or any free port when that one is taken."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self._socket = _listen(host, settings.port if port is None else port, fallback=port is None)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="catalog-http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def __enter__(self) -> CatalogServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise CorridorHubError("The catalog's HTTP service did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._socket.close()
