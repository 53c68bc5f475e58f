"""strato.conf: typed options, defaults, references, and errors that name the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from strato.config import OPTIONS, ConfigError, load, sample


def test_defaults_and_references(tmp_path: Path) -> None:
    conf_file = tmp_path / "strato.conf"
    conf_file.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nbind_port = 9999\n")
    conf = load(conf_file)
    assert conf.DEFAULT.bind_port == 9999
    assert conf.DEFAULT.state_path == tmp_path
    assert conf.database.connection == f"sqlite:///{tmp_path}/strato.db"
    assert conf.token.key_repository == tmp_path / "fernet-keys"
    assert conf.jobs.workers == 2 and conf.DEFAULT.debug is False
    assert conf.public_endpoint == "http://127.0.0.1:9999"


@pytest.mark.parametrize("text,needle", [
    ("[DEFAULT]\nbind_port = eighty\n", "[DEFAULT] bind_port"),
    ("[DEFAULT]\nbind_port = 70000\n", "[DEFAULT] bind_port"),
    ("[DEFAULT]\ndebug = maybe\n", "[DEFAULT] debug"),
    ("[jobs]\nlease_seconds = -1\n", "[jobs] lease_seconds"),
    ("[token]\nexpiration = 0\n", "[token] expiration"),
    ("[database]\nconection = sqlite://\n", "unknown option [database] conection"),
    ("[nosuch]\nx = 1\n", "unknown option [nosuch] x"),
    ("[database]\nconnection = $nowhere/x\n", "$nowhere"),
    ("not an ini file", "strato.conf"),
])
def test_bad_values_name_the_option(tmp_path: Path, text: str, needle: str) -> None:
    conf_file = tmp_path / "strato.conf"
    conf_file.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(conf_file)
    assert needle in str(err.value)


def test_sample_documents_every_option_and_parses(tmp_path: Path) -> None:
    text = sample({("DEFAULT", "state_path"): str(tmp_path)})
    for opt in OPTIONS:
        assert f"#{opt.name} = " in text or f"{opt.name} = " in text
        assert opt.help.split(":")[0][:30] in text.replace("\n# ", " ")
    conf_file = tmp_path / "strato.conf"
    conf_file.write_text(text)
    assert load(conf_file).DEFAULT.state_path == tmp_path


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load(tmp_path / "nope.conf")


def test_options_of_a_section_are_contiguous() -> None:
    """The template writes a section header each time the section changes: options of one
    section split by another would give a config file configparser refuses."""
    from strato.config import OPTIONS

    seen: list[str] = []
    for opt in OPTIONS:
        if not seen or seen[-1] != opt.section:
            assert opt.section not in seen, f"[{opt.section}] options are split"
            seen.append(opt.section)
