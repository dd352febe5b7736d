"""Configuration: defaults, validation with FILE:key: reason, environment overrides, listener scope."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engaged.config import ConfigError, effective_smtpapi, load_config, parse_hostport, render_config


def test_defaults_apply_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {})
    assert config.smtp.listen == ["127.0.0.1:2525"]
    assert config.smtpapi.open_tracking_enabled is False
    assert config.smtpapi.click_tracking_enabled is False
    assert config.smtpapi.tracking_link_expiry == 31536000
    assert config.engagement_tracker.max_metadata_len == 1000
    assert config.delivery.mode == "capture"


def test_engaged_toml_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "engaged.toml").write_text("[smtp]\nmax_recipients = 7\n")
    assert load_config(None, {}).smtp.max_recipients == 7


def test_wrong_type_names_file_key_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[smtp]\nmax_message_size = "big"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert info.value.problems == [f"{path}:smtp.max_message_size: Expected `int`, got `str`"]


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[smtpapi]\nopen_tracking = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert info.value.problems == [f"{path}:smtpapi.open_tracking: unknown key"]


def test_cross_field_problems_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[smtp]\nlisten = ["nowhere"]\nrelay_networks = ["10.0.0.0/33"]\ntls_cert_file = "x.pem"\n'
        '[smtpapi]\nclick_tracking_scheme = "ftp"\n[delivery]\nmode = "relay"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    keys = [line.split(":")[1] for line in info.value.problems]
    assert "smtp.listen[0]" in keys
    assert "smtp.relay_networks[0]" in keys
    assert "smtp.tls_cert_file" in keys
    assert "smtpapi.click_tracking_scheme" in keys
    assert "delivery.relay" in keys


def test_environment_overrides_file_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[smtp]\nmax_recipients = 7\n")
    env = {
        "ENGAGED_SMTP_MAX_RECIPIENTS": "9",
        "ENGAGED_SMTPAPI_CLICK_TRACKING_ENABLED": "true",
        "ENGAGED_ENGAGEMENT_TRACKER_MAX_METADATA_LEN": "50",
        "ENGAGED_SMTP_LISTEN": "127.0.0.1:1025, 127.0.0.1:1026",
        "ENGAGED_DATA_DIR": str(tmp_path / "d"),
    }
    config = load_config(str(path), env)
    assert config.smtp.max_recipients == 9
    assert config.smtpapi.click_tracking_enabled is True
    assert config.engagement_tracker.max_metadata_len == 50
    assert config.smtp.listen == ["127.0.0.1:1025", "127.0.0.1:1026"]
    assert config.data_dir == str(tmp_path / "d")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"ENGAGED_SMTP_MAX_RECIPIENTS": "lots"})
    assert info.value.problems[0].startswith("ENGAGED_SMTP_MAX_RECIPIENTS:smtp.max_recipients:")


def test_listener_override_beats_global_which_beats_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[smtp]\nlisten = ["127.0.0.1:2525", "127.0.0.1:2526"]\n'
        "[smtpapi]\nopen_tracking_enabled = true\n"
        '[smtp.overrides."127.0.0.1:2526"]\nclick_tracking_enabled = true\nopen_tracking_enabled = false\n'
    )
    config = load_config(str(path), {})
    plain = effective_smtpapi(config, "127.0.0.1:2525")
    special = effective_smtpapi(config, "127.0.0.1:2526")
    assert (plain.open_tracking_enabled, plain.click_tracking_enabled) == (True, False)
    assert (special.open_tracking_enabled, special.click_tracking_enabled) == (False, True)
    assert special.tracking_domain == "localhost:8080"


def test_override_for_an_unknown_listener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[smtp.overrides."127.0.0.1:9999"]\nclick_tracking_enabled = true\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert "names no address in smtp.listen" in info.value.problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:25", ("127.0.0.1", 25)), ("[::1]:2525", ("::1", 2525)), (":8080", ("0.0.0.0", 8080))],
)
def test_hostport_parsing(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_check_config_prints_settings_and_fails_on_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[smtpapi]\nclick_tracking_enabled = true\n")
    result = subprocess.run([sys.executable, "-m", "engaged", "check-config", "--config", str(good)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "click_tracking_enabled = true" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nmax_recipients = -1\n")
    result = subprocess.run([sys.executable, "-m", "engaged", "check-config", "--config", str(bad)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert f"{bad}:smtp.max_recipients: must be a positive number" in result.stderr


def test_an_inbound_listener_needs_a_bounce_domain_and_domains_must_be_names(tmp_path: Path) -> None:
    path = tmp_path / "engaged.toml"
    path.write_text('[inbound]\nlisten = ["127.0.0.1:0"]\ndomains = ["Not A Domain"]\nwait_for_copy = -1\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    text = str(info.value)
    assert "inbound.bounce_domain: an inbound listener needs the bounce domain" in text
    assert "inbound.domains[0]: 'Not A Domain' is not a lower-case domain name" in text
    assert "inbound.wait_for_copy: must be from 0 to 86400 seconds" in text
    path.write_text('[inbound]\nlisten = ["127.0.0.1:0"]\nbounce_domain = "bounces.example.com"\n'
                    "[unsubscribe]\nlist_unsubscribe = true\n[suppression]\nenabled = false\n")
    config = load_config(str(path))
    assert config.inbound.bounce_domain == "bounces.example.com" and config.unsubscribe.list_unsubscribe
    assert not config.suppression.enabled
    assert config.inbound.wait_for_copy == 600.0


def test_accept_headers_names_only_known_peers(tmp_path: Path) -> None:
    path = tmp_path / "engaged.toml"
    path.write_text('[smtpapi]\naccept_headers = ["sendgrid", "mandrill"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:smtpapi.accept_headers[1]: ") and "'mandrill'" in problem


def test_webhook_entries_are_checked_by_load_config_so_check_config_and_serve_agree(tmp_path: Path) -> None:
    path = tmp_path / "engaged.toml"
    path.write_text('[[webhooks]]\nname = "a"\ntarget = "https://hooks.example/a"\nevents = ["delivery", "nope"]\n'
                    '[[webhooks]]\nname = "a"\ntarget = "https://hooks.example/b"\ncustom_headers = {Host = "x"}\n'
                    '[[webhooks]]\nname = "c"\ntarget = "https://hooks.example/c"\ntimeout = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), environ={})
    assert [problem.split(": ", 1)[0] for problem in caught.value.problems] == [
        f"{path}:webhooks[0].events", f"{path}:webhooks[1].name", f"{path}:webhooks[1].custom_headers",
        f"{path}:webhooks[2].timeout"]
    result = subprocess.run([sys.executable, "-m", "engaged", "check-config", "--config", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stderr.splitlines() == caught.value.problems


def test_a_listen_entry_may_be_a_table_with_its_own_proxy_protocol(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[smtp]\nproxy_protocol = true\nlisten = ["127.0.0.1:2525", '
        '{ address = "0.0.0.0:2526", proxy_protocol = false }, { address = "0.0.0.0:2527" }]\n'
        '[smtp.overrides."0.0.0.0:2526"]\nclick_tracking_enabled = true\n'
    )
    config = load_config(str(path), {})
    assert [(entry.address, entry.proxy_protocol) for entry in config.smtp.listeners()] == [
        ("127.0.0.1:2525", True), ("0.0.0.0:2526", False), ("0.0.0.0:2527", True)]
    assert config.smtp.addresses() == ["127.0.0.1:2525", "0.0.0.0:2526", "0.0.0.0:2527"]
    rendered = tmp_path / "rendered.toml"
    rendered.write_text(render_config(config))
    assert load_config(str(rendered), {}).smtp == config.smtp


def test_the_array_of_tables_form_and_the_environment_work_too(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[smtp.listen]]\naddress = "127.0.0.1:2526"\nproxy_protocol = true\n')
    assert [e.proxy_protocol for e in load_config(str(path), {}).smtp.listeners()] == [True]
    env = {"ENGAGED_SMTP_LISTEN": '["127.0.0.1:25", { address = "127.0.0.1:26", proxy_protocol = true }]'}
    assert [e.proxy_protocol for e in load_config(None, env).smtp.listeners()] == [False, True]


@pytest.mark.parametrize(
    ("listen", "key"),
    [('[{ address = "nowhere" }]', "smtp.listen[0].address"),
     ('[{ proxy_protocol = true }]', "smtp.listen[0]"),
     ('[{ address = "127.0.0.1:25", proxy = true }]', "smtp.listen[0].proxy"),
     ('["127.0.0.1:25", { address = "127.0.0.1:25" }]', "smtp.listen[1].address")],
)
def test_bad_listen_tables_name_the_entry(tmp_path: Path, listen: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[smtp]\nlisten = {listen}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    assert f":{key}:" in info.value.problems[0], info.value.problems
