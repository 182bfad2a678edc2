"""MQTT capture into the lake: decode, deduplicate, commit, then acknowledge."""
