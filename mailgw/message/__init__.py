"""The message: its value types, the reply vocabulary, address checks, the parsing fast paths."""
