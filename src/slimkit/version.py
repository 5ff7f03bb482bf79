"""The package version, in a module of its own so that any module may read it without importing slimkit."""
__version__ = "0.1.0"
