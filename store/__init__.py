"""The base layer: schema, settings, errors, lake access and the query sandbox.

``store`` imports none of ``ingest``, ``api``, ``publish`` or ``corridorhub``.
"""
