"""CITATION.cff (Citation File Format 1.2.0) and LICENSE (Apache-2.0) at the repository root."""

import re

from common.cli import REPO_ROOT

# Keys of the CFF 1.2.0 schema this file uses (a typo such as "repository_code" would be invalid CFF).
ROOT_KEYS = {"cff-version", "message", "type", "title", "abstract", "authors", "license", "keywords", "references"}
REFERENCE_KEYS = {"type", "title", "authors", "collection-title", "journal", "volume", "issue", "year",
                  "identifiers", "repository-code", "notes"}
AUTHOR_KEYS = {"family-names", "given-names", "name", "alias"}
REFERENCE_TYPES = {"article", "conference-paper", "software"}


def test_citation_cff():
    text = (REPO_ROOT / "CITATION.cff").read_text(encoding="utf8")
    try:
        import yaml
    except ImportError:  # PyYAML is not a project dependency: check the required keys by text
        for key in ("cff-version: 1.2.0", "message:", "title:", "authors:", "references:"):
            assert re.search(rf"^{re.escape(key)}", text, re.M), key
        assert len(re.findall(r"^  - type: ", text, re.M)) == 7
        return
    cff = yaml.safe_load(text)
    assert cff["cff-version"] == "1.2.0"
    assert set(cff) <= ROOT_KEYS and {"message", "title", "authors"} <= set(cff)
    assert cff["license"] == "Apache-2.0"
    references = cff["references"]
    assert len(references) == 7  # the seven original works the tasks reproduce
    for ref in references:
        assert set(ref) <= REFERENCE_KEYS, ref["title"]
        assert ref["type"] in REFERENCE_TYPES and ref["title"] and ref["authors"]
        for author in ref["authors"]:
            assert author and set(author) <= AUTHOR_KEYS, author
        assert "year" not in ref or isinstance(ref["year"], int)
        assert "volume" not in ref or isinstance(ref["volume"], int)
        for url in (ref.get("repository-code"),):
            assert url is None or url.startswith("https://github.com/")
    titles = " | ".join(ref["title"] for ref in references)
    for expected in ("Bi-Directional ConvLSTM U-Net", "UNet++", "CR-Unet", "Task Decomposition and Synchronization",
                     "Ultrasound Nerve Segmentation", "Retinal-Edema", "Multi-level Context Gating"):
        assert expected in titles


def test_license_is_apache_2():
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf8")
    assert text.startswith("Copyright 2026 ")
    for part in ("Apache License", "Version 2.0, January 2004",
                 "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
                 "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS"):
        assert part in text
