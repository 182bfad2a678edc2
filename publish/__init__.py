"""Aggregation, anonymization and export of open datasets."""
