"""rollout: feature-flagged, gradual rollout orchestrator for PostgreSQL schema changes."""

__version__ = "0.1.0"
