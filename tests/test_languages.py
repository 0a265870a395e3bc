"""The language tag rule (pipeline/languages.py): every form a manifest, config or request uses."""

from __future__ import annotations

import pytest

from pipeline.languages import DETECT_TAGS, LANGUAGE_CODES, LANGUAGE_NAMES, is_detect, language_key, language_name


@pytest.mark.parametrize("tag", [None, "", "  ", "auto", "AUTO", " Auto ", "detect", "Detect"])
def test_detect_forms(tag):
    assert language_name(tag) is None and is_detect(tag)
    assert language_key(tag) == "unknown"


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        # the model's own names, any case
        ("English", "English"), ("english", "English"), ("CANTONESE", "Cantonese"),
        # ISO 639-1, 639-2 (T and B), 639-3
        ("en", "English"), ("de", "German"), ("deu", "German"), ("ger", "German"), ("fre", "French"),
        ("cmn", "Chinese"), ("yue", "Cantonese"), ("fil", "Filipino"), ("tl", "Filipino"), ("zsm", "Malay"),
        # BCP-47 with region or script
        ("pt-BR", "Portuguese"), ("en-US", "English"), ("en_GB", "English"), ("es-419", "Spanish"),
        ("zh-CN", "Chinese"), ("zh-TW", "Chinese"), ("zh-Hans", "Chinese"), ("zh-Hant", "Chinese"),
        ("cmn-Hans-CN", "Chinese"), ("zh-SG", "Chinese"),
        # Cantonese: yue-*, Chinese with region HK or MO, the old zh-yue
        ("zh-HK", "Cantonese"), ("zh-hk", "Cantonese"), ("zh-Hant-HK", "Cantonese"), ("zh-MO", "Cantonese"),
        ("yue-Hant-HK", "Cantonese"), ("yue-HK", "Cantonese"), ("zh-yue", "Cantonese"),
        # Common Voice locale names
        ("sv-SE", "Swedish"), ("fa", "Persian"), ("nl", "Dutch"), ("ja", "Japanese"),
    ],
)  # fmt: skip
def test_tags_map_through_one_rule(tag, name):
    assert language_name(tag) == name
    assert not is_detect(tag)


@pytest.mark.parametrize("tag", ["klingon", "xx", "xx-YY", "ca", "zh-", "english-us", "auto-detect"])
def test_unknown_tags_name_the_tag(tag):
    with pytest.raises(ValueError, match=f"unsupported language {tag!r}"):
        language_name(tag)
    assert language_key(tag) == "other"


def test_keys_are_iso_639_1_and_every_name_is_reachable():
    assert language_key("zh-HK") == "yue" and language_key("pt-BR") == "pt" and language_key("Filipino") == "fil"
    assert {LANGUAGE_CODES[c] for c in LANGUAGE_CODES} == set(LANGUAGE_NAMES)
    assert not DETECT_TAGS & set(LANGUAGE_CODES)
