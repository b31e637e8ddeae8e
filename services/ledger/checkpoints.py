"""Checkpoints anchor the chains: the ledger signs every chain head and publishes the signature, so a chain
rewritten and rehashed in the database afterwards no longer matches what was published. Pure functions."""

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts import Envelope, new_event
from contracts.events import LedgerCheckpoint
from services.ledger import signing
from services.ledger.chain import Problem, canonical

Heads = dict[str, list[Any]]  # volunteer id -> [seq, hash of the entry at that seq]
SIGNED = ("district", "at", "volunteers", "entries", "root")


def heads_of(accounts: Iterable[Mapping[str, Any]]) -> Heads:
    return {str(a["_id"]): [int(a["seq"]), str(a["head"])] for a in accounts if int(a.get("seq", 0)) > 0}


def root_of(heads: Mapping[str, list[Any]]) -> str:
    return hashlib.sha256(canonical({"heads": [[v, *heads[v]] for v in sorted(heads)]})).hexdigest()


def signed_part(doc: Mapping[str, Any]) -> dict[str, Any]:
    part = {k: doc[k] for k in SIGNED}
    # One spelling of the time, whether it was read from the database or from the published event.
    at = part["at"] if isinstance(part["at"], datetime) else datetime.fromisoformat(part["at"])
    part["at"] = at.astimezone(UTC).isoformat(timespec="microseconds")
    return part


def checkpoint_id(root: str) -> str:
    return f"cp-{root[:32]}"


def new_checkpoint(key: Ed25519PrivateKey, district: str, at: datetime, heads: Heads) -> dict[str, Any]:
    root = root_of(heads)
    doc: dict[str, Any] = {"district": district, "at": at.isoformat(), "volunteers": len(heads),
                           "entries": sum(seq for seq, _ in heads.values()), "root": root}
    public = signing.public_pem(key)
    return {"_id": checkpoint_id(root), **doc, "heads": heads, "signature": signing.sign(key, signed_part(doc)),
            "key_id": signing.key_id(public)}


def checkpoint_event(doc: Mapping[str, Any]) -> Envelope[Any]:
    return new_event(
        LedgerCheckpoint(checkpoint_id=doc["_id"], district=doc["district"], at=datetime.fromisoformat(doc["at"]),
                         volunteers=doc["volunteers"], entries=doc["entries"], root=doc["root"],
                         signature=doc["signature"], key_id=doc["key_id"]),
        source="linli/ledger", district=doc["district"], subject=doc["_id"], correlationid=doc["_id"],
        event_id=doc["_id"], time=datetime.fromisoformat(doc["at"]),
    )


def check_against_chains(checkpoint: Mapping[str, Any], hashes: Mapping[str, Mapping[int, str]]) -> list[Problem]:
    """Every head the checkpoint signed must still be the entry at that seq: an entry edited and its chain
    rehashed leaves a different hash there."""
    problems = []
    for volunteer_id, (seq, signed_hash) in sorted(checkpoint["heads"].items()):
        now = hashes.get(volunteer_id, {}).get(seq)
        if now != signed_hash:
            what = "is missing" if now is None else "has another hash"
            problems.append(Problem(volunteer_id, "", seq, f"the entry at seq {seq} {what} than checkpoint "
                                    f"{checkpoint['_id']} of {checkpoint['at']} signed: the chain was rewritten"))
    return problems


def check_checkpoint(checkpoint: Mapping[str, Any], public: str) -> list[Problem]:
    """A stored checkpoint is whole: its heads give its root, and the ledger's key signed it."""
    where = f"checkpoint {checkpoint['_id']}"
    if root_of(checkpoint["heads"]) != checkpoint["root"]:
        return [Problem(where, "", None, "its heads do not give its root: the checkpoint was edited")]
    if not signing.verify(public, signed_part(checkpoint), checkpoint["signature"]):
        return [Problem(where, "", None, "its signature does not verify with the ledger's public key")]
    return []


def check_anchor(anchor: Mapping[str, Any], stored: Mapping[str, Any] | None, public: str | None) -> list[Problem]:
    """A checkpoint as it was published (kept by someone outside the database) against the database's copy."""
    where = f"checkpoint {anchor['checkpoint_id']} ({anchor['at']})"
    if public is not None and not signing.verify(public, signed_part(anchor), anchor["signature"]):
        return [Problem(where, "", None, "the published checkpoint is not signed by the given public key")]
    if stored is None:
        return [Problem(where, "", None, "was published but is missing from the database")]
    if stored["root"] != anchor["root"]:
        return [Problem(where, "", None, "the database holds other heads than were published: chains and "
                        "checkpoint were rewritten")]
    return []
