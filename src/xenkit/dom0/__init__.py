"""xenkit's dom0 side: what runs on the Xen host itself, from the dom0 zipapp.

Everything under this package imports only the standard library (and what
dom0 already has, such as ``xen.lowlevel``): it ships to a host as one file,
``xenkit-dom0.pyz`` (see ``xenkit.host.zipapp``).
"""
