"""The Tatoeba paragraph set: parallel paragraphs within their length bounds, queries that point at their
group's other languages, a split that keeps groups whole."""

from xlsearch.evaluation.paragraphs import MAX_CHARS, MAX_CJK_CHARS, MIN_CHARS, build_paragraph_set, is_held_out


def test_paragraphs_are_the_same_lines_in_each_language(tatoeba):
    full = build_paragraph_set(tatoeba)
    assert len(full.groups) > 1000 and len(full.paragraphs) > 2 * len(full.groups) - 1
    for paragraph in full.paragraphs:
        if paragraph.cjk:
            assert len(paragraph.text) <= MAX_CJK_CHARS
        else:
            assert MIN_CHARS <= len(paragraph.text) <= MAX_CHARS
    # the same English lines in German and Japanese: deu-eng and jpn-eng share 487 English lines
    set_ = build_paragraph_set(tatoeba, ["deu", "jpn", "eng"])
    three_way = [g for g in set_.groups if len([p for p in set_.paragraphs if p.group == g]) == 3]
    assert three_way
    versions = {p.lang: p.text for p in set_.paragraphs if p.group == three_way[0]}
    for code, lang in (("deu", "de"), ("jpn", "ja")):
        english = (tatoeba / f"tatoeba.{code}-eng.eng").read_text("utf-8").splitlines()
        other = (tatoeba / f"tatoeba.{code}-eng.{code}").read_text("utf-8").splitlines()
        first = max((row for row, line in enumerate(english) if versions["en"].startswith(line.strip())),
                    key=lambda row: len(english[row]))
        assert versions[lang].startswith(other[first].strip())
    assert {p.lang for p in set_.paragraphs} == {"de", "ja", "en"}


def test_queries_split_and_determinism(tatoeba):
    set_ = build_paragraph_set(tatoeba, ["fra", "cmn", "eng"])
    assert set_.queries
    by_id = {p.id: p for p in set_.paragraphs}
    for query in set_.queries:
        own = by_id[f"{query.group}/{query.lang}"]
        assert query.text in own.text  # a single line of its own language's version
        relevant = set_.relevant(query)
        assert relevant and all(by_id[r].group == query.group and by_id[r].lang != query.lang for r in relevant)
    fit, held_out = set_.split("fit"), set_.split("held_out")
    assert not set(fit.groups) & set(held_out.groups)
    assert len(fit.paragraphs) + len(held_out.paragraphs) == len(set_.paragraphs)
    assert all(is_held_out(q.group) for q in held_out.queries)
    assert 0.3 < len(held_out.groups) / len(set_.groups) < 0.7
    again = build_paragraph_set(tatoeba, ["fr", "zh", "en"])  # the same languages, by other codes
    assert again.paragraphs == set_.paragraphs and again.queries == set_.queries
