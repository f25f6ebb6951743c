"""Helpers shared by the graph modules (basetypes, timestamps, id arithmetic)."""
