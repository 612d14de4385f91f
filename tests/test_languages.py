import pytest

from xlsearch.engine.errors import InputError
from xlsearch.engine.languages import detect_lang, normalize_lang, parse_lang_list


@pytest.mark.parametrize(
    "code, expected",
    [("ja", "ja"), ("jpn", "ja"), ("ja-JP", "ja"), ("ja_JP", "ja"), ("JA", "ja"), ("cmn", "zh"), ("zh-Hant-TW", "zh"),
     ("kor", "ko"), ("deu", "de"), ("eng", "en"), ("arb", "ar"), ("yue", "yue"), ("arq", "arq")],
)
def test_one_spelling_per_language(code, expected):
    assert normalize_lang(code) == expected


@pytest.mark.parametrize("code", ["xx", "klingon", "12", ""])
def test_unknown_codes_are_refused_by_name(code):
    with pytest.raises(InputError, match="unknown language code"):
        normalize_lang(code)


def test_lang_lists_are_normalised_and_deduplicated():
    assert parse_lang_list("ja,jpn, en ,eng-US") == ["ja", "en"]
    assert parse_lang_list(None) == []


@pytest.mark.parametrize(
    "text, lang",
    [("今天天气真好，适合出去散步", "zh"), ("오늘 날씨가 정말 좋네요", "ko"), ("Der Zug hat heute Verspätung.", "de"),
     ("今日はとても良い天気ですね。", "ja"), ("Сегодня отличная погода для прогулки.", "ru")],
)
def test_detection_with_the_bundled_model(text, lang):
    assert detect_lang(text) == lang
