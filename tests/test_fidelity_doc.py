"""docs/fidelity.md: every row has its own ID, every ID the code and tests cite is a row, and
every lmdisp-side `file:line` it cites points inside a file of this repository."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "fidelity.md").read_text()
ROW_ID = re.compile(r"^\| ([A-Z][0-9]+) \|", re.M)
CITE = re.compile(r"(?:docs/fidelity\.md|fidelity) ((?:[A-Z][0-9]+(?:-[0-9]+)?(?:, )?)+)")


def test_row_ids_are_unique():
    ids = ROW_ID.findall(DOC)
    assert len(ids) > 60 and len(ids) == len(set(ids))


def test_every_cited_id_is_a_row():
    ids = set(ROW_ID.findall(DOC))
    files = [*REPO.glob("lmdisp/**/*.py"), *REPO.glob("cli/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("bench/*.py"),
             *REPO.glob("configs/**/*.yaml"), REPO / "Makefile", REPO / "README.md"]
    cited = {}
    for f in files:
        for group in CITE.findall(f.read_text(errors="ignore")):
            for ref in group.split(", "):
                first, _, last = ref.partition("-")
                names = [first] if not last else [f"{first[0]}{n}" for n in range(int(first[1:]), int(last) + 1)]
                for name in names:
                    cited.setdefault(name, f.relative_to(REPO))
    assert cited, "no code or test cites docs/fidelity.md"
    missing = {k: str(v) for k, v in cited.items() if k not in ids}
    assert not missing, missing


def test_lmdisp_side_file_line_references_exist():
    refs = re.findall(r"`((?:lmdisp|cli|configs|tests|bench)/[\w./-]+|Makefile|pyproject\.toml):(\d+)`", DOC)
    assert len(refs) > 50
    for path, line in refs:
        f = REPO / path
        assert f.is_file(), path
        assert 1 <= int(line) <= len(f.read_text().splitlines()), f"{path}:{line}"
