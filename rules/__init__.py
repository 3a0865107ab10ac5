"""The built-in rule library, shipped as package data (``processor.builtin_rules``)."""
