"""Adapters that record runs from training frameworks (imported only when used)."""
