"""The facts the stages find about a message: one typed model per fact, shared by every reader.

The fact-finding stages make these (classify: :class:`ClassificationFacts`,
attachments: :class:`AttachmentFacts`, dkim_verify: :class:`DkimFacts`, spf:
:class:`SpfFacts`, arc: :class:`ArcFacts`, dmarc: :class:`DmarcFacts`); the
policy reads them, and the exchange record (mailgw.audit.record) embeds them as
they are, so what the policy judged is what the auditor reads. Frozen: a fact,
once found, is not edited by a later stage. Fields added later get defaults, so
records already in a log keep decoding.
"""

from __future__ import annotations

import dataclasses

import msgspec

__all__ = [
    "AmbiguousPart", "ArcFacts", "ArcSet", "ArchiveFacts", "AttachedFile", "AttachmentFacts", "AuditModeHit", "ClassificationFacts",
    "DkimFacts", "DkimSignature", "DmarcFacts", "Evidence", "Facts", "PdfFacts", "SpfFacts",
]


class _Model(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Unknown fields are errors, on build as on decode: no fact is dropped without a word."""


class Evidence(_Model, frozen=True):
    cue: str
    where: str
    text: str = ""


class ClassificationFacts(_Model, frozen=True):
    """What official document the message carries: its category, number, secrecy and urgency marks."""

    category: str = "general"
    doc_type: str | None = None
    doc_number: str | None = None
    secrecy: str = "none"
    secrecy_strength: str = "none"
    declassified: bool = False
    urgency: str = "none"
    confidence: float = 0.0
    evidence: list[Evidence] = []


class DkimSignature(_Model, frozen=True):
    """One DKIM-Signature: verified on mx (result and the rest), or made by us (d, s, a only)."""

    d: str
    s: str
    a: str
    result: str | None = None
    reason: str = ""
    covers_body: bool = True
    aligned: bool = False
    key_bits: int | None = None
    b_prefix: str = ""


class DkimFacts(_Model, frozen=True):
    """What DKIM says of the message: our own signatures (``signed`` with d/s/a), or the
    verification of inbound mail (``status`` and ``aligned_pass``); None when neither applied."""

    signed: bool = False
    signatures: list[DkimSignature] = []
    status: str | None = None
    aligned_pass: bool | None = None
    from_domain: str | None = None
    error: str | None = None
    pinned: bool | None = None


class SpfFacts(_Model, frozen=True):
    """SPF (RFC 7208) of inbound mail: may the client send for the MAIL FROM domain (HELO's when MAIL FROM is <>)."""

    result: str = "none"  # pass, fail, softfail, neutral, none, permerror, temperror
    identity: str = "mailfrom"  # mailfrom | helo: which name was checked
    domain: str | None = None  # the checked domain (None: no name to check)
    reason: str = ""
    mechanism: str | None = None  # the term that matched, as published


class DmarcFacts(_Model, frozen=True):
    """DMARC (RFC 7489) of inbound mail: the From domain's published policy and whether SPF or DKIM aligned with it.

    ``policy`` is what the domain asks for this message: ``none`` when it passed or
    published ``p=none``, else ``quarantine`` or ``reject`` (``sp=`` for a subdomain,
    one step lower when ``pct=`` sampled it out); None when there is no policy to apply
    (no record, a broken record, or a DNS failure).
    """

    result: str = "none"  # pass, fail, none, temperror, permerror
    from_domain: str | None = None
    record_domain: str | None = None  # where the record was found (the From domain or its organisational domain)
    p: str | None = None  # published p=
    sp: str | None = None  # published sp=
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    policy: str | None = None
    sampled_out: bool = False  # pct= below 100 and this message fell outside it
    aligned: list[str] = []  # "spf", "dkim": the methods that passed aligned with From
    reason: str = ""
    # RFC 7489 section 7.2 PolicyOverrideType when a local policy set ``policy`` other than the
    # record asks: "trusted_forwarder" (a trusted forwarder's ARC chain vouched for the message);
    # ``override_comment`` says which sealer and what it recorded.
    override: str | None = None
    override_comment: str = ""


class ArcSet(_Model, frozen=True):
    """One ARC set (RFC 8617) of the chain, as verified: its instance, who sealed and signed it, and whether those hold."""

    instance: int
    seal_domain: str = ""  # ARC-Seal d=
    seal_selector: str = ""
    cv: str = ""  # the chain validation the sealer recorded: none, pass, fail
    seal_valid: bool = False
    signature_domain: str = ""  # ARC-Message-Signature d=
    signature_valid: bool | None = None  # checked for the latest set only (None): a later hop's changes break the older ones


class ArcFacts(_Model, frozen=True):
    """ARC (RFC 8617) of inbound mail: whether the chain of forwarders' seals holds, and who sealed it last.

    ``recorded`` is what the last sealer's ARC-Authentication-Results said it saw
    (its resinfos, comments dropped), which a trusted forwarder's word makes count:
    the dmarc stage reads it (mailgw.senderauth.arc.vouches).
    """

    result: str = "none"  # pass, fail, none, temperror (a seal's key could not be fetched now)
    reason: str = ""
    sets: int = 0  # the highest instance i=
    sealer: str | None = None  # d= of the latest ARC-Seal
    trusted: bool = False  # the sealer is one of the directory's trusted_forwarders
    recorded: list[str] = []
    chain: list[ArcSet] = []  # oldest first


class PdfFacts(_Model, frozen=True):
    javascript: bool = False
    launch: bool = False
    signatures: int = 0
    signers: list[str] = []
    trusted: bool | None = None


class ArchiveFacts(_Model, frozen=True):
    members: int = 0
    expanded: int = 0
    ratio: float = 0.0
    over_limits: bool = False
    reason: str | None = None


class AttachedFile(_Model, frozen=True):
    """One file of the message (schema: mailgw/attachments/__init__.py)."""

    name: str | None = None
    names: list[str] = []
    location: str = ""
    in_archive: bool = False
    depth: int = 0
    size: int = 0
    sha256: str | None = None
    declared_type: str | None = None
    true_type: str = "application/octet-stream"
    extension: str | None = None
    type_mismatch: bool = False
    kind: str = "other"
    executable: bool = False
    script: bool = False
    macro: bool = False
    double_extension: bool = False
    rtl_override: bool = False
    encrypted: bool = False
    # Added with the inspection of encrypted, damaged and formula-bearing files; the defaults
    # are what every file read before them was (records written earlier keep decoding).
    encryption: str | None = None
    encrypted_reason: str | None = None
    decrypted: bool = False
    damaged: str | None = None
    dde: bool = False
    pdf: PdfFacts | None = None
    archive: ArchiveFacts | None = None
    signed: bool = False
    dangerous: list[str] = []

    @property
    def signers(self) -> list[str]:
        return list(self.pdf.signers) if self.pdf else []


class AmbiguousPart(_Model, frozen=True):
    """Where and why the structure is too ambiguous to inspect (mailgw.attachments.mime.CAUSES)."""

    location: str = ""  # IMAP part number; "" for the message as a whole
    name: str | None = None  # the part's file name, if it has one
    cause: str = ""


class AttachmentFacts(_Model, frozen=True):
    count: int = 0
    total_size: int = 0
    ambiguous: bool = False
    ambiguous_reason: str | None = None
    ambiguous_parts: list[AmbiguousPart] = []  # the same, part by part, for the refusal
    signed_any: bool = False
    files: list[AttachedFile] = []


class AuditModeHit(_Model, frozen=True):
    """A rule in audit mode: what it would have done."""

    rule: str
    would: str
    tags: list[str] = []


@dataclasses.dataclass(slots=True)
class Facts:
    """What the fact stages found about one message, filled in pipeline order.

    Each field has one writer (named beside it); the policy, the stamp and
    the record read them. None means the stage did not run or found nothing
    to say (an unsigned message has ``dkim`` None until verified).
    """

    hops: int = 0  # parse: Received fields (loop detection)
    author: str | None = None  # author: the one From address, as written
    author_name: str = ""  # author: its decoded display name ("" without one)
    claimed: tuple[str, ...] = ()  # author: addresses of Sender and Resent-* fields (claims, never trusted)
    classification: ClassificationFacts | None = None  # classify
    attachments: AttachmentFacts | None = None  # attachments
    dkim: DkimFacts | None = None  # dkim_verify (inbound), dkim_sign (the signatures the gateway added)
    spf: SpfFacts | None = None  # spf (inbound only)
    arc: ArcFacts | None = None  # arc (inbound mail with ARC fields only)
    arc_sealed: str | None = None  # arc_seal: d= of the ARC set mailgw added, None when it added none
    dmarc: DmarcFacts | None = None  # dmarc (inbound only)
    authentication_results: str | None = None  # dkim_verify: the field stamp adds (with spf=, arc= and dmarc= clauses)
    forged_authentication_results: int = 0  # dkim_verify: forged fields removed
