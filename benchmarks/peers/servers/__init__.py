"""Peer servers; each file runs inside its peer's own virtual environment, not the project's."""
