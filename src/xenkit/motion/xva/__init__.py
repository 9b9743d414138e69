"""XVA, the format ``xe vm-export`` writes and ``xe vm-import`` reads: a tar whose
first member ``ova.xml`` holds the VM's XenAPI records, then each VDI cut into
checksummed 1 MiB chunks (export_vsn 2)."""

from xenkit.motion.xva.chunks import Checksum
from xenkit.motion.xva.errors import BadXva
from xenkit.motion.xva.reader import read_xva
from xenkit.motion.xva.writer import write_xva

__all__ = ["BadXva", "Checksum", "read_xva", "write_xva"]
