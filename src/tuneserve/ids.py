"""Public ids: a prefix and a random part (file-..., ftjob-..., ftevent-..., ftckpt-...)."""

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    """OpenAI timestamps are whole Unix seconds."""
    return int(time.time())
