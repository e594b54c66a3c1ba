"""The audit pipeline: event model, redaction, hash chain, sinks, spool and verification.

``app.py`` builds one :class:`AuditLog` per worker process and hands it to the pipeline as
the :class:`sidecar.stages.AuditLog` stage and, via ``audit_log.emit``, to every stage that
takes a :class:`sidecar.stages.EventEmitter`.
"""

from sidecar.audit.log import AuditLog, AuditStartError

__all__ = ["AuditLog", "AuditStartError"]
