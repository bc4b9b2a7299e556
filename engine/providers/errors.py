"""What can go wrong when talking to a provider, sorted by what the caller must do next.

The classes say how to react, not which HTTP status came back:
  * `RateLimited`: wait `retry_after` seconds, then continue; not a failure.
  * `InsufficientCredits`: pause the campaign until the wallet is topped up.
  * `AuthenticationFailed`: fix the key or the IP allow-list; nothing else will work.
  * `RequestRejected`: this request is wrong (400/404/409/422); others may be fine.
  * `TransientError`: the request never left, or the provider answered 5xx,
    which both references ask clients to retry with backoff.
  * `OutcomeUnknown`: the request may have been accepted (timeout or reset after it
    was sent); retrying blindly is how campaigns send twice.

None of them derives from a builtin such as `TimeoutError`: a generic
`except TimeoutError` that retries must not catch `OutcomeUnknown`.

Every error carries the provider name and the HTTP status (None when no answer
came). Messages are built from the provider's answer and never from our request,
so an API key cannot leak into an exception text.
"""

from __future__ import annotations

from engine.errors import CampaignError


class ProviderError(CampaignError):
    """A provider call did not succeed."""

    def __init__(self, provider: str, message: str, status: int | None = None) -> None:
        # args mirror the constructor so errors pickle (Celery results, multiprocessing).
        super().__init__(provider, message, status)
        self.provider = provider
        self.message = message
        self.status = status

    def __str__(self) -> str:
        where = f"{self.provider} HTTP {self.status}" if self.status is not None else self.provider
        return f"{where}: {self.message}"


class RateLimited(ProviderError):
    """The account's request rate or daily quota is exhausted; wait `retry_after` seconds."""

    def __init__(self, provider: str, message: str, status: int | None = 429, retry_after: float = 1.0) -> None:
        super().__init__(provider, message, status)
        self.args = (provider, message, status, retry_after)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{super().__str__()} (retry after {self.retry_after:g} s)"


class InsufficientCredits(ProviderError):
    """The wallet cannot pay for the request."""


class AuthenticationFailed(ProviderError):
    """The API key is missing or wrong, or this machine's IP is not allowed."""


class RequestRejected(ProviderError):
    """The provider refused this request as malformed or invalid; the message is the provider's."""


class TransientError(ProviderError):
    """The provider did not act on the request; it is safe to send it again."""


class OutcomeUnknown(ProviderError):
    """The request was sent but no answer came back; the provider may have accepted it."""
