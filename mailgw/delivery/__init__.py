"""Delivery: the worker (retries, DSNs), transports (smtp, mx, maildir), DSNs."""
