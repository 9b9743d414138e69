"""Reaching one Xen host: its xenstore, its toolstack, its QEMUs (see ARCHITECTURE.md)."""
