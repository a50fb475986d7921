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


def section(text: str, heading: str) -> str:
    """The body of a Markdown section, from `heading` to the next heading of its level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n") + len(heading) + 1
    end = text.find(f"\n{level} ", start)
    return text[start:] if end < 0 else text[start:end]


def numbers(text: str) -> list[str]:
    """Every number written in `text` (2, 0.9, 77.17, −0.20 and +2.0 as 2, 0.9, 77.17, 0.20
    and 2.0), Markdown link targets left out."""
    import re
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.findall(r"(?<![\w.])\d+(?:[.,]\d+)*", text)


def test_every_figure_in_the_readme_status_is_a_figure_of_the_benchmarks_summary():
    """README's Status may only say what a current row of BENCHMARKS.md's summary says, so that
    the two cannot drift apart."""
    status = section((ROOT / "README.md").read_text(encoding="utf-8"), "## Status")
    summary = section((ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"), "## Summary")
    table = "\n".join(line for line in summary.splitlines() if line.startswith("|"))
    in_table = set(numbers(table))
    found = numbers(status)
    assert len(found) >= 3, "the Status says no figure"
    missing = [n for n in found if n not in in_table]
    assert not missing, f"figures in README's Status that no summary row holds: {missing}"


def test_the_status_check_finds_a_figure_the_summary_does_not_hold():
    assert numbers("level (77.17 ± 0.62 % against −0.20; +2.0 points) [a](B.md#x-1)") == [
        "77.17", "0.62", "0.20", "2.0"]
    text = "# T\n\n## Status\n\nround +2.36\n\n## Next\n\n| a | 2.3 |\n"
    assert section(text, "## Status").strip() == "round +2.36"
    assert "2.36" not in numbers(section(text, "## Next"))
