"""xenkit: a toolkit for Xen hosts, tested against a real Xen 4.17."""

__version__ = "0.1.0"
