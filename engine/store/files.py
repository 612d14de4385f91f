"""The files of an index version, and how metadata is laid out in them."""

INDEX_FILE = "index.faiss"
META_FILE = "meta.parquet"
VECTORS_FILE = "vectors.npy"
REJECTS_FILE = "rejects.jsonl"  # inputs the embedding server refused: source, id, chunk, reason
# Hits' metadata is read a row group at a time, so a query reads a few groups, not whole columns
ROW_GROUP_ROWS = 4096
