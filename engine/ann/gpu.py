"""Whether this faiss can run on this machine's GPU, found out without risking the process.

A faiss wheel without code for a GPU's architecture aborts the whole process at its first GPU call, with
no Python exception: faiss-gpu-cu12 1.14.1 carries sm_70 and sm_80 kernels and no PTX, and on an H100 or
H200 (compute capability 9.0) that call fails with "CUDA error 209 no kernel image is available", which
faiss turns into an assertion. So the first GPU call is made in a child process, the probe: it reports the
GPU it found, then runs a tiny flat search on GPU 0 and checks the answer against the CPU's. Its verdict is
cached (CACHE_FILE under the xlsearch cache directory) by faiss version, GPU and driver, so a machine pays
for it once, and this process never makes a GPU call the probe has not made first.

The probe speaks JSON lines on stdout: first the GPU (PROBE_FIELDS; written before any GPU work, so a crash
still leaves it), then {"ok": true} once the search gave the right answer, and it exits 0. Anything else
means the GPU is not usable, and `reason` says why in one line: the GPU, its compute capability, what
code the installed faiss carries, and how the probe ended.

The seam: XLSEARCH_GPU_PROBE, when set, is the probe command (split as a shell would, run without one),
run in place of the built-in probe, even where this faiss has no GPU support and would never run one.
What it reports is believed: a probe that says {"gpus": 1, ...} then {"ok": true} makes `auto` choose
the GPU, whose calls would then fail under faiss-cpu. It serves the tests (a child that aborts, one that
succeeds) and checking a new wheel or driver by hand; the real probe is `python engine/ann/gpu.py`."""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

PROBE_ENV = "XLSEARCH_GPU_PROBE"
PROBE_FIELDS = ("gpus", "name", "capability", "memory", "driver", "faiss", "kernels")
# A first CUDA call creates a context (seconds on a large machine), and a card newer than every kernel in
# the wheel JIT-compiles the wheel's PTX for the kernels the search touches (up to about a minute).
PROBE_TIMEOUT_S = 180
CACHE_FILE = "gpu-probe.json"
NO_GPU_SUPPORT = ("this faiss has no GPU support or sees no CUDA device "
                  "(install faiss-gpu instead of faiss-cpu on a machine with a GPU)")
_REASON_CHARS = 160  # of the probe's last error line: "CUDA error 209 no kernel image is available ..." whole
# CUDA driver API attributes (cuda.h: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR)
_CAPABILITY_MAJOR, _CAPABILITY_MINOR = 75, 76
_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_PTX, _FATBIN_CUBIN = 1, 2


@dataclass(frozen=True)
class GpuProbe:
    """What the probe found about GPU 0, and whether this faiss can use it."""

    usable: bool
    gpus: int  # CUDA devices seen; 0 where there is no driver, no device, or no GPU support in this faiss
    reason: str | None = None  # one line: why not usable
    name: str | None = None
    capability: str | None = None  # compute capability, "9.0"
    memory: int | None = None  # bytes on GPU 0
    driver: str | None = None
    faiss: str | None = None
    kernels: tuple[str, ...] = ()  # the GPU code this faiss carries: sm_80 (a kernel), compute_90 (PTX)

    def describe(self) -> str:
        """'NVIDIA H200 (compute capability 9.0)'."""
        return f"{self.name} (compute capability {self.capability})"


def probe_gpu() -> GpuProbe:
    """The cached verdict on GPU 0 for this faiss, the probe run first where there is none. Never makes a
    GPU call in this process. Without the seam, faiss-cpu and a machine without a CUDA device answer at
    once, with no child."""
    import faiss

    command = os.environ.get(PROBE_ENV)
    if command is None and not hasattr(faiss, "StandardGpuResources"):
        return GpuProbe(usable=False, gpus=0, reason=NO_GPU_SUPPORT, faiss=faiss.__version__)
    device = cuda_device()
    if command is None and not device["gpus"]:
        return GpuProbe(usable=False, gpus=0, reason=NO_GPU_SUPPORT, faiss=faiss.__version__)
    key = hashlib.sha256(json.dumps([faiss.__version__, command, device], sort_keys=True).encode()).hexdigest()
    return _verdict(key, command)


@cache
def _verdict(key: str, command: str | None) -> GpuProbe:
    """One probe per machine, faiss and GPU (the disk cache), and per process (this cache)."""
    path = cache_directory() / CACHE_FILE
    verdicts = _read_json(path)
    try:
        saved = verdicts[key]
        return GpuProbe(**{**saved, "kernels": tuple(saved["kernels"])})
    except (KeyError, TypeError):
        pass  # not probed yet, or by a version of this module that recorded other fields
    probe, definite = _run_probe(shlex.split(command) if command else [sys.executable, os.path.abspath(__file__)])
    if definite:  # a probe that timed out may do better next time (a busy GPU, a first PTX compilation)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_suffix(f".{os.getpid()}.tmp")
            staged.write_text(json.dumps({**_read_json(path), key: asdict(probe)}, indent=1) + "\n")
            os.replace(staged, path)
        except OSError:
            pass  # an unwritable cache costs a probe per process, nothing else
    return probe


def cache_directory() -> Path:
    """Where xlsearch keeps what it computed once per machine (the embedding cache lives there too)."""
    return Path(os.environ.get("XLSEARCH_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xlsearch")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_probe(command: list[str]) -> tuple[GpuProbe, bool]:
    """(verdict, definite): runs the probe and reads its JSON lines; a probe that ran out of time is not
    definite."""
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
        stdout, stderr, status, definite = done.stdout, done.stderr, done.returncode, True
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, status, definite = exc.stdout or b"", exc.stderr or b"", None, False
    except OSError as exc:
        return GpuProbe(usable=False, gpus=0, reason=f"the GPU probe {command[0]!r} cannot run: {exc.strerror}"), True
    report: dict = {}
    for line in stdout.decode(errors="replace").splitlines():
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        if isinstance(fields, dict):
            report.update(fields)
    found = {name: report[name] for name in PROBE_FIELDS if name in report}
    found["gpus"] = int(found.get("gpus") or 0)
    found["kernels"] = tuple(found.get("kernels") or ())
    if status == 0 and report.get("ok") is True and found["gpus"]:
        return GpuProbe(usable=True, **found), definite
    if not found["gpus"]:
        return GpuProbe(usable=False, reason=NO_GPU_SUPPORT, **found), definite
    ending = ("ran past its time limit" if status is None else
              f"was killed by {_signal_name(-status)}" if status < 0 else
              f"exited with status {status}" if status else "found a wrong answer")
    errors = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    # a faiss assertion says where it failed, then "details: CUDA error 209 no kernel image is available ..."
    detail = f": {errors[-1].rpartition('details: ')[2][:_REASON_CHARS]}" if errors else ""
    probe = GpuProbe(usable=False, **found)
    reason = (f"{probe.describe()} cannot run faiss {probe.faiss or '(version unknown)'}, which carries "
              f"{carried(probe.kernels)} (its GPU probe {ending}{detail})")
    return GpuProbe(usable=False, reason=reason, **found), definite


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def carried(kernels: tuple[str, ...]) -> str:
    """'kernels for sm_70, sm_80 and no PTX' from a faiss's GPU code list."""
    cubins = [k for k in kernels if k.startswith("sm_")]
    ptx = [k for k in kernels if k.startswith("compute_")]
    if not kernels:
        return "GPU code this probe could not list"
    return (f"kernels for {', '.join(cubins) or 'no architecture'} and "
            + (f"PTX for {', '.join(ptx)}" if ptx else "no PTX"))


def cuda_device() -> dict:
    """GPU 0 as the CUDA driver reports it: {"gpus": 0} without a driver or a device, else also its name,
    compute capability, memory and the driver's version. Driver API calls return error codes; unlike
    faiss's they never abort."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {"gpus": 0}
    count, device = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) or cuda.cuDeviceGetCount(ctypes.byref(count)) or not count.value \
            or cuda.cuDeviceGet(ctypes.byref(device), 0):
        return {"gpus": 0}
    name = ctypes.create_string_buffer(256)
    major, minor, version, memory = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_size_t(0)
    cuda.cuDeviceGetName(name, len(name), device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CAPABILITY_MAJOR, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CAPABILITY_MINOR, device)
    cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), device)
    cuda.cuDriverGetVersion(ctypes.byref(version))
    cuda_version = f"CUDA {version.value // 1000}.{version.value % 1000 // 10}"
    try:  # the kernel module's own version, which a driver update changes even when the CUDA version stays
        module = kernel_module_version(Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        module = None
    return {"gpus": count.value, "name": name.value.decode(errors="replace"),
            "capability": f"{major.value}.{minor.value}", "memory": memory.value,
            "driver": f"{module} ({cuda_version})" if module else cuda_version}


def kernel_module_version(nvrm: str) -> str | None:
    """The version in /proc/driver/nvidia/version's NVRM line, of the proprietary module ("NVIDIA UNIX
    x86_64 Kernel Module  580.159.04  ...") or the open one ("NVIDIA UNIX Open Kernel Module for x86_64
    580.159.04  ...", where the first word after "Kernel Module" is "for": an H200 probe said so)."""
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d[\w.-]*)", nvrm)
    return found.group(1) if found else None


def faiss_kernels(package_dir: Path) -> tuple[str, ...]:
    """The GPU code compiled into faiss's shared libraries: a cubin runs on its architecture's major
    version at that minor version or newer (sm_80 on 8.0 and 8.6), PTX is compiled by the driver for its
    architecture or any newer one. Read from the fat binaries' headers (.nv_fatbin sections), as
    cuobjdump --list-elf/--list-ptx would."""
    found: set[str] = set()
    for library in sorted(package_dir.parent.glob(f"{package_dir.name}*/*.so*")):
        try:
            with open(library, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found |= _fatbin_code(data)
        except (OSError, ValueError, struct.error):
            continue  # not an ELF file we can read: it carries nothing we can list
    return tuple(sorted(found, key=lambda code: (code.startswith("compute_"), int(code.split("_")[1]))))


def _fatbin_code(data: mmap.mmap) -> set[str]:
    if data[:4] != b"\x7fELF":
        return set()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:  # (name offset, file offset, size)
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + index * entry_size)
        return name, offset, size

    _, names, _ = section(names_index)
    found: set[str] = set()
    for index in range(count):
        name, offset, size = section(index)
        if data[names + name:names + name + 11] != b".nv_fatbin\x00":
            continue
        position, end = offset, offset + size
        while position + 16 <= end:
            magic, _, header, payload = struct.unpack_from("<IHHQ", data, position)
            if magic != _FATBIN_MAGIC:
                position += 8  # fat binaries are 8-byte aligned in the section
                continue
            entry, last = position + header, position + header + payload
            while entry < last:
                kind, _, entry_header, padded = struct.unpack_from("<HHIQ", data, entry)
                architecture, = struct.unpack_from("<I", data, entry + 28)
                if kind in (_FATBIN_PTX, _FATBIN_CUBIN):
                    found.add(f"{'compute' if kind == _FATBIN_PTX else 'sm'}_{architecture}")
                entry += entry_header + padded
            position = last
    return found


@cache
def gpu_resources():
    """One faiss StandardGpuResources for the process (its streams, cuBLAS handle and scratch memory):
    only after probe_gpu() found the GPU usable."""
    import faiss

    return faiss.StandardGpuResources()


def _probe() -> int:
    """The built-in probe, run as a child process: GPU 0 as the driver reports it and the GPU code this
    faiss carries (no GPU call yet: importing faiss only loads libraries), then faiss's first GPU calls, a
    flat search of 256 unit vectors on GPU 0, compared with the CPU's answer."""
    import faiss
    import numpy as np

    report = {**cuda_device(), "faiss": faiss.__version__, "kernels": faiss_kernels(Path(faiss.__file__).parent)}
    print(json.dumps(report), flush=True)
    if not report["gpus"] or not faiss.get_num_gpus():
        return 1
    vectors = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    resources = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(resources, vectors.shape[1])
    index.add(vectors)
    found = index.search(vectors[:16], 8)[1]
    expected = faiss.knn(vectors[:16], vectors, 8, metric=faiss.METRIC_INNER_PRODUCT)[1]
    print(json.dumps({"ok": bool((np.sort(found, axis=1) == np.sort(expected, axis=1)).all())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe())
