"""Label audit: which given labels of a dataset are wrong, ranked, with a suggested label and a report.

:func:`audit_scores` (:mod:`visprompt.audit.score`) scores samples from frozen image features; :mod:`.run`
audits a run directory's training samples (frozen features computed once and cached);
:mod:`.report` writes ``audit.csv``, ``audit.html`` and the corrected label file. No CLI code here.
"""

from visprompt.audit.score import AuditResult, audit_scores, estimate_error_count

__all__ = ["AuditResult", "audit_scores", "estimate_error_count"]
