"""The auditors' and admins' web console (`mailgw console`): a process of its own, beside the SMTP edge.

- ``accounts.py`` reads the accounts file (argon2 hashes, roles, scopes);
- ``guard.py`` keeps sessions, CSRF tokens and the login throttle;
- ``app.py`` is the Starlette application: its pages call the audit, queue and
  policy code the command line uses, and record every look in the access log.
"""
