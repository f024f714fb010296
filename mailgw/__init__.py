"""mailgw: an SMTP gateway for the exchange of official documents."""

__version__ = "0.1.0"
