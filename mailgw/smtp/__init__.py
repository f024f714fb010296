"""The SMTP edge: sessions in, replies out (edge, the DATA stream, TLS, logins)."""
