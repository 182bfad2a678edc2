"""The one exception hierarchy of corridorhub.

Library code raises these; the edges translate them (the CLI prints one line and exits non-zero,
the API answers with its one JSON error shape).  An MQTT callback never raises: a bad payload is not
an exception but a quarantine row with a reason code (see ``ingest.decode``).

    CorridorHubError
    ├── ConfigError            a setting is missing or invalid (names the setting)
    ├── LakeError              the lake cannot be read or written
    │   ├── CommitError        a Delta commit failed (retried by ingest with backoff)
    │   └── TableNotFound      a stream's table does not exist yet
    ├── BrokerError            the MQTT broker cannot be reached or refused us
    ├── KeyStoreError          an API key cannot be created, found or revoked
    ├── PrivacyBudgetExhausted a release would spend more differential-privacy budget than is left
    └── QueryError             an analyst's SQL failed (bad SQL, unknown table, ...)
        ├── QueryRefused       the sandbox refused the statement (names what was refused)
        ├── QueryTimeout       the statement ran into its time limit and was stopped
        ├── QueryMemoryExceeded  it went over the memory cap of one query (store.sql_pool)
        ├── QueryWorkerLost    its worker process died from outside (the OOM killer, an operator)
        └── WorkersBusy        no SQL worker process came free in time
"""

from __future__ import annotations


class CorridorHubError(Exception):
    """Base of every error corridorhub raises on purpose."""


class ConfigError(CorridorHubError):
    """A setting is missing or invalid; the message names the setting."""


class LakeError(CorridorHubError):
    """The lake cannot be read or written."""


class CommitError(LakeError):
    """A Delta commit failed; nothing it held may be acknowledged."""


class TableNotFound(LakeError):
    """A stream's table does not exist (yet) in the lake."""


class BrokerError(CorridorHubError):
    """The MQTT broker cannot be reached, or refused the connection."""


class KeyStoreError(CorridorHubError):
    """An API key cannot be created, found or revoked; the message says which and why."""


class PrivacyBudgetExhausted(CorridorHubError):
    """A release would spend more epsilon than the dataset's privacy budget has left; nothing was spent."""


class QueryError(CorridorHubError):
    """An analyst's SQL could not be run."""


class QueryRefused(QueryError):
    """The SQL sandbox refused a statement; the message names what was refused."""


class QueryTimeout(QueryError):
    """The statement ran into the sandbox's time limit and was stopped."""


class QueryMemoryExceeded(QueryError):
    """The statement went over the memory cap of one query and was stopped."""


class QueryWorkerLost(QueryError):
    """The statement's worker process died from outside (the kernel's OOM killer, an operator's kill)."""


class WorkersBusy(QueryError):
    """No SQL worker process came free in time (all busy, or still starting)."""
