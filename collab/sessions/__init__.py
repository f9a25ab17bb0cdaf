"""Tumor-board sessions: the registry, who may change a session document, the record, HTTP."""
