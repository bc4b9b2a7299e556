"""Deterministic fates: what happens to a message is a function of the seed and the address.

A test can therefore predict, for any contact list, exactly how many messages
the sandbox will report delivered, failed or expired, and which devices take RCS,
without reading the sandbox's memory.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from engine.sandbox.config import SandboxConfig

Fate = Literal["delivered", "failed", "expired"]


def fraction(seed: int, salt: str, address: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, address)."""
    digest = hashlib.blake2b(f"{seed}:{salt}:{address}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def fate(config: SandboxConfig, address: str) -> Fate:
    """Delivery outcome of a message to `address` (phones in digits without `+`, emails lower-cased)."""
    value = fraction(config.seed, "fate", address)
    if value < config.delivered_share:
        return "delivered"
    if value < config.delivered_share + config.failed_share:
        return "failed"
    return "expired"


def rcs_capable(config: SandboxConfig, address: str) -> bool:
    return fraction(config.seed, "rcs", address) < config.rcs_share


def whatsapp_window_open(config: SandboxConfig, address: str) -> bool:
    return fraction(config.seed, "wa-window", address) < config.whatsapp_window_share
