"""Recall on translation pairs: pairwise (per pair, both directions) and pooled (all languages in one
index), with cosine or ratio-margin scoring and language-neutral ranking fitted on held-out data."""
