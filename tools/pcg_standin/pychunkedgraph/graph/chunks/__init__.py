"""Chunk id arithmetic."""
