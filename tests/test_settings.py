"""Settings: every broken file gives its exact FILE:LINE: errors, through `mailgw check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailgw.config import settings
from mailgw.config.yamlfile import ConfigError
from tests.conftest import REPO

BAD = Path(__file__).parent / "data" / "bad_settings"


@pytest.mark.parametrize("case", sorted(p.stem for p in BAD.glob("*.yaml")))
def test_broken_settings_report_file_and_line(case):
    expected = (BAD / f"{case}.expected-error").read_text().splitlines()
    with pytest.raises(ConfigError) as err:
        settings.load(str(BAD / f"{case}.yaml"))
    got = [str(p).replace(str(BAD) + "/", "") for p in err.value.problems]
    assert got == expected


def test_mailgw_check_prints_problems_and_exits_1():
    case = BAD / "07-limits.yaml"
    run = subprocess.run([sys.executable, "-m", "mailgw", "check", "--config", str(case)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1
    assert f"{case}:14: 'message_size' must be a size" in run.stderr


def test_demo_settings_are_valid():
    run = subprocess.run([sys.executable, "-m", "mailgw", "check", "--config", str(REPO / "gateway.yaml")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    s = settings.load(str(REPO / "gateway.yaml"))
    assert [l.role for l in s.listeners] == ["mx", "relay", "submission"]
    assert s.queue.retry_min == 300 and s.queue.retry_max == 4000 and s.queue.lifetime == 5 * 86400
    assert s.routes["local"].kind == "maildir" and s.spool == str(REPO / "var" / "spool")


def test_usage_error_exits_2():
    run = subprocess.run([sys.executable, "-m", "mailgw", "no-such-command"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2


@pytest.mark.parametrize("value,seconds", [("30s", 30), ("5m", 300), ("4h", 14400), ("5d", 432000), ("200ms", 0.2), (90, 90)])
def test_durations(value, seconds):
    assert settings.parse_duration(value) == pytest.approx(seconds)


def test_dns_answers_file_gives_a_file_resolver(tmp_path, ca, password_hash):
    import asyncio

    from mailgw.app import load_context
    from mailgw.config.resolver import FileResolver
    from tests.conftest import write_config

    (tmp_path / "answers.zone").write_text('sel._domainkey.example.vn. IN TXT "v=DKIM1; p=abc"\n')
    path = write_config(tmp_path, 2526, ca, password_hash, dns={"answers": "answers.zone", "timeout": "2s"})
    ctx, _ = load_context(path)
    assert isinstance(ctx.resolver, FileResolver)
    assert ctx.settings.dns.timeout == 2.0
    assert asyncio.run(ctx.resolver.txt("sel._domainkey.example.vn")) == [b"v=DKIM1; p=abc"]


def test_bad_dns_answers_line_is_reported_with_its_line(tmp_path, ca, password_hash):
    from mailgw.app import load_context
    from mailgw.config.yamlfile import ConfigError
    from tests.conftest import write_config

    (tmp_path / "answers.zone").write_text("# ok\nexample.vn. IN CNAME other.vn.\n")
    path = write_config(tmp_path, 2526, ca, password_hash, dns={"answers": "answers.zone"})
    with pytest.raises(ConfigError) as e:
        load_context(path)
    assert f"{tmp_path / 'answers.zone'}:2: expected TXT" in str(e.value)


def test_config_before_the_command_is_honoured(tmp_path):
    """`mailgw --config F check` checks F, as `mailgw check --config F` does; a later one wins."""
    bad = BAD / "12-zero-durations.yaml"
    before = subprocess.run([sys.executable, "-m", "mailgw", "--config", str(bad), "check"], capture_output=True, text=True, cwd=tmp_path)
    assert before.returncode == 1 and f"{bad}:14: 'retry_min' must be above 0" in before.stderr
    after = subprocess.run([sys.executable, "-m", "mailgw", "--config", str(bad), "check", "--config", str(REPO / "gateway.yaml")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
