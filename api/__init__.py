"""The HTTP service (FastAPI) over the lake's committed snapshots: ``create_app(settings)``."""

from api.app import create_app

__all__ = ["create_app"]
