"""Produced envelopes against the DMTF schemas (DSP8023 1.1.1 and 2.0.1).

The schemas import each other and the W3C and CIM schemas by their
``http://`` locations (2.0.1 for everything, 1.1.1's CIM files for
``common.xsd``, 1.1.1 itself ``xml.xsd`` from a directory that lacks it).
Every one is mapped to the copy in the corpus (``dmtf-*``, and ``xenadmin/``
for ``common.xsd`` of 2.0.1, ``xmldsig-core-schema.xsd`` and
``xenc-schema.xsd``); the XML namespace and XML Encryption 1.1 come with
xmlschema itself. ``allow="local"`` makes any other remote fetch an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import xmlschema

from tests.conftest import shared_dir
from tests.unit.test_motion_ovf_envelope import SPECS, files_for
from xenkit.motion.model import Losses
from xenkit.motion.ovf import OvfVersion, envelope_xml

SCHEMA = shared_dir() / "corpus" / "ovf" / "schema"
_CIM = (
    "VirtualSystemSettingData",
    "ResourceAllocationSettingData",
    "StorageAllocationSettingData",
    "EthernetPortAllocationSettingData",
    "BootConfigSetting",
    "BootSourceSetting",
)


def _mapper(version_dir: str) -> Callable[[str], str]:
    here = SCHEMA / version_dir
    common = (
        here / "common.xsd" if (here / "common.xsd").exists() else SCHEMA / "xenadmin/common.xsd"
    )
    table = {
        "http://schemas.dmtf.org/wbem/wscim/1/common.xsd": common,
        "http://www.w3.org/2001/xml.xsd": SCHEMA / "xenadmin/xml.xsd",
        "http://www.w3.org/TR/2002/REC-xmldsig-core-20020212/xmldsig-core-schema.xsd": SCHEMA
        / "xenadmin/xmldsig-core-schema.xsd",
        "http://www.w3.org/TR/2002/REC-xmlenc-core-20021210/xenc-schema.xsd": SCHEMA
        / "xenadmin/xenc-schema.xsd",
    }
    for name in _CIM:
        table[f"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_{name}.xsd"] = (
            here / f"CIM_{name}.xsd"
        )

    def mapped(uri: str) -> str:
        local: Path | None = table.get(uri)
        return str(local) if local is not None else uri

    return mapped


def load_schemas() -> dict[str, xmlschema.XMLSchema]:
    """DSP8023 by OVF version, built from the corpus copies only."""
    return {
        "1.0": xmlschema.XMLSchema(
            str(SCHEMA / "dmtf-1.1.1/dsp8023_1.1.1.xsd"),
            uri_mapper=_mapper("dmtf-1.1.1"),
            allow="local",
        ),
        "2.0": xmlschema.XMLSchema(
            str(SCHEMA / "dmtf-2.0.1/dsp8023_2.0.1.xsd"),
            uri_mapper=_mapper("dmtf-2.0.1"),
            allow="local",
        ),
    }


@pytest.fixture(scope="module")
def schemas() -> dict[str, xmlschema.XMLSchema]:
    return load_schemas()


def assert_valid(schema: xmlschema.XMLSchema, xml: bytes) -> None:
    errors = [str(e).splitlines()[0:4] for e in schema.iter_errors(xml.decode())]
    assert errors == []


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_envelopes_validate(
    schemas: dict[str, xmlschema.XMLSchema], kind: str, version: OvfVersion
) -> None:
    spec = SPECS[kind]()
    xml = envelope_xml(spec, files_for(spec), version=version, losses=Losses())
    assert_valid(schemas[version], xml)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_metadata_only_envelopes_validate(
    schemas: dict[str, xmlschema.XMLSchema], kind: str
) -> None:
    assert_valid(schemas["1.0"], envelope_xml(SPECS[kind](), [], losses=Losses()))


def test_the_schema_is_strict_enough_to_catch_disorder(
    schemas: dict[str, xmlschema.XMLSchema],
) -> None:
    """rasd children out of alphabetical order are invalid in 1.x: the
    validation above would notice a writer that got the order wrong."""
    spec = SPECS["pv"]()
    xml = envelope_xml(spec, [], losses=Losses())
    swapped = xml.replace(
        b"<rasd:Description>Number of virtual CPUs</rasd:Description>\n"
        b"        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>",
        b"<rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>\n"
        b"        <rasd:Description>Number of virtual CPUs</rasd:Description>",
    )
    assert swapped != xml
    assert list(schemas["1.0"].iter_errors(swapped.decode()))
