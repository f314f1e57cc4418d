"""The library the entry points in `recipes/` share; nothing here is run as a script (see docs/architecture.md)."""
