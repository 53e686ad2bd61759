"""jcv.use_compile_cache and the CLI's --compile-cache: a second process loads
what the first compiled, with bit-identical results; the user's own JAX
setting wins; the directory is pruned least-recently-used first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend.compile_cache import prune
from jaxconvviz.cli import main

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import jaxconvviz as jcv
    hits = []
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    d = jcv.use_compile_cache(sys.argv[1], min_compile_seconds=0)
    model = jcv.tiny_vgg16(include_top=False)
    params = model.init_params(jax.random.key(1))
    x = jcv.filter_patterns(params, "block2_conv1", [0, 1], size=32, steps=3,
                            model=model, key=jax.random.key(0))
    print(json.dumps({"dir": None if d is None else str(d), "hits": len(hits),
                      "x": np.asarray(x).ravel().tolist()}))
""")


def _run(arg, **env_extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env_extra}
    # the suite's own cache (conftest) must not stand in for the one tested
    for k in ("JAX_COMPILATION_CACHE_DIR",
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        if k not in env_extra:
            env.pop(k, None)
    p = subprocess.run([sys.executable, "-c", _SCRIPT, arg], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()} if d.exists() else set()


@pytest.mark.slow
def test_second_process_loads_the_programs_bit_identical(tmp_path):
    cache = tmp_path / "xla"
    first = _run(str(cache))
    # (a first run may hit its own entries: the same program compiled twice)
    assert first["dir"] == str(cache)
    written = _files(cache)
    assert written  # the ascent programs were stored
    second = _run(str(cache))
    assert second["hits"] > first["hits"] and _files(cache) == written  # none new
    assert second["x"] == first["x"]  # bitwise: a cache hit is the same program
    off = _run("off")
    assert off["dir"] is None and off["hits"] == 0 and off["x"] == first["x"]
    # the user's own JAX setting wins over the argument, which stays untouched
    other = tmp_path / "users"
    mine = _run(str(cache), JAX_COMPILATION_CACHE_DIR=str(other))
    assert mine["dir"] == str(other) and _files(cache) == written
    assert _files(other)


def test_prune_removes_least_recently_used_first(tmp_path):
    for i, size in enumerate((300, 200, 100, 50)):  # oldest first
        f = tmp_path / f"e{i}"
        f.write_bytes(b"x" * size)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    assert prune(tmp_path, 10_000) == 0 and len(_files(tmp_path)) == 4
    # 650 bytes down to <= 200: e0 (300) and e1 (200) go, e2 + e3 = 150 stay
    assert prune(tmp_path, 200) == 500
    assert _files(tmp_path) == {"e2", "e3"}
    assert prune(tmp_path, 0) == 150 and not _files(tmp_path)


def test_bad_arguments_name_the_argument(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"max_bytes must be an int >= 0; got -1"):
        jcv.use_compile_cache(tmp_path, max_bytes=-1)
    with pytest.raises(ValueError, match=r"min_compile_seconds must be a number >= 0"):
        jcv.use_compile_cache(tmp_path, min_compile_seconds="soon")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        with pytest.raises(ValueError, match=r"directory='.*a_file/xla' cannot hold"):
            jcv.use_compile_cache(blocker / "xla")
        assert jax.config.jax_compilation_cache_dir is None  # nothing half-set
        # the CLI: exit 2, the flag named, no traceback
        assert main(["--compile-cache", str(blocker / "xla"), "weights", "list"]) == 2
        err = capsys.readouterr().err
        assert "--compile-cache '" in err and "cannot hold the compilation cache" in err
        assert "Traceback" not in err
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
