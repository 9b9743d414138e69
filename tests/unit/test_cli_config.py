"""``xenkit config ...`` end to end, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xenkit.cli.main import main

GOOD = """\
# test guest
name = "guest"
type = 'pv'
kernel = "/boot/vmlinuz"
memory = 512
vcpus = 2
disk = [ 'format=raw, vdev=xvda, access=rw, target=/dev/vg/guest',
         '/srv/guest/data.qcow2,qcow2,xvdb,rw',
       ]
vif = [ 'bridge=xenbr0' ]
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "guest.cfg"
    path.write_text(GOOD)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert "xenkit" in out


def test_show_json(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, "--json", "config", "show", str(cfg))
    assert code == 0
    data = json.loads(out)
    model = data["config"]
    assert model["name"] == "guest"
    assert model["domain_type"] == "pv"
    assert model["memory"] == 512
    assert [d["libxl"]["vdev"] for d in model["disk"]] == ["xvda", "xvdb"]
    assert model["disk"][1]["libxl"]["format"] == "qcow2"
    assert model["vif"][0]["libxl"]["bridge"] == "xenbr0"
    assert data["findings"] == []


def test_show_table(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, "config", "show", str(cfg))
    assert code == 0
    assert "guest: PV, 512 MiB, 2 vCPUs" in out
    assert "xvdb" in out


def test_show_syntax_error_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("name = 'x'\nmemory = 512M\n")
    code, _, err = run(capsys, "config", "show", str(bad))
    assert code == 2
    assert f"{bad}:2:13: lexical error near `M'" in err
    assert "Traceback" not in err


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "config", "show", str(tmp_path / "nope.cfg"))
    assert code == 2
    assert "no such file" in err


def test_errors_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "--json", "config", "show", str(tmp_path / "nope.cfg"))
    assert code == 2
    assert json.loads(out)["error"]["kind"] == "UsageError"


def test_unknown_command_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "config", "frobnicate")
    assert code == 2
    assert "hint:" in err


def test_check_ok(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, "config", "check", str(cfg))
    assert code == 0
    assert "0 error(s), 0 warning(s): ok" in out


def test_check_lists_findings_by_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "v.cfg"
    path.write_text(
        "name = 'v'\ntype = 'hvm'\nmemory = 1024\nmaxmem = 512\nbootloader = 'pygrub'\n"
        "vcpu = 2\non_crash = 'explode'\n"
    )
    code, out, _ = run(capsys, "--json", "config", "check", str(path))
    assert code == 1
    findings = json.loads(out)["files"][0]["findings"]
    got = [(f["line"], f["severity"], f["code"]) for f in findings]
    assert got == [
        (4, "error", "maxmem-below-memory"),
        (5, "warning", "wrong-domain-type"),
        (6, "warning", "unknown-key"),
        (7, "error", "bad-choice"),
    ]
    assert findings[2]["hint"] == "did you mean `vcpus'?"


def test_check_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "w.cfg"
    path.write_text(GOOD + "frobs = 1\n")
    assert run(capsys, "config", "check", str(path))[0] == 0
    assert run(capsys, "config", "check", "--strict", str(path))[0] == 1


def test_check_reports_syntax_errors_of_every_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cfg: Path
) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("a = 1 2\nb =\n")
    code, out, _ = run(capsys, "--json", "config", "check", str(cfg), str(bad), "missing.cfg")
    assert code == 1
    files = json.loads(out)["files"]
    assert [f["ok"] for f in files] == [True, False, False]
    assert [f["line"] for f in files[1]["findings"]] == [1, 2]
    assert files[2]["findings"][0]["code"] == "unreadable"


def test_fmt_check_and_rewrite(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    before = cfg.read_text()
    code, out, _ = run(capsys, "config", "fmt", "--check", str(cfg))
    assert code == 1
    assert "would reformat" in out
    assert cfg.read_text() == before
    assert run(capsys, "config", "fmt", str(cfg))[0] == 0
    after = cfg.read_text()
    assert after != before
    assert 'type = "pv"' in after
    assert run(capsys, "config", "fmt", "--check", str(cfg))[0] == 0


def test_fmt_refuses_broken_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("a = [ 1\n")
    code, _, err = run(capsys, "config", "fmt", str(bad))
    assert code == 2
    assert bad.read_text() == "a = [ 1\n"
    assert "unexpected end of file" in err


def test_set_changes_only_that_line(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out, _ = run(capsys, "config", "set", str(cfg), "memory", "1024")
    assert code == 0
    assert ":5: memory = 1024" in out
    assert cfg.read_text() == GOOD.replace("memory = 512", "memory = 1024")


def test_set_new_key_appends_a_line(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    assert run(capsys, "config", "set", str(cfg), "on_crash", "preserve")[0] == 0
    assert cfg.read_text() == GOOD + 'on_crash = "preserve"\n'


def test_set_list_item_and_append(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    assert run(capsys, "config", "set", str(cfg), "vif[0]", "bridge=xenbr1")[0] == 0
    assert run(capsys, "config", "set", str(cfg), "disk[+]", "/srv/c.img,raw,xvdc,rw")[0] == 0
    text = cfg.read_text()
    assert 'vif = [ "bridge=xenbr1" ]' in text
    assert (
        "         '/srv/guest/data.qcow2,qcow2,xvdb,rw',\n"
        '         "/srv/c.img,raw,xvdc,rw",\n'
        "       ]\n"
    ) in text


def test_set_refuses_invalid_values(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, _, err = run(capsys, "config", "set", str(cfg), "memory", "lots")
    assert code == 2
    assert "not a valid number" in err
    assert cfg.read_text() == GOOD
    code, _, err = run(capsys, "config", "set", str(cfg), "disk[+]", "/x,raw,xvdc,bogus")
    assert code == 2
    assert cfg.read_text() == GOOD


def test_set_refuses_unknown_keys_without_force(
    capsys: pytest.CaptureFixture[str], cfg: Path
) -> None:
    code, _, err = run(capsys, "config", "set", str(cfg), "memroy", "1")
    assert code == 2
    assert "did you mean `memory'" in err
    assert run(capsys, "config", "set", "--force", str(cfg), "memroy", "1")[0] == 0


def test_unset(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    assert run(capsys, "config", "unset", str(cfg), "vcpus")[0] == 0
    assert cfg.read_text() == GOOD.replace("vcpus = 2\n", "")
    code, out, _ = run(capsys, "config", "unset", str(cfg), "vcpus")
    assert code == 0
    assert "was not set" in out
    assert run(capsys, "config", "unset", str(cfg), "disk[1]")[0] == 0
    assert "data.qcow2" not in cfg.read_text()
    assert "/dev/vg/guest" in cfg.read_text()
