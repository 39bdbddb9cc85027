"""Client API keys as text: their form, their display prefix and the hash the ledger stores."""

import hashlib
import re
import secrets

KEY_PREFIX = "isk-"
KEY_RANDOM_CHARS = 40
KEY_DISPLAY_CHARS = 12  # "isk-" and 8 random characters: enough to tell keys apart
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def key_hash(plaintext: str) -> str:
    """sha256 hex of a client key. Keys carry 240 random bits, so no salt or slow hash is needed."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_key_plaintext() -> str:
    # token_urlsafe(30) is exactly 40 url-safe characters (30 bytes in base64).
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_CHARS * 3 // 4)
