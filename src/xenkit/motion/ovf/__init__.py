"""OVF envelopes and OVA packages, to and from :class:`~xenkit.motion.model.VmSpec`.

Envelopes::

    envelope_xml(spec, files, *, version="1.0", losses) -> bytes
    parse_envelope(xml, *, losses, system=None) -> (VmSpec, [OvfFileRef])

Packages::

    write_ova(spec, [(DiskRef, DiskReader)], out_path, *, disk_format="vmdk",
              version="1.0", losses, progress) -> [PackageMember]
    read_ova(path, *, sink_for, losses, progress, system=None) -> VmSpec
    read_ovf(path, *, sink_for, losses, progress, system=None) -> VmSpec

Writing converts each disk reader's image with
``xenkit.motion.disk.convert.open_writer`` (or the ``open_writer`` given)
straight into its tar member; how the ``.ovf`` and ``.mf`` still come first is
told in :mod:`.package`.

Reading hands each disk to the caller, who converts it: ``sink_for(disk,
stream)`` gets the DiskRef as the OVF describes it (``path`` is the file's
name in the package, ``format`` the image format in it, ``virtual_size`` the
capacity, 0 if the OVF does not say) and a readable, seekable binary stream of
the image (decompressed if the file is gzipped); for a blank disk the OVF asks
to create, ``stream`` is None. It returns a DiskRef saying where it put the
disk (its ``path``, ``format`` and ``virtual_size`` are taken; the device
fields stay the OVF's). The image is checked against the manifest once the
sink returns, whatever the sink read of it; a mismatch raises
:class:`ManifestMismatch` naming the file, and what the sink wrote is its to
remove. Empty CD drives stay in the VmSpec with ``path`` "".

Everything the envelope says that VmSpec cannot hold, and every guess, is
reported in the ``losses`` given, named by OVF element.
"""

from xenkit.motion.ovf.envelope import OvfFile, OvfVersion, envelope_xml, plan_slots
from xenkit.motion.ovf.manifest import ManifestMismatch
from xenkit.motion.ovf.package import (
    DiskSink,
    PackageMember,
    WriterFactory,
    read_ova,
    read_ovf,
    write_ova,
)
from xenkit.motion.ovf.reader import OvfFileRef, parse_envelope

__all__ = [
    "DiskSink",
    "ManifestMismatch",
    "OvfFile",
    "OvfFileRef",
    "OvfVersion",
    "PackageMember",
    "WriterFactory",
    "envelope_xml",
    "parse_envelope",
    "plan_slots",
    "read_ova",
    "read_ovf",
    "write_ova",
]
