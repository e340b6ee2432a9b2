"""The README stays a front door and the user docs stay user docs (the site itself: `make docs`, strict)."""

from __future__ import annotations

from util import ROOT

USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_readme_is_short_and_keeps_the_set_up_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    for command in ("make setup ", "make test ", "pip install ."):
        assert any(line.startswith(command) for line in lines), command


def test_user_docs_name_no_tests_and_no_file_users_do_not_have() -> None:
    for path in USER_DOCS:
        text = path.read_text(encoding="utf-8")
        assert "::test_" not in text, path
        assert "METHODS" not in text, path
    for path in (ROOT / "nlpcli").rglob("*.py"):
        assert "METHODS" not in path.read_text(encoding="utf-8"), path
