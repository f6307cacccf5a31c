"""Adapters that plug a sandbox into agent frameworks (optional extras; each module
imports its framework itself, so `import sandbox` never needs one)."""
