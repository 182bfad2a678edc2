"""The HTTP service (FastAPI) over the lake's committed snapshots."""
