"""The project's docs are complete on their own (issue 15, item 14): a user has the
checkout, not the team's notes. The contract lives in docs/contract.md, the README
links it, and both name every command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DJANGO_COMMANDS = ("create_backup", "restore_backup", "list_backups", "backup_status",
                   "verify_backups", "drill")


def commands(wk) -> list[str]:
    out = wk("--help").stdout
    names = re.findall(r"^  ([a-z][a-z-]+)\s", out.split("Commands:", 1)[1], re.M)
    assert {"push", "fetch", "recover", "status"} <= set(names), out
    return names


def test_no_doc_points_outside_the_project():
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
                 *sorted((REPO / "conf").rglob("*"))]:
        if path.is_file():
            assert "../shared" not in path.read_text(), path
            assert "CONTRACT.md" not in path.read_text(), path


def test_readme_links_the_contract_in_docs():
    readme = (REPO / "README.md").read_text()
    assert "(docs/contract.md)" in readme
    assert (REPO / "docs" / "contract.md").is_file()


def test_readme_command_table_lists_every_command(wk):
    readme = (REPO / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    text = "\n".join(table)
    for name in commands(wk):
        assert re.search(rf"`(walkeeper )?{re.escape(name)}\b", text), name
    django = [line for line in table if "manage.py" in line]
    for name in DJANGO_COMMANDS:
        assert any(name in line for line in django), name


def test_contract_documents_every_command_exit_code_and_json(wk):
    contract = (REPO / "docs" / "contract.md").read_text()
    synopsis = contract.split("## Commands", 1)[1].split("## Exit codes", 1)[0]
    for name in commands(wk):
        assert re.search(rf"^{re.escape(name)}\b", synopsis, re.M), name
    for name in DJANGO_COMMANDS:
        assert f"manage.py {name}" in contract
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 255 |"):
        assert code in contract
    for key in ("BACKUP_SFTP_ENABLED", "WALKEEPER_CONFIG", "type = \"s3\"", "no_archive",
                "misplaced", "`list --json`", "`status --json`", "`verify-chain --json`"):
        assert key in contract, key
    # Every link from the contract resolves inside docs/.
    for target in re.findall(r"\]\(([^)#]+)\)", contract):
        assert (REPO / "docs" / target).exists(), target
