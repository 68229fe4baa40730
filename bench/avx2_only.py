"""Run the benchmark with the libraries' AVX2 code paths on this AVX-512 + VNNI CPU, in-process, for timing.

The speed claim is made for an x86 CPU with AVX2 only (no AVX-512, no VNNI). This machine is an AMD
EPYC with AVX-512 and AVX-512 VNNI, and the libraries pick their kernels at run time from what the
CPU reports. :func:`enable` makes each library believe the CPU stops at AVX2, before it first looks:

- **XNNPACK in ai-edge-litert** (the encoder and landmark models; LiteRT's ``Interpreter`` runs them
  through the XNNPACK copy in ``ai_edge_litert/libpywrap_litert_common.so``). XNNPACK picks its
  microkernels from ``hardware_config.arch_flags``, which ``init_hardware_config`` fills once from
  cpuinfo's ``struct cpuinfo_x86_isa cpuinfo_isa`` (one ``bool`` per feature). Both are local
  symbols of that library, listed in its ``.symtab``. :func:`enable` loads the library (ctypes), finds
  the symbols by reading the ELF symbol table with :mod:`struct`, finds the load address from
  ``/proc/self/maps`` (checked against ``dlinfo``), calls ``cpuinfo_initialize()``, clears the
  AVX-512, AVX10, AMX and AVX-VNNI bytes of ``cpuinfo_isa`` (checking each was 1 where
  ``/proc/cpuinfo`` lists the feature, and that the AVX2, FMA3, F16C and AVX bytes stay 1), then calls
  XNNPACK's ``xnn_init_hardware_config()`` itself and checks that the resulting ``arch_flags`` hold
  AVX2 and nothing above it. The byte offsets come from cpuinfo's ``include/cpuinfo.h`` at the
  version vendored here (x86-64 layout, with ``amx_fp8``: :data:`CPUINFO_ISA_FIELDS`), and are
  checked three ways: the struct's size in ``.symtab`` (86 bytes), the bytes ``cpuinfo_initialize``
  writes against the flags in ``/proc/cpuinfo`` (:data:`LINUX_FLAGS`), and, when ``objdump`` is
  installed, the set of ``cpuinfo_isa`` bytes that ``init_hardware_config`` reads in its disassembly
  against the fields XNNPACK's ``src/configs/hardware-config.c`` reads (:data:`XNNPACK_READS`). The
  bit meanings of ``arch_flags`` (:data:`XNN_ARCH_FLAGS`, from XNNPACK's ``hardware-config.h`` and
  the disassembly) are tied to the exact machine code of ``init_hardware_config``
  (:data:`KNOWN_XNNPACK`); another build raises until they are re-derived the same way. The same
  library's ruy (TFLite's own int8 GEMM) reads the same ``cpuinfo_isa``.
- **OpenCV** (Haar cascades, resize and colour conversion for face-kiosk; the DNN module for the
  YuNet + SFace peer): ``OPENCV_CPU_DISABLE`` turns off its dispatched AVX-512 code (checked with
  ``cv2.checkHardwareSupport``), and ``OPENCV_IPP=avx2`` makes the bundled Intel IPP use its AVX2
  (``l9``) code instead of AVX-512 (``k0``). Both must be set before ``import cv2``.
- **NumPy**: ``NPY_DISABLE_CPU_FEATURES`` (before ``import numpy``) for its dispatched AVX-512 loops,
  and ``OPENBLAS_CORETYPE=Haswell`` for the OpenBLAS kernels (NumPy's and OpenCV's bundled ones),
  which otherwise pick SkylakeX/Cooperlake AVX-512 kernels here.

Limits: this measures what the libraries' AVX2 kernels cost *on this CPU*: same microarchitecture
(Zen 4 runs 256-bit AVX2 at full width, and its caches, clock, branch predictor and memory are its
own), same clock, only the instruction-set paths are those an AVX2-only CPU would get. It is not a
substitute for a real AVX2-only machine (an older core runs the same code at its own speed, and
``bench/x86_estimate.py`` counts instructions under qemu rather than timing); it shows how much of a
ratio came from AVX-512/VNNI kernels. Not covered: code compiled for a fixed instruction set (dlib's
AVX build; the libraries' SSE3 baselines, which are the same on both CPUs), the second XNNPACK copy
in ``libLiteRt.so`` (LiteRT's CompiledModel API, which face-kiosk does not use) and the one in
``tflite_runtime``, and child processes started other than through :mod:`subprocess` with this
Python (the runner below re-wraps ``python -m ...`` and ``python script.py`` children; forked
children inherit the patch).

Use it before importing cv2 or NumPy-heavy code and before any LiteRT interpreter exists::

    from bench import avx2_only
    report = avx2_only.enable()

or run a program under it, like ``python -m runpy`` (the first line says what was disabled)::

    python -m bench.avx2_only -m bench.speed --rounds 1
    python -m bench.avx2_only --check          # enable, print the whole report as JSON, exit
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import runpy
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "bench.avx2_only"
MARKER = "FACE_KIOSK_AVX2_ONLY"
"""Set to ``1`` in the environment once :func:`enable` has run (children inherit it)."""

CPUINFO_ISA_FIELDS = (
    "rdtscp", "rdpid", "sysenter", "msr", "clzero", "clflush", "clflushopt", "mwait", "mwaitx", "fxsave", "xsave",
    "three_d_now", "three_d_now_plus", "prefetch", "prefetchw", "prefetchwt1",
    "sse3", "ssse3", "sse4_1", "sse4_2", "sse4a", "misaligned_sse", "avx", "avxvnni", "fma3", "fma4", "xop", "f16c", "avx2",
    "avx512f", "avx512pf", "avx512er", "avx512cd", "avx512dq", "avx512bw", "avx512vl", "avx512ifma", "avx512vbmi",
    "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq", "avx512vnni", "avx512bf16", "avx512fp16", "avx512vp2intersect",
    "avx512_4vnniw", "avx512_4fmaps", "avx10_1", "avx10_2", "amx_bf16", "amx_tile", "amx_int8", "amx_fp16", "amx_fp8",
    "avx_vnni_int8", "avx_vnni_int16", "avx_ne_convert",
    "hle", "rtm", "xtest", "mpx", "cmpxchg16b", "clwb", "movbe", "lahf_sahf", "fs_gs_base", "lzcnt", "popcnt", "tbm",
    "bmi", "bmi2", "adx", "aes", "vaes", "pclmulqdq", "vpclmulqdq", "gfni", "rdrand", "rdseed", "sha",
    "rng", "ace", "ace2", "phe", "pmm", "lwp",
)
"""``struct cpuinfo_x86_isa`` on x86-64 (one bool each, in order), pytorch/cpuinfo ``include/cpuinfo.h`` with ``amx_fp8``."""
ISA_OFFSET = {name: offset for offset, name in enumerate(CPUINFO_ISA_FIELDS)}

AVX2_KEEP = ("avx", "fma3", "f16c", "avx2")
"""Bytes that must read 1 before and after: the AVX2 level that stays."""
CLEAR = ("avxvnni",) + CPUINFO_ISA_FIELDS[ISA_OFFSET["avx512f"]:ISA_OFFSET["avx_ne_convert"] + 1]
"""Bytes cleared: AVX-VNNI, every AVX-512 extension, AVX10, AMX and the AVX-VNNI-INT8/INT16/NE-CONVERT extensions."""

XNNPACK_READS = ("ssse3", "sse4_1", "avx", "f16c", "fma3", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
                 "avx512vbmi", "avx512vnni", "gfni", "amx_int8", "avx512fp16", "avx512bf16", "avxvnni", "avx_vnni_int8")
"""The ``cpuinfo_has_x86_*()`` calls (inline reads of ``cpuinfo_isa``) in XNNPACK's ``init_hardware_config`` on x86-64."""

LINUX_FLAGS = {
    "ssse3": "ssse3", "sse4_1": "sse4_1", "sse4_2": "sse4_2", "sse4a": "sse4a", "misaligned_sse": "misalignsse",
    "avx": "avx", "avxvnni": "avx_vnni", "fma3": "fma", "fma4": "fma4", "xop": "xop", "f16c": "f16c", "avx2": "avx2",
    "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512dq": "avx512dq", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "amx_int8": "amx_int8", "amx_tile": "amx_tile", "amx_bf16": "amx_bf16",
    "tbm": "tbm", "bmi": "bmi1", "bmi2": "bmi2", "adx": "adx", "aes": "aes", "vaes": "vaes", "pclmulqdq": "pclmulqdq",
    "vpclmulqdq": "vpclmulqdq", "gfni": "gfni", "rdseed": "rdseed", "sha": "sha_ni", "movbe": "movbe",
}
"""cpuinfo fields and their names in ``/proc/cpuinfo`` ``flags``: both read CPUID (and XCR0), so they must agree."""

XNN_ARCH_FLAGS = ("sse", "sse2", "ssse3", "sse4_1", "avx", "f16c", "fma3", "avx2", "avx256skx", "avx512f", "avx512skx",
                  "avx512vbmi", "avx512fp16", "avx512bf16", "avxvnni", "avxvnniint8", "avx256vnni", "avx256vnnigfni",
                  "avx512vnni", "avx512vnnigfni", "avx512amx")
"""``enum xnn_arch_flags`` on x86 (bit i is ``1 << i``): XNNPACK's ``src/xnnpack/hardware-config.h`` of this build
(the shifts in ``init_hardware_config``'s disassembly agree: ssse3 << 2 ... avx2 << 7, avx512f << 9, amx << 20)."""
AVX2_ONLY_MASK = (1 << (XNN_ARCH_FLAGS.index("avx2") + 1)) - 1

KNOWN_XNNPACK = {
    "265829e0fd63d433c7614103b52b9bca32c555a239635e99204002cfb97f367f": {
        "build": "ai-edge-litert 2.3.0 (libpywrap_litert_common.so)", "arch_flags_offset": 8},
}
"""sha256 of ``init_hardware_config``'s machine code -> where ``arch_flags`` sits in ``hardware_config``. The code
fixes both the ``cpuinfo_isa`` offsets it reads and the bits it sets, so equal code means these tables hold."""

SYMBOLS = ("cpuinfo_initialize", "cpuinfo_isa", "hardware_config", "init_hardware_config", "xnn_init_hardware_config")
LITERT_LIBRARY = "libpywrap_litert_common.so"

AVX512_PARTS = {  # OpenCV's names for the single AVX-512 extensions -> /proc/cpuinfo flags
    "AVX512F": "avx512f", "AVX512CD": "avx512cd", "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl",
    "AVX512ER": "avx512er", "AVX512PF": "avx512pf", "AVX512IFMA": "avx512ifma", "AVX512VBMI": "avx512vbmi",
    "AVX512VBMI2": "avx512_vbmi2", "AVX512VNNI": "avx512_vnni", "AVX512BITALG": "avx512_bitalg",
    "AVX512VPOPCNTDQ": "avx512_vpopcntdq", "AVX5124VNNIW": "avx512_4vnniw", "AVX5124FMAPS": "avx512_4fmaps",
}
AVX512_GROUPS = {  # the grouped targets (OpenCV and NumPy), each as its single extensions
    "COMMON": ("AVX512F", "AVX512CD"),
    "SKX": ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL"),
    "KNL": ("AVX512F", "AVX512CD", "AVX512ER", "AVX512PF"),
    "KNM": ("AVX512F", "AVX512CD", "AVX512ER", "AVX512PF", "AVX5124FMAPS", "AVX5124VNNIW", "AVX512VPOPCNTDQ"),
    "CNL": ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX512IFMA", "AVX512VBMI"),
    "CLX": ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX512VNNI"),
    "ICL": ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX512IFMA", "AVX512VBMI", "AVX512VBMI2",
            "AVX512BITALG", "AVX512VPOPCNTDQ", "AVX512VNNI"),
}
CV_AVX512F, CV_AVX2, CV_FMA3, CV_AVX512_SKX = 13, 11, 12, 256
"""``cv::CpuFeatures`` ids (``CPU_AVX_512F``, ``CPU_AVX2``, ``CPU_FMA3``, ``CPU_AVX512_SKX``; cv2 does not export them)."""
OPENBLAS_AVX512_CORES = {"SKYLAKEX", "COOPERLAKE", "SAPPHIRERAPIDS"}


def cpu_flags() -> set[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo``."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise RuntimeError("avx2_only: no 'flags' line in /proc/cpuinfo")


def has(flags: set[str], parts: tuple[str, ...]) -> bool:
    return all(AVX512_PARTS[part] in flags for part in parts)


def opencv_disable(flags: set[str]) -> list[str]:
    """``OPENCV_CPU_DISABLE`` entries: every AVX-512 feature this CPU has (OpenCV warns about absent ones)."""
    return ([name for name, flag in AVX512_PARTS.items() if flag in flags]
            + [f"AVX512-{group}" for group, parts in AVX512_GROUPS.items() if has(flags, parts)])


def numpy_disable(flags: set[str]) -> list[str]:
    """``NPY_DISABLE_CPU_FEATURES`` entries: NumPy's dispatch targets above AVX2 that this CPU has."""
    names = [name for name in ("AVX512F", "AVX512CD") if AVX512_PARTS[name] in flags]
    names += [f"AVX512_{group}" for group, parts in AVX512_GROUPS.items() if group != "COMMON" and has(flags, parts)]
    if has(flags, AVX512_GROUPS["ICL"]) and {"avx512_fp16", "avx512_bf16"} <= flags:
        names.append("AVX512_SPR")
    return names


# --- XNNPACK / cpuinfo inside ai-edge-litert ---------------------------------------------------------------------

def elf_symbols(path: Path, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``name -> (st_value, st_size)`` from the ELF ``.symtab`` (local symbols included) of a 64-bit little-endian
    shared library; each name must occur exactly once."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise RuntimeError(f"avx2_only: {path} is not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
        f.seek(shoff)
        sections = [struct.unpack("<IIQQQQIIQQ", f.read(shentsize)[:64]) for _ in range(shnum)]
        symtab = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB
        if symtab is None:
            raise RuntimeError(f"avx2_only: {path} has no .symtab (stripped?): cannot find {', '.join(names)}")
        strtab = sections[symtab[6]]
        f.seek(symtab[4])
        symbols = f.read(symtab[5])
        f.seek(strtab[4])
        strings = f.read(strtab[5])
    wanted = {name.encode(): name for name in names}
    found: dict[str, list[tuple[int, int]]] = {}
    for st_name, _info, _other, _shndx, value, size in struct.iter_unpack("<IBBHQQ", symbols):
        end = strings.find(b"\0", st_name)
        if (name := wanted.get(strings[st_name:end])) and value:
            found.setdefault(name, []).append((value, size))
    missing = [name for name in names if name not in found]
    if missing:
        raise RuntimeError(f"avx2_only: symbol(s) {', '.join(missing)} not found in {path}'s .symtab")
    repeated = [name for name, hits in found.items() if len(set(hits)) > 1]
    if repeated:
        raise RuntimeError(f"avx2_only: symbol(s) {', '.join(repeated)} occur more than once in {path}")
    return {name: hits[0] for name, hits in found.items()}


def load_base(path: Path, handle: int) -> int:
    """Load address of the library at ``path``: its offset-0 mapping in ``/proc/self/maps``, checked against
    ``dlinfo(RTLD_DI_LINKMAP)->l_addr`` and the first ``PT_LOAD`` segment's address."""
    real = os.path.realpath(path)
    starts = [int(line.split()[0].split("-")[0], 16) for line in Path("/proc/self/maps").read_text().splitlines()
              if len(line.split()) >= 6 and line.split()[2] == "00000000" and os.path.realpath(line.split(maxsplit=5)[5]) == real]
    if len(starts) != 1:
        raise RuntimeError(f"avx2_only: expected one mapping of {path} at offset 0 in /proc/self/maps, found {len(starts)}")
    with open(path, "rb") as f:
        header = f.read(64)
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        loads = [struct.unpack_from("<IIQQ", f.read(phentsize)) for _ in range(phnum)]
    first_vaddr = min(vaddr for kind, _flags, _offset, vaddr in loads if kind == 1)  # PT_LOAD
    base = starts[0] - (first_vaddr & ~0xFFF)
    link_map = ctypes.c_void_p()
    dlinfo = ctypes.CDLL(None).dlinfo
    dlinfo.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
    if dlinfo(handle, 2, ctypes.byref(link_map)) == 0 and link_map.value:  # RTLD_DI_LINKMAP; l_addr comes first
        l_addr = ctypes.c_size_t.from_address(link_map.value).value
        if l_addr != base:
            raise RuntimeError(f"avx2_only: load address of {path}: /proc/self/maps says {base:#x}, dlinfo {l_addr:#x}")
    return base


def isa_reads_in_disassembly(path: Path, start: int, size: int, isa: int) -> list[int] | None:
    """Offsets into ``cpuinfo_isa`` that the function at ``start`` reads before its first call (``objdump -d``),
    sorted; None without objdump."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                           f"--stop-address={start + size:#x}", str(path)], capture_output=True, text=True, check=True).stdout
    register, offsets = None, set()
    for line in text.splitlines():
        if re.search(r"\scall", line):
            break
        lea = re.search(r"\blea\s+-?0x[0-9a-f]+\(%rip\),%(\w+)\s+#\s*([0-9a-f]+)", line)
        if lea:
            register = lea[1] if int(lea[2], 16) == isa else (None if lea[1] == register else register)
            continue
        direct = re.search(r"\b(?:movzb\w|movsb\w|cmpb|testb|movb)\s.*#\s*([0-9a-f]+)\s+<", line)
        if direct and isa <= int(direct[1], 16) < isa + len(CPUINFO_ISA_FIELDS):
            offsets.add(int(direct[1], 16) - isa)
        if register:
            for match in re.finditer(r"\b(?:movzb\w|movsb\w|cmpb|testb|movb)\s+(?:\$-?0x[0-9a-f]+,)?(0x[0-9a-f]+)?\(%"
                                     + register + r"\)", line):
                offsets.add(int(match[1] or "0", 16))
    return sorted(offsets)


def patch_xnnpack(flags: set[str]) -> dict:
    """Clear the AVX-512/VNNI/AMX bytes of ai-edge-litert's ``cpuinfo_isa`` and initialise XNNPACK's hardware
    config from them; returns what was read, cleared and verified. Raises RuntimeError when it cannot verify."""
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("avx2_only: ai-edge-litert is not installed (pip install ai-edge-litert)")
    path = Path(spec.submodule_search_locations[0]) / LITERT_LIBRARY
    symbols = elf_symbols(path, SYMBOLS)
    library = ctypes.CDLL(str(path))
    base = load_base(path, library._handle)
    address = {name: base + value for name, (value, _size) in symbols.items()}
    code = ctypes.string_at(address["init_hardware_config"], symbols["init_hardware_config"][1])
    fingerprint = hashlib.sha256(code).hexdigest()
    known = KNOWN_XNNPACK.get(fingerprint)
    if known is None:
        raise RuntimeError(f"avx2_only: unknown XNNPACK build in {path} (init_hardware_config sha256 {fingerprint}): "
                           "re-derive CPUINFO_ISA_FIELDS / XNN_ARCH_FLAGS from its disassembly and add it to KNOWN_XNNPACK")
    if symbols["cpuinfo_isa"][1] != len(CPUINFO_ISA_FIELDS):
        raise RuntimeError(f"avx2_only: cpuinfo_isa is {symbols['cpuinfo_isa'][1]} bytes in {path}, "
                           f"the layout here has {len(CPUINFO_ISA_FIELDS)}")
    expected_reads = sorted(ISA_OFFSET[name] for name in XNNPACK_READS)
    reads = isa_reads_in_disassembly(path, symbols["init_hardware_config"][0], symbols["init_hardware_config"][1],
                                     symbols["cpuinfo_isa"][0])
    if reads is not None and reads != expected_reads:
        raise RuntimeError(f"avx2_only: init_hardware_config reads cpuinfo_isa bytes {[hex(o) for o in reads]}, the layout "
                           f"here expects {[hex(o) for o in expected_reads]} ({', '.join(XNNPACK_READS)})")
    arch_flags = ctypes.c_uint64.from_address(address["hardware_config"] + known["arch_flags_offset"])

    def isa_bytes() -> bytes:
        return ctypes.string_at(address["cpuinfo_isa"], len(CPUINFO_ISA_FIELDS))

    report = {"library": str(path), "load_address": hex(base), "init_hardware_config_sha256": fingerprint,
              "build": known["build"], "symbols": {name: hex(value) for name, (value, _size) in symbols.items()},
              "isa_reads_in_disassembly": None if reads is None else [f"{o:#x} {CPUINFO_ISA_FIELDS[o]}" for o in reads]}
    if arch_flags.value:  # XNNPACK has chosen already: fine only if that was this patch, earlier in this process
        isa = isa_bytes()
        if arch_flags.value & ~AVX2_ONLY_MASK or any(isa[ISA_OFFSET[name]] for name in CLEAR):
            raise RuntimeError("avx2_only: XNNPACK already initialised its hardware config with "
                               f"{decode(arch_flags.value)}: call enable() before creating any LiteRT interpreter")
        return report | {"already_patched": True, "arch_flags": hex(arch_flags.value), "xnnpack_uses": decode(arch_flags.value)}

    initialize = ctypes.CFUNCTYPE(ctypes.c_bool)(address["cpuinfo_initialize"])
    if not initialize():
        raise RuntimeError("avx2_only: cpuinfo_initialize() failed")
    before = isa_bytes()
    if any(value > 1 for value in before):
        raise RuntimeError(f"avx2_only: cpuinfo_isa holds non-bool bytes ({before.hex()}): wrong symbol or layout")
    disagree = {name: (before[ISA_OFFSET[name]], flag in flags) for name, flag in LINUX_FLAGS.items()
                if bool(before[ISA_OFFSET[name]]) != (flag in flags)}
    if disagree:
        raise RuntimeError(f"avx2_only: cpuinfo_isa disagrees with /proc/cpuinfo (field: byte, flag) {disagree}: "
                           "wrong layout for this cpuinfo version")
    lacking = [name for name in AVX2_KEEP if not before[ISA_OFFSET[name]]]
    if lacking:
        raise RuntimeError(f"avx2_only: this CPU lacks {', '.join(lacking)}: it cannot stand in for an AVX2 CPU")
    cleared = [name for name in CLEAR if before[ISA_OFFSET[name]]]
    for name in cleared:
        ctypes.memset(address["cpuinfo_isa"] + ISA_OFFSET[name], 0, 1)
    after = isa_bytes()
    if any(after[ISA_OFFSET[name]] for name in CLEAR) or not all(after[ISA_OFFSET[name]] for name in AVX2_KEEP):
        raise RuntimeError("avx2_only: cpuinfo_isa did not take the patch")

    xnn_init = ctypes.CFUNCTYPE(ctypes.c_void_p)(address["xnn_init_hardware_config"])
    config = xnn_init()
    if config != address["hardware_config"]:
        raise RuntimeError(f"avx2_only: xnn_init_hardware_config() returned {config}, not hardware_config")
    flags_now = arch_flags.value
    if flags_now & ~AVX2_ONLY_MASK or not flags_now & (1 << XNN_ARCH_FLAGS.index("avx2")):
        raise RuntimeError(f"avx2_only: XNNPACK chose {decode(flags_now)} after the patch, not AVX2 without AVX-512")
    return report | {"cpuinfo_isa_before": before.hex(), "cpuinfo_isa_after": after.hex(), "cleared": cleared,
                     "kept": list(AVX2_KEEP), "arch_flags": hex(flags_now), "xnnpack_uses": decode(flags_now)}


def decode(arch_flags: int) -> list[str]:
    """Names of the ``xnn_arch_flags`` bits set in ``arch_flags``."""
    return [name for bit, name in enumerate(XNN_ARCH_FLAGS) if arch_flags >> bit & 1] + (
        [f"bits {arch_flags >> len(XNN_ARCH_FLAGS) << len(XNN_ARCH_FLAGS):#x}"] if arch_flags >> len(XNN_ARCH_FLAGS) else [])


# --- OpenCV, NumPy, OpenBLAS ---------------------------------------------------------------------------------------

def openblas_cores() -> dict[str, str]:
    """Core type each loaded OpenBLAS chose: library file name -> ``openblas_get_corename``."""
    cores = {}
    paths = {line.split(maxsplit=5)[5] for line in Path("/proc/self/maps").read_text().splitlines()
             if len(line.split()) >= 6 and "openblas" in line.split(maxsplit=5)[5].rsplit("/", 1)[-1]}
    for path in sorted(paths):
        library = ctypes.CDLL(path)
        for symbol in ("openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(library, symbol):
                function = getattr(library, symbol)
                function.restype = ctypes.c_char_p
                cores[Path(path).name] = function().decode()
                break
    return cores


def check_numpy(disabled: list[str]) -> dict:
    import numpy

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__ as targets, __cpu_features__ as features
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_dispatch__ as targets, __cpu_features__ as features
    still = [name for name in disabled if features.get(name)]
    if still:
        raise RuntimeError(f"avx2_only: NumPy still dispatches {', '.join(still)}: numpy was imported before enable()")
    return {"version": numpy.__version__, "dispatch_targets_on": [name for name in targets if features.get(name)]}


def check_opencv() -> dict:
    try:
        import cv2
    except ImportError:
        return {"skipped": "opencv is not installed"}
    if cv2.checkHardwareSupport(CV_AVX512F) or cv2.checkHardwareSupport(CV_AVX512_SKX):
        raise RuntimeError("avx2_only: OpenCV still reports AVX-512: cv2 was imported before enable()")
    if not (cv2.checkHardwareSupport(CV_AVX2) and cv2.checkHardwareSupport(CV_FMA3)):
        raise RuntimeError("avx2_only: OpenCV does not report AVX2 + FMA3")
    ipp = cv2.ipp.getIppVersion() if cv2.ipp.useIPP() else "IPP off"
    if "AVX-512" in ipp or "(k0)" in ipp:
        raise RuntimeError(f"avx2_only: OpenCV's IPP still runs {ipp}: cv2 was imported before enable()")
    return {"version": cv2.__version__, "cpu_features_line": cv2.getCPUFeaturesLine(), "ipp": ipp,
            "AVX512F": False, "AVX512_SKX": False, "AVX2": True, "FMA3": True}


# --- the switch ----------------------------------------------------------------------------------------------------

def enable(litert: bool = True) -> dict:
    """Make XNNPACK (ai-edge-litert), OpenCV (+ IPP), NumPy and OpenBLAS use their AVX2 code paths in this process.

    Call before importing cv2 or numpy (directly or through other modules) and before any LiteRT interpreter is
    created; the environment variables it sets reach child processes, the cpuinfo patch does not (see
    :func:`propagate`). Returns what was changed and the checks; raises RuntimeError when a symbol is missing or a
    check fails. Calling it again in the same process re-checks and returns the same kind of report.
    """
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        raise RuntimeError("avx2_only: only for Linux on x86-64")
    flags = cpu_flags()
    if not {"avx2", "fma", "f16c"} <= flags:
        raise RuntimeError("avx2_only: this CPU lacks AVX2/FMA3/F16C")
    env = {"OPENCV_CPU_DISABLE": ",".join(opencv_disable(flags)), "OPENCV_IPP": "avx2",
           "NPY_DISABLE_CPU_FEATURES": " ".join(numpy_disable(flags)), "OPENBLAS_CORETYPE": "Haswell", MARKER: "1"}
    env = {name: value for name, value in env.items() if value}
    late = [name for name in ("cv2", "numpy") if name in sys.modules and os.environ.get(MARKER) != "1"]
    os.environ.update(env)
    report: dict = {"cpu_avx512": sorted(flag for flag in flags if flag.startswith(("avx512", "amx", "avx_vnni"))),
                    "environment": env}
    if late:
        report["imported_before_enable"] = late
    report["xnnpack"] = patch_xnnpack(flags) if litert else {"skipped": "litert=False"}
    report["opencv"] = check_opencv()
    report["numpy"] = check_numpy(numpy_disable(flags))
    report["openblas"] = cores = openblas_cores()
    avx512_cores = {name: core for name, core in cores.items() if core.upper() in OPENBLAS_AVX512_CORES}
    if avx512_cores:
        raise RuntimeError(f"avx2_only: OpenBLAS still uses AVX-512 kernels {avx512_cores}: numpy/cv2 was imported "
                           "before enable()")
    return report


def summary(report: dict) -> str:
    """One line: what was disabled, and what each library now uses."""
    xnn = report["xnnpack"]
    xnn_text = ("XNNPACK: skipped" if "skipped" in xnn else
                f"XNNPACK (ai-edge-litert) cpuinfo cleared {' '.join(xnn.get('cleared', ['(already patched)']))}"
                f" -> arch_flags {xnn['arch_flags']} (up to {xnn['xnnpack_uses'][-1]})")
    cv = report["opencv"]
    disabled = report["environment"].get("OPENCV_CPU_DISABLE", "")
    cv_text = "OpenCV: not installed" if "skipped" in cv else (
        f"OpenCV {len(disabled.split(',')) if disabled else 0} AVX-512 features off -> [{cv['cpu_features_line']}], "
        f"IPP {cv['ipp'].split(' 20')[0]}")
    return (f"avx2_only: disabled AVX-512/VNNI ({' '.join(report['cpu_avx512']) or 'none on this CPU'}): {xnn_text}; "
            f"{cv_text}; NumPy off: {report['environment'].get('NPY_DISABLE_CPU_FEATURES', '(none)')}; "
            f"OpenBLAS core {', '.join(sorted(set(report['openblas'].values()))) or '(none loaded)'}")


def propagate() -> None:
    """Have ``subprocess`` children that run this Python (``python -m module ...`` or ``python script.py ...``) run
    under ``python -m bench.avx2_only -q`` too, so their LiteRT is patched as well (the environment alone does
    not patch it)."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p and Path(p).resolve() != ROOT])
    if getattr(subprocess.Popen, "_avx2_only", False):
        return
    python = os.path.realpath(sys.executable)

    def wrap(args):
        if not isinstance(args, (list, tuple)) or len(args) < 2 or os.path.realpath(str(args[0])) != python:
            return args
        rest = [str(arg) for arg in args[1:]]
        if rest[0] == "-m" and len(rest) > 1 and rest[1] != MODULE:
            return [args[0], "-m", MODULE, "-q", *rest]
        if not rest[0].startswith("-") and rest[0].endswith(".py"):
            return [args[0], "-m", MODULE, "-q", *rest]
        return args

    class Popen(subprocess.Popen):
        _avx2_only = True

        def __init__(self, args, *more, **options):
            super().__init__(wrap(args), *more, **options)

    subprocess.Popen = Popen


USAGE = """usage: python -m bench.avx2_only [-q] (-m MODULE | SCRIPT.py) [ARGS ...]
       python -m bench.avx2_only --check

Runs MODULE (or SCRIPT) as __main__ after enable(), with ARGS as its arguments, like python -m runpy;
the first line (stderr with -q) says what was disabled. --check prints enable()'s report as JSON."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = False
    while argv and argv[0] in ("-q", "--quiet"):
        quiet, argv = True, argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--check":
        print(json.dumps(enable(), indent=2))
        return
    if argv[0] == "-m" and len(argv) > 1:
        target, args, is_module = argv[1], argv[2:], True
    elif not argv[0].startswith("-"):
        target, args, is_module = argv[0], argv[1:], False
    else:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    report = enable()
    print(summary(report), file=sys.stderr if quiet else sys.stdout, flush=True)
    propagate()
    sys.argv = [target, *args]
    if is_module:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, str(Path(target).resolve().parent))
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
