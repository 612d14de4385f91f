"""`xlsearch embed` in-process against the same job on Ray Data, on this machine: the same Tatoeba sentences
(every language in turn, in 4 input files, 8 shards), the local model, without the cache (every sentence
embedded), each command timed end to end from a fresh process. Ray runs on a local Ray of the machine's
CPUs, started once beforehand (its start-up is reported apart: a cluster is started once for many jobs).
On Ray the local model runs as an actor per CPU of one thread each, in-process as one model of as many
threads. Both jobs write the same shards (checked by their checksums). Each mode runs at two sizes: the
difference is its rate once running, the rest its fixed cost per job.

    python -m bench.embed_throughput [--count 10000]"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import RESULTS
from bench.realistic_vectors import tatoeba_sentences

INPUT_FILES = 4
SHARDS = 8


def write_corpus(directory: Path, count: int) -> Path:
    corpus = directory / "corpus"
    corpus.mkdir(parents=True)
    sentences = tatoeba_sentences(count)
    for part in range(INPUT_FILES):
        with open(corpus / f"part-{part}.jsonl", "w", encoding="utf-8") as out:
            for number in range(part, len(sentences), INPUT_FILES):
                text, lang = sentences[number]
                out.write(json.dumps({"id": f"s{number}", "lang": lang, "text": text}, ensure_ascii=False) + "\n")
    return corpus


def timed_embed(corpus: Path, out: Path, shard_size: int, *extra: str) -> float:
    command = [str(Path(sys.executable).parent / "xlsearch"), "embed", str(corpus), "--out", str(out),
               "--shard-size", str(shard_size), "--no-cache", "--format", "json", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return seconds


def checksums(out: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]]


def run(count: int) -> dict:
    """Both modes at `count` sentences and at a quarter of them: the difference between the two sizes is
    each mode's rate once running, the rest its fixed cost per job (process, model, on Ray the driver's
    connection, the planning and the actors' start)."""
    import ray

    cpus = os.cpu_count() or 1
    sizes = (count // 4, count)
    seconds: dict[tuple[str, int], float] = {}
    same = True
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        # Ray's workers run at niceness 15 by default: on a busy machine they would wait behind every other
        # process while the in-process job does not. Like for like, both at the bench's own priority.
        os.environ["RAY_worker_niceness"] = "0"
        context = ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - started
        try:
            for size in sizes:
                corpus = write_corpus(root / str(size), size)
                shard_size = -(-size // SHARDS)
                for mode, extra in (("in_process", ()), ("ray", ("--ray-address", context.address_info["gcs_address"]))):
                    seconds[mode, size] = timed_embed(corpus, root / str(size) / mode, shard_size, *extra)
                same &= checksums(root / str(size) / "in_process") == checksums(root / str(size) / "ray")
        finally:
            ray.shutdown()
    small, large = sizes
    row: dict = {"documents": large, "shards": SHARDS, "cpus": cpus}
    for mode in ("in_process", "ray"):
        extra = seconds[mode, large] - seconds[mode, small]
        # at --quick's sizes the machine's noise can outweigh the larger job's extra work: no rate then, not
        # a negative one (a quick run once reported Ray at -1,161 documents a second)
        rate = (large - small) / extra if extra > 0 else None
        row |= {f"{mode}_s": round(seconds[mode, large], 1), f"{mode}_docs_s": round(large / seconds[mode, large], 1),
                f"{mode}_running_docs_s": rate and round(rate, 1),
                f"{mode}_fixed_s": rate and round(seconds[mode, large] - large / rate, 1)}
    running = row["ray_running_docs_s"], row["in_process_running_docs_s"]
    row |= {"ray_vs_in_process": round(seconds["in_process", large] / seconds["ray", large], 2),
            "running_ray_vs_in_process": round(running[0] / running[1], 2) if all(running) else None,
            "ray_start_s": round(ray_start_s, 1), "same_shards": same}
    return row


def cpu_stages(count: int, dim: int) -> dict:
    """What a job costs besides the model, on one core: reading, mapping and chunking `count` Tatoeba
    sentences (embed_parts.read_parts) and writing them as shards of `dim`-dimensional vectors (random
    unit rows stand in for a server's answers), in documents per second, and the shards' bytes."""
    import numpy as np

    from xlsearch.indexer.chunking import ChunkPolicy
    from xlsearch.indexer.embed_parts import EmbeddedPart, read_parts, write_part
    from xlsearch.indexer.mapper import FieldMap
    from xlsearch.indexer.pipeline import meta_table
    from xlsearch.indexer.shard_files import shard_table

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
        root = Path(scratch)
        corpus = write_corpus(root, count)
        out = root / "emb"
        out.mkdir()
        policy = ChunkPolicy.for_model(30_718)  # Qwen3-Embedding-4B's chunk at 32,768 tokens
        started, read_s, written = time.perf_counter(), 0.0, 0
        for number, path in enumerate(sorted(corpus.iterdir())):
            parts = read_parts(number, str(path), FieldMap(), policy, -(-count // SHARDS))
            while True:
                began = time.perf_counter()
                part = next(parts, None)
                read_s += time.perf_counter() - began
                if part is None:
                    break
                began = time.perf_counter()
                vectors = rng.standard_normal((len(part.chunks), dim), dtype=np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                started += time.perf_counter() - began  # the stand-in's own cost is not the job's
                table = shard_table(meta_table(part.chunks), vectors)
                written += write_part(out, EmbeddedPart(part.shard, table, {"input": part.input}, {})).rows
        total_s = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.glob("*.parquet"))
    return {"documents": written, "dim": dim, "read_chunk_docs_s": round(written / read_s),
            "read_chunk_write_docs_s": round(written / total_s), "shard_bytes_per_doc": round(size / written)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    row = run(parser.parse_args().count)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
