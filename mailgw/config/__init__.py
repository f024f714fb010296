"""Settings, the line-aware YAML layer, the DNS resolver settings and answers file."""
