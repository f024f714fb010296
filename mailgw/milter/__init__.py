"""mailgw inside an MTA that agencies already run: a Sendmail milter and a Postfix policy service.

``server``: the milter listener (``role: milter``), the whole pipeline at end of
data, its verdict returned as milter actions. ``policy``: Postfix's access-policy
delegation (``role: policy``), the envelope checks only, before DATA.
``envelope``: what both share: which of mx, relay and submission a transaction is,
and the checks of MAIL FROM and RCPT TO the SMTP edge makes.
"""
