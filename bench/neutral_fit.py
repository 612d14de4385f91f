"""Language statistics' cost: one language's first principal direction by the d x d eigendecomposition
that `LanguageStats.fit` used to run (O(d^3) whatever the rows) against what it runs now (an SVD of the
centred rows, randomized above EXACT_ROWS), and how well their directions agree (|cosine|, 1 = the same
up to sign), and a whole fit of a corpus shaped like the demo. Synthetic rows: a language's mean, a few strong directions and isotropic noise, at 2,560
dims (Qwen3-Embedding-4B's), since the cost depends on the shape, not on what the vectors say.

    python -m bench.neutral_fit [--quick]    # writes bench/results/neutral_fit[-quick].json"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bench import RESULTS
from xlsearch.engine.ranking.neutral import EXACT_ROWS, LanguageStats, principal_directions

DIM = 2560
ROWS = (45, EXACT_ROWS, 1_000, 5_000, 50_000)  # a language of the demo corpus up to a large one
QUICK_DIM, QUICK_ROWS = 256, (45, EXACT_ROWS + 1)


def language(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Rows centred on their mean, spread along 8 directions of falling strength above unit noise."""
    strengths = 4.0 / np.arange(1, 9)
    directions = np.linalg.qr(rng.standard_normal((dim, 8)))[0].T
    rows = rng.standard_normal((rows, 8)) * strengths @ directions + 0.3 * rng.standard_normal((rows, dim))
    return rows - rows.mean(axis=0)


def eigh_direction(centered: np.ndarray) -> np.ndarray:
    """The old way: the top eigenvector of the d x d scatter matrix."""
    return np.linalg.eigh(centered.T @ centered)[1][:, -1]


def timed(work, *args) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    result = work(*args)
    return round(time.perf_counter() - started, 3), result


def whole_fit(dim: int, languages: int, rows: int, rng: np.random.Generator) -> dict:
    """`LanguageStats.fit` of a corpus shaped like the demo (8 languages of 45 documents) against the old
    per-language loop."""
    vectors = np.vstack([language(rows, dim, rng) + rng.standard_normal(dim) for _ in range(languages)])
    langs = np.repeat([f"l{i}" for i in range(languages)], rows)
    old_s, _ = timed(lambda: [eigh_direction(vectors[langs == name] - vectors[langs == name].mean(axis=0))
                              for name in sorted(set(langs))])
    new_s, _ = timed(LanguageStats.fit, vectors, langs)
    return {"rows": f"{languages} x {rows}", "dim": dim, "method": "LanguageStats.fit", "eigh_s": old_s, "svd_s": new_s,
            "speedup": round(old_s / max(new_s, 1e-6), 1)}


def run(dim: int, sizes: tuple[int, ...]) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = [whole_fit(dim, 8, 45, rng)]
    print(rows[-1], flush=True)
    for size in sizes:
        centered = language(size, dim, rng)
        old_s, old = timed(eigh_direction, centered)
        new_s, new = timed(principal_directions, centered, 1)
        rows.append({"rows": size, "dim": dim, "method": "exact SVD" if size <= EXACT_ROWS else "randomized SVD",
                     "eigh_s": old_s, "svd_s": new_s, "speedup": round(old_s / max(new_s, 1e-6), 1),
                     "abs_cosine": round(float(abs(new[0] @ old)), 8)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DIM} dims: a smoke test whose timings mean nothing")
    args = parser.parse_args()
    rows = run(QUICK_DIM, QUICK_ROWS) if args.quick else run(DIM, ROWS)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"neutral_fit{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"machine": platform.node(), "processor": platform.processor() or platform.machine(),
                               "quick": args.quick, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
