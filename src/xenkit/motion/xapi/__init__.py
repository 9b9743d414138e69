"""The XenAPI directions of motion: to-xapi (create a VM in a pool, stream its
disks into an SR) and from-xapi (an xl.cfg and disk images from a pool's VM).

Typical use::

    from xenkit.motion.xapi import Credentials, PoolTarget, to_xapi, from_xapi

    target = PoolTarget("https://pool-master", Credentials.resolve("root"))
    result = to_xapi(spec, target, open_disk=open_reader, sr="Local storage")
    export = from_xapi("web-01", target, Path("out"), disk_format="vhd")

The records, :func:`vm_record_from_spec` and :func:`spec_from_vm_record`, need
no pool: their field mapping is :mod:`xenkit.motion.xenapi_record`, which XVA
(whose ``ova.xml`` holds the same records) shares.
"""

from xenkit.motion.xapi.from_xapi import FromXapiResult, WriterFactory, from_xapi
from xenkit.motion.xapi.http import HttpOptions, TransferFailed
from xenkit.motion.xapi.pool import NetworkMap
from xenkit.motion.xapi.records import (
    spec_from_vm_record,
    vbd_record,
    vdi_record,
    vif_record,
    vm_record_from_spec,
)
from xenkit.motion.xapi.session import (
    Credentials,
    PoolUnreachable,
    XapiError,
    XapiFailure,
    XapiRefused,
    XapiSession,
    open_session,
)
from xenkit.motion.xapi.to_xapi import PoolTarget, RolledBack, ToXapiResult, to_xapi

__all__ = [
    "Credentials",
    "FromXapiResult",
    "HttpOptions",
    "NetworkMap",
    "PoolTarget",
    "PoolUnreachable",
    "RolledBack",
    "ToXapiResult",
    "TransferFailed",
    "WriterFactory",
    "XapiError",
    "XapiFailure",
    "XapiRefused",
    "XapiSession",
    "from_xapi",
    "open_session",
    "spec_from_vm_record",
    "to_xapi",
    "vbd_record",
    "vdi_record",
    "vif_record",
    "vm_record_from_spec",
]
