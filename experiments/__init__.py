"""Thin entry points: each parses flags, builds configs and calls the bnjax library."""
