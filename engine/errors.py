"""The engine's one exception hierarchy.

Every error the engine raises on purpose derives from `CampaignError`, so the
CLI can turn any of them into one clear line and a non-zero exit instead of a
traceback. Provider errors live in `engine.providers.errors` and derive from
`ProviderError` here.
"""

from __future__ import annotations


class CampaignError(Exception):
    """Base of every error the engine raises on purpose; its text is meant for the user."""


class ConfigurationError(CampaignError):
    """A setting is missing or wrong; the message names the setting."""


class InvalidRequest(CampaignError, ValueError):
    """The caller asked for something the engine will not send (too large, malformed)."""


class BatchTooLarge(InvalidRequest):
    """A batch has more recipients than its provider takes in one call; refused before any request."""
