"""VM snapshots of running xl domains (the seed's "VM Snapshots" project).

The engine runs in dom0 (it ships in the dom0 zipapp); ``xenkit snapshot`` on
this machine drives it on any host. Standard library only.
"""

from xenkit.snapshot.model import Disk, DiskSnapshot, Snapshot

__all__ = ["Disk", "DiskSnapshot", "Snapshot"]
