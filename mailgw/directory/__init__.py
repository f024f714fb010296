"""The official directory: who is local and official, and its publication."""
