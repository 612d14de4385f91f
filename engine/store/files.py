"""The files of an index version, and how metadata is laid out in them."""

INDEX_FILE = "index.faiss"
# The first segment's metadata and raw vectors: what a full build writes (and all an index of format 3 has)
META_FILE = "meta.parquet"
VECTORS_FILE = "vectors.npy"
REJECTS_FILE = "rejects.jsonl"  # inputs the embedding server refused: source, id, chunk, reason
# Rows removed by an update since the last full build (sorted row numbers): they stay in the segments and
# in FAISS, and no search or column shows them
DELETED_FILE = "deleted.npy"
# Each row's MARGIN_K nearest rows of other documents and their cosines (best first, -1 and -inf where
# fewer were in reach): what an update needs to tell which rows' neighbourhoods it changes
NEIGHBOUR_SCORES_FILE = "neighbour_scores.npy"
NEIGHBOUR_ROWS_FILE = "neighbour_rows.npy"
# Hits' metadata is read a row group at a time, so a query reads a few groups, not whole columns
ROW_GROUP_ROWS = 4096


def segment_files(number: int) -> dict[str, str]:
    """The metadata and raw vectors files of segment `number` (0: a full build's, named as format 3 did)."""
    if number == 0:
        return {"meta": META_FILE, "vectors": VECTORS_FILE}
    return {"meta": f"meta-{number:06d}.parquet", "vectors": f"vectors-{number:06d}.npy"}
