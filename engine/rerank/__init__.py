"""A second stage over the first stage's hits: a cross-encoder or reranker model (Qwen3-Reranker on SGLang,
vLLM or HF TEI) scores each candidate against the query and orders them. Nothing here is imported unless
a reranker is asked for."""
