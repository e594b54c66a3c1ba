"""Denials of the signature stage (step 6). Each ``code`` is the stable reason word."""

from __future__ import annotations

from sidecar.problem import SidecarError


class SignatureError(SidecarError):
    """Root of the signature stage's denials."""

    status, code, title, stage = 401, "signature_invalid", "Invalid signature", "signature"
    detail = "The request signature is not valid."


class SignatureMissing(SignatureError):
    code, title = "signature_missing", "Signature required"
    detail = "This route requires an HTTP message signature (RFC 9421)."


class SignatureInvalid(SignatureError):
    """Malformed fields, unknown or foreign key, wrong algorithm, insufficient coverage,
    missing nonce, or a signature that does not verify."""


class SignatureExpired(SignatureError):
    """``created`` older than ``max_age`` or beyond ``clock_skew`` in the future, or past
    ``expires``."""

    code, title = "signature_expired", "Signature expired"
    detail = "The request signature is outside its validity window."


class SignatureReplayed(SignatureError):
    code, title = "signature_replayed", "Signature replayed"
    detail = "The request signature has already been used."


class DigestMismatch(SidecarError):
    status, code, title, stage = 400, "digest_mismatch", "Digest mismatch", "signature"
    detail = "The Content-Digest does not match the request body."


class NonceStoreUnavailable(SidecarError):
    status, code, title, stage = 503, "signature_unavailable", "Service unavailable", "signature"
    detail = "Signed requests cannot be checked for replay right now."
