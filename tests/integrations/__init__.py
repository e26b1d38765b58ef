"""Tests of drift.integrations (live recording inside training)."""
