"""Data files of store.geo (the corridor zones GeoJSON); a package so that setuptools ships them."""
