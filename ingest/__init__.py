"""MQTT capture into the lake: decode, deduplicate, commit, then acknowledge."""

from ingest.decode import DecodedBatch, Decoder, RawMessage
from ingest.dedup import Deduplicator
from ingest.ingestor import Ingestor

__all__ = ["DecodedBatch", "Decoder", "Deduplicator", "Ingestor", "RawMessage"]
