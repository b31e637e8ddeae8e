"""Short codes people can say aloud and type on a phone keypad: six characters, none easily confused.

A code is derived from the full id it stands for, so the same id always gets the same code. Two ids can
share a code; the service that issues codes keeps a unique index on them and lengthens a code that is
taken (`short_code(id, 7)`).
"""

import hashlib

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # no 0/O, 1/I/L or U/V-like pairs read aloud as one


def short_code(full_id: str, length: int = 6) -> str:
    number = int.from_bytes(hashlib.sha256(full_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(out)


def normalize(text: str) -> str:
    """What a person typed, as the code it means: upper case, without spaces or dashes."""
    return text.strip().upper().replace(" ", "").replace("-", "")


def looks_like_code(text: str) -> bool:
    code = normalize(text)
    return 4 <= len(code) <= 10 and all(c in ALPHABET for c in code)
