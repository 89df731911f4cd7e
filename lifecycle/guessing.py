"""How guessable a secret is, by zxcvbn (common passwords, repeats, sequences, keyboard
patterns, dictionary words): one judge for staff passwords and the secret key."""

from __future__ import annotations

import threading
from typing import Any

from zxcvbn import zxcvbn

#: zxcvbn judges at most this many characters (its own limit); a longer text is judged by
#: its beginning.
JUDGED = 72
# zxcvbn keeps the words of the current call in a module-level dictionary: one call at a time.
_judging = threading.Lock()


def judge(text: str, words: list[str] | None = None) -> dict[str, Any]:
    """zxcvbn's verdict on ``text`` (``score`` 0–4, ``guesses_log10``, ``feedback``,
    ``sequence``), with ``words`` as guesses an attacker would try first."""
    with _judging:
        return zxcvbn(text[:JUDGED], user_inputs=words or [])  # type: ignore[no-any-return]
