"""What every benchmark record carries: the environment, the dtype's dense
peak (with its source), utilisation, targets, and the JSON document.

Imports the standard library only at module level; jax is imported inside
the functions that need it.
"""

from __future__ import annotations

__all__ = ["PEAK_SOURCES", "PEAK_TFLOPS", "add_utilisation", "environment",
           "git_commit",
           "math_mode", "now", "peak_for", "stamp", "write_json"]

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

#: Dense (no sparsity) peak TFLOP/s per device family and math mode. Keys are
#: matched as substrings of ``jax.Device.device_kind``. ``tf32`` is what XLA
#: uses for float32 matmuls/convolutions on these GPUs at the default matmul
#: precision; ``float32`` is the non-tensor-core FP32 rate (precision
#: ``highest``). The datasheets quote tensor-core rates "with sparsity";
#: dense is half of that.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9},
    "H100": {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9},
    "A100": {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5},
}
#: Where each row of :data:`PEAK_TFLOPS` comes from.
PEAK_SOURCES: dict[str, str] = {
    "H200": "NVIDIA H200 Tensor Core GPU datasheet, SXM form factor "
            "(https://www.nvidia.com/en-us/data-center/h200/): BF16 1,979 and "
            "TF32 989 TFLOPS with sparsity (dense: half), FP32 67 TFLOPS",
    "H100": "NVIDIA H100 Tensor Core GPU datasheet, SXM5 "
            "(https://www.nvidia.com/en-us/data-center/h100/): BF16 1,979 and "
            "TF32 989 TFLOPS with sparsity (dense: half), FP32 67 TFLOPS",
    "A100": "NVIDIA A100 Tensor Core GPU datasheet, SXM "
            "(https://www.nvidia.com/en-us/data-center/a100/): BF16 312 and "
            "TF32 156 TFLOPS dense, FP32 19.5 TFLOPS",
}


def math_mode(dtype: str, platform_name: str, precision: str) -> str:
    """The math mode whose peak applies: ``bfloat16``/``float16``, ``tf32``
    (float32 on a GPU at precision ``default`` or ``high``: XLA may use TF32
    tensor cores) or ``float32`` (precision ``highest``, or not a GPU)."""
    if dtype != "float32":
        return dtype
    if platform_name == "gpu" and precision in ("default", "high", "tensorfloat32",
                                                "bfloat16_3x"):
        return "tf32"
    return "float32"


def peak_for(device_kind: str, mode: str) -> tuple[float | None, str]:
    """``(dense peak TFLOP/s, source)`` for ``device_kind`` in ``mode``, or
    ``(None, why not)``."""
    for family, row in PEAK_TFLOPS.items():
        if family in device_kind:
            if mode in row:
                return row[mode], PEAK_SOURCES[family]
            return None, f"no {mode} peak in the table for {family}"
    return None, f"no dense peak known for device kind {device_kind!r}"


def add_utilisation(rec: dict, env: dict) -> dict:
    """Add ``peak_tflops``, ``peak_source``, ``math_mode`` and ``mfu`` to
    ``rec`` (which has ``dtype`` and ``seconds``-based ``tflops``).

    MFU uses XLA's FLOP count (``xla_tflops``) where the record has one,
    else the analytic ``tflops``; ``mfu_flops`` names which.
    """
    mode = math_mode(rec.get("dtype", "float32"), env["platform"],
                     env["precision"])
    peak, source = peak_for(env["device_kind"], mode)
    rec["math_mode"] = mode
    rec["peak_tflops"] = peak
    rec["peak_source"] = source
    achieved = rec.get("xla_tflops")
    rec["mfu_flops"] = "xla_cost_analysis" if achieved is not None else "analytic"
    if achieved is None:
        achieved = rec.get("tflops")
    rec["mfu"] = (achieved / peak) if (peak and achieved is not None) else None
    return rec


def git_commit(root: str | os.PathLike | None = None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the
    package was imported from (``JAXCONVVIZ_GIT_COMMIT`` overrides, for a
    copy without ``.git``)."""
    env = os.environ.get("JAXCONVVIZ_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None, "source": "JAXCONVVIZ_GIT_COMMIT"}
    root = Path(root or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, text=True,
                             capture_output=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None,
                    "source": f"git rev-parse failed: {sha.stderr.strip()[:200]}"}
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                             "--", "jaxconvviz"], cwd=root, text=True,
                            capture_output=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(st.stdout.strip()),
                "source": "git"}
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "dirty": None, "source": f"git unavailable: {e}"}


def _cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def environment(precision: str = "default") -> dict:
    """The environment every record carries: device kind and platform, jax and
    jaxlib versions, matmul precision, device count, CPU, load, git commit."""
    import jax
    import jaxlib

    d = jax.devices()[0]
    return {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "n_devices": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "precision": precision,
        "git": git_commit(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": (list(os.getloadavg())
                                  if hasattr(os, "getloadavg") else None),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def stamp(rec: dict, env: dict) -> dict:
    """``rec`` with the environment fields every record carries (copied in,
    so a record read alone still names its device, versions and commit)."""
    out = {"device_kind": env["device_kind"], "platform": env["platform"],
           "jax": env["jax"], "jaxlib": env["jaxlib"],
           "precision": env["precision"], "git_commit": env["git"]["commit"],
           "git_dirty": env["git"]["dirty"]}
    out.update(rec)
    out.setdefault("dtype", None)
    out.setdefault("chunks", None)
    return out


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json(doc: dict, path: str | os.PathLike) -> None:
    """Write ``doc`` to ``path`` atomically (a temp file, then rename)."""
    from jaxconvviz._atomic import atomic_write

    data = json.dumps(doc, indent=1).encode()
    atomic_write(path, lambda fh: fh.write(data))
