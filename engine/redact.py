"""Masking for anything that reaches a log line: phone numbers, email addresses, keys.

Logs travel further than the database (log shippers, support tickets), so they
carry enough to recognise a recipient, never enough to contact one.
"""

from __future__ import annotations

import re


def mask_phone(number: str) -> str:
    """`+919876543210` -> `+91******3210`."""
    digits = number.lstrip("+")
    if len(digits) <= 6:
        return "*" * len(number)
    plus = "+" if number.startswith("+") else ""
    return f"{plus}{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def mask_email(address: str) -> str:
    """`jane.doe@example.com` -> `j***@example.com`."""
    local, at, domain = address.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_address(address: str) -> str:
    return mask_email(address) if "@" in address else mask_phone(address)


#: Phone numbers (also written with spaces, dashes or brackets) and email addresses inside free text.
ADDRESSES_IN_TEXT = re.compile(r"\+?\d[\d ()-]{5,}\d|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def mask_addresses_in(text: str) -> str:
    """`text` (an error, a provider's answer) with every phone number and email address in it masked."""
    return ADDRESSES_IN_TEXT.sub(lambda found: mask_address(found.group()), text)


def mask_secret(secret: str) -> str:
    """Enough to tell two keys apart in a support conversation, never enough to use one."""
    return f"{secret[:3]}…({len(secret)} chars)" if len(secret) > 8 else "***"


def mask_url_password(url: str) -> str:
    """`postgresql://app:s3cret@db/campaigns` -> `postgresql://app:***@db/campaigns`; a URL without a password
    is returned as it is."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not (sep and at) or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
