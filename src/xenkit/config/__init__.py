"""The xl.cfg language of Xen 4.17: a lossless syntax tree and a typed model.

Typical use::

    from xenkit.config import ConfigFile, load_config

    cfg = ConfigFile.read("/etc/xen/web-01.cfg")
    model = load_config("/etc/xen/web-01.cfg")   # DomainConfig
    cfg.set("memory", 2048)                       # lossless edit
    cfg.write()
"""

from xenkit.config.api import check, check_file
from xenkit.config.configfile import ConfigFile
from xenkit.config.disk import DiskSpec, DiskSpecError, parse_disk_spec
from xenkit.config.errors import ConfigError, Location
from xenkit.config.findings import Finding, Severity
from xenkit.config.model import DomainConfig
from xenkit.config.vif import VifSpec, VifSpecError, parse_vif_spec


def load_config(path: str) -> DomainConfig:
    """The typed meaning of the file at ``path``; syntax errors raise ConfigError."""
    return check(ConfigFile.read(path)).config


def parse_config(text: str, source: str = "<string>") -> DomainConfig:
    return check(ConfigFile.from_text(text, source)).config


__all__ = [
    "ConfigError",
    "ConfigFile",
    "DiskSpec",
    "DiskSpecError",
    "DomainConfig",
    "Finding",
    "Location",
    "Severity",
    "VifSpec",
    "VifSpecError",
    "check",
    "check_file",
    "load_config",
    "parse_config",
    "parse_disk_spec",
    "parse_vif_spec",
]
