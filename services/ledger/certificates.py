"""The service certificate as a PDF in a call's reply: the figures from the ledger's own entries, the name
as intake has it (never one the caller typed), drawn by reports.render_certificate."""

import asyncio
import base64
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from contracts import ApiError
from contracts.calls import CertificateFile
from services.ledger import reports
from services.ledger.config import LedgerSettings
from services.ledger.report_store import ReportStore

# The volunteer's name as intake has it, or "" when intake does not know them.
NameOf = Callable[[str], Awaitable[str]]


def file_name(volunteer_id: str) -> str:
    return f"certificate-{re.sub(r'[^A-Za-z0-9_.-]', '_', volunteer_id)}.pdf"


def render(certificate: reports.Certificate) -> bytes:
    with tempfile.TemporaryDirectory(prefix="linli-certificate-") as folder:
        path = Path(folder) / "certificate.pdf"
        reports.render_certificate(certificate, path)
        return path.read_bytes()


class Certificates:
    def __init__(self, store: ReportStore, name_of: NameOf, settings: LedgerSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.name_of = name_of
        self.settings = settings
        self.clock = clock

    async def issue(self, volunteer_id: str, issuer: str = "") -> CertificateFile:
        entries = await self.store.volunteer_entries(volunteer_id)
        if not entries and not await self.store.known(volunteer_id):
            raise ApiError("not_found", "no volunteer with this id", {"volunteer_id": volunteer_id})
        if not any(reports.text(e, "kind") in reports.EARNING_KINDS for e in entries):
            raise ApiError("nothing_to_certify", "the ledger has no service hours for this volunteer yet")
        issuer = issuer or self.settings.certificate_issuer
        try:
            reports.require_glyphs(reports.cjk_font("sans"), [issuer])
        except reports.NoChineseFont:
            raise ApiError("invalid_request", "the issuer has characters the certificate cannot print", {
                "errors": [{"loc": ["issuer"], "type": "unprintable", "msg": "characters the font lacks"}]}) from None
        name = await self.name_of(volunteer_id)
        if not name:
            raise ApiError("not_found", "intake has no name for this volunteer", {"volunteer_id": volunteer_id})
        certificate = reports.certificate(volunteer_id, name, entries, await self.store.ratings_for(entries),
                                          self.clock(), issuer)
        try:
            pdf = await asyncio.to_thread(render, certificate)  # a second of drawing must not stall other calls
        except reports.NoChineseFont:
            raise ApiError("unprintable", "the volunteer's name has characters the certificate cannot print; "
                           "an operator can correct the name") from None
        if len(pdf) > self.settings.certificate_max_bytes:
            raise ApiError("too_large", "the certificate is larger than a reply may carry",
                           {"bytes": len(pdf), "limit": self.settings.certificate_max_bytes})
        return CertificateFile(file_name=file_name(volunteer_id), pdf_base64=base64.b64encode(pdf).decode("ascii"),
                               bytes=len(pdf), name=certificate.name, hours=certificate.total.hours,
                               services=certificate.total.services)
