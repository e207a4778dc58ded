"""Every ```cap example in docs/language.md is a valid policy."""

import re
from pathlib import Path

import pytest

from capsule.lang.loader import load_source

DOC = Path(__file__).parents[2] / "docs" / "language.md"
BLOCKS = re.findall(r"```cap\n(.*?)```", DOC.read_text(), re.S)


def test_the_reference_has_an_example_for_every_area():
    from capsule.lang.names import AREAS

    headings = set(re.findall(r"^### (\w+)$", DOC.read_text(), re.M))
    assert set(AREAS) <= headings
    assert len(BLOCKS) >= 14


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_doc_example_checks_without_errors(block):
    _, diags = load_source(block, "example.cap")
    assert [f"{d.location}: {d.message}" for d in diags if d.is_error] == []
