"""Errors, paths and process helpers shared by every layer."""
