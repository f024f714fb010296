"""The Vietnamese document classifier's parts: first-page readers and vn/ (text, numbers, secrecy)."""
