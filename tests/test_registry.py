"""The bundled models registry: every entry can be fetched and verified."""
from __future__ import annotations

import re

import pytest

from gpt4all.models import default_model, find_entry, registry

ENTRIES = registry()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["filename"] for e in ENTRIES])
def test_entry_is_complete(entry):
    for key in ("name", "filename", "description", "parameters", "quant", "type", "ramrequired", "sources"):
        assert entry.get(key), f"{entry['filename']}: {key} is missing"
    assert entry["filename"].endswith(".gguf")
    assert entry.get("sha256sum") or entry.get("md5sum"), "nothing to verify the download against"
    if "sha256sum" in entry:
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256sum"])
    if "md5sum" in entry:
        assert re.fullmatch(r"[0-9a-f]{32}", entry["md5sum"])
    if "filesize" in entry:
        assert int(entry["filesize"]) > 0
    for source in entry["sources"]:
        if "url" in source:
            assert source["url"].startswith("https://huggingface.co/"), source
            assert source["url"].endswith("/" + entry["filename"])
        else:
            assert all(p["package"] and p["member"] for p in source["packages"])
    assert "promptTemplate" not in entry or "{0}" in entry["promptTemplate"]


def test_names_are_unique_and_the_default_is_smollm2():
    assert len({e["filename"].lower() for e in ENTRIES}) == len(ENTRIES)
    assert len({e["name"].lower() for e in ENTRIES}) == len(ENTRIES)
    assert [e["filename"] for e in ENTRIES if e.get("default")] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert default_model()["filename"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_lookup_by_file_name_name_or_stem():
    for key in ("Llama-3.2-1B-Instruct-Q4_0.gguf", "llama 3.2 1b instruct", "Llama-3.2-1B-Instruct-Q4_0"):
        assert find_entry(key)["filename"] == "Llama-3.2-1B-Instruct-Q4_0.gguf"
    assert find_entry("no such model") is None
