"""DKIM for the gateway: signing outbound mail last before queueing, verifying inbound mail before policy.

The pipeline calls only what is imported here::

    headers = sign(message, keys)                    # bytes to put on top of message
    report = await verify(message, resolver)          # DkimReport
    value = authentication_results(hostname, report)
"""

from mailgw.dkim.canon import ED25519_SHA256, RSA_SHA256
from mailgw.dkim.keys import DkimKeyError, SigningKey, key_warnings, keygen, load_key, published_key_problem, txt_record
from mailgw.dkim.results import (
    DkimReport,
    SignatureResult,
    authentication_results,
    pinned_ok,
    strip_forged_authentication_results,
)
from mailgw.dkim.signer import OVERSIGNED, DkimSigningError, sign
from mailgw.dkim.verifier import MAX_SIGNATURES, verify

__all__ = [
    "ED25519_SHA256",
    "MAX_SIGNATURES",
    "OVERSIGNED",
    "RSA_SHA256",
    "DkimKeyError",
    "DkimReport",
    "DkimSigningError",
    "SignatureResult",
    "SigningKey",
    "authentication_results",
    "key_warnings",
    "keygen",
    "load_key",
    "pinned_ok",
    "published_key_problem",
    "sign",
    "strip_forged_authentication_results",
    "txt_record",
    "verify",
]
