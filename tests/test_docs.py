"""The documents that are generated from the code are current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_reference_is_current():
    """docs/configuration.md is what scripts/config_reference.py writes from config.py now."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_configuration_reference_names_every_field():
    import dataclasses
    import typing

    from semigen.config import Config
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        for field in dataclasses.fields(sections[section.name]):
            assert f"| `{section.name}.{field.name}` |" in text
