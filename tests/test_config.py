"""config.yaml validation: every error located by file, line and column."""

from __future__ import annotations

import pytest

from daemon import cli, config
from daemon.yamlfile import FileProblems


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(FileProblems) as info:
        config.load(path)
    return [str(p) for p in info.value.problems]


def test_defaults_and_durations(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("windows:\n  bucket: 5m\n  lateness: 1h30m\nmqtt:\n  max_payload: 64KiB\n")
    cfg = config.load(path)
    assert cfg.windows.bucket == 300 and cfg.windows.lateness == 5400
    assert cfg.mqtt.max_payload == 65536
    assert config.load(None).mqtt.prefix == "crisisd"


def test_bad_duration_unknown_key_and_bad_value_are_all_reported(tmp_path):
    found = problems(tmp_path, "windows:\n  bucket: 15 minutes\nmqtt:\n  prot: 1883\n"
                               "detection:\n  sensitivity: loud\n")
    assert any(":2:11: windows.bucket: expected a duration" in p for p in found)
    assert any(":4:3: mqtt.prot: unknown setting" in p for p in found)
    assert any(":6:16: detection.sensitivity" in p for p in found)
    assert len(found) == 3


def test_yaml_syntax_error_is_located(tmp_path):
    [found] = problems(tmp_path, "windows:\n  bucket: [1m\n")
    assert "config.yaml:3:" in found and "invalid YAML" in found


def test_validate_command_exits_1_and_prints_locations(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("incidents:\n  quiet: soon\n")
    assert cli.main(["validate", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:10: incidents.quiet: expected a duration" in err
    (tmp_path / "playbooks").mkdir()
    path.write_text(f"incidents:\n  quiet: 2h\nplaybooks:\n  dir: {tmp_path / 'playbooks'}\n")
    assert cli.main(["validate", "-c", str(path)]) == 0


def test_shipped_config_and_playbooks_validate(capsys):
    assert cli.main(["validate", "-c", "config.yaml"]) == 0
    assert "ok" in capsys.readouterr().out


def test_holidays_are_dates_and_a_date_that_does_not_exist_is_located(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("detection:\n  holidays: [2026-12-25, '2027-01-01']\n")
    assert [d.isoformat() for d in config.load(path).detection.holidays] == [
        "2026-12-25", "2027-01-01"]
    [found] = problems(tmp_path, "detection:\n  holidays:\n    - 2026-12-25\n    - 2026-13-01\n")
    assert "config.yaml:4:7: invalid YAML: '2026-13-01' is not a date" in found
    [found] = problems(tmp_path, "detection:\n  holidays: [christmas]\n")
    assert "config.yaml:2:14: detection.holidays.0:" in found and "date" in found
    path.write_text("detection:\n  holidays_by_brand:\n    'acme-us*': [2026-11-26]\n")
    by_brand = config.load(path).detection.holidays_by_brand
    assert {k: [d.isoformat() for d in v] for k, v in by_brand.items()} == {
        "acme-us*": ["2026-11-26"]}
    [found] = problems(tmp_path, "detection:\n  holidays_by_brand:\n    acme: [thanksgiving]\n")
    assert "config.yaml:3:12: detection.holidays_by_brand.acme.0:" in found
