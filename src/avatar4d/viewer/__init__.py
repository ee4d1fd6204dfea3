"""The browser viewer."""
