"""The documentation stays true: every relative link in the repository's Markdown resolves, the
README stays a front door, and docs/output.md lists every file a rule writes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def markdown_files() -> list[Path]:
    """The tracked Markdown files (git knows which; the virtual environments are not ours)."""
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / line for line in listed.stdout.splitlines() if line]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", path.read_text())) if not re.match(r"[a-z]+:", target)]


def test_every_relative_markdown_link_resolves():
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) `[code](not-a-link.md)`\n```\n[x](fenced.md)\n```\n")
    assert relative_links(page) == ["#title", "missing.md", "not-a-link.md"]
    assert anchors(page.read_text()) == {"title"}


def test_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for guide in ("docs/usage.md", "docs/output.md", "docs/troubleshooting.md", "benchmarks/README.md"):
        assert f"]({guide})" in readme, f"README does not link {guide}"


RULE = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.S | re.M)
OUTPUT_BLOCK = re.compile(r"^    output:\n(.*?)(?=^    \w+:)", re.S | re.M)
QUOTED = re.compile(r"f?\"([^\"]+)\"")


def rule_outputs() -> dict[str, list[str]]:
    """Each rule's output patterns as written in workflow/rules/*.smk, with the few Python
    expressions in f-strings replaced by the names the output guide uses."""
    substitutions = {
        "{SYNTH_DIR}": "data/synth",
        "{config['report']['reject']['test_set']}": "{test_set}",
        "{{": "{",
        "}}": "}",
    }
    outputs: dict[str, list[str]] = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for name, body in RULE.findall(smk.read_text()):
            block = OUTPUT_BLOCK.search(body)
            if not block:
                continue
            paths = []
            for text in QUOTED.findall(block.group(1)):
                for old, new in substitutions.items():
                    text = text.replace(old, new)
                if "/" in text and not text.startswith("../"):
                    paths.append(text)
            outputs[name] = paths
    return outputs


def test_output_guide_lists_every_rule_output():
    guide = (REPO / "docs" / "output.md").read_text()
    outputs = rule_outputs()
    assert {"synthesize", "train", "embed", "evaluate_ijb", "ijbc_table"} <= set(outputs)
    missing = [f"{rule}: {path}" for rule, paths in outputs.items() for path in paths if f"`{path}`" not in guide]
    assert not missing, "docs/output.md does not list:\n" + "\n".join(missing)
    unnamed = [rule for rule in outputs if f"`{rule}`" not in guide]
    assert not unnamed, f"docs/output.md names no output of rules {unnamed}"
