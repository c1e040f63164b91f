"""Benchmark sections of the README are replaced between their markers, and only there."""
import pytest

from benchmarks import report


def test_update_readme_replaces_only_its_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- begin speed -->\nold figures\n<!-- end speed -->\nafter\n"
                      "<!-- begin other -->\nkept\n<!-- end other -->\n")
    report.update_readme("speed", "new figures\n", str(readme))
    assert readme.read_text() == ("intro\n<!-- begin speed -->\nnew figures\n<!-- end speed -->\nafter\n"
                                  "<!-- begin other -->\nkept\n<!-- end other -->\n")


def test_a_missing_section_is_an_error_naming_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="<!-- begin speed -->"):
        report.update_readme("speed", "figures", str(readme))
    assert readme.read_text() == "no markers\n"
