"""Test set-up: eight simulated CPU devices, fast XLA compilation and no network, set before anything imports jax.

The session also turns on JAX's persistent compilation cache in a temporary directory (removed at the
end), shared by the pytest-xdist workers: many tests build the same tiny models and compile the same
programs again (each ``loop.train`` makes fresh jitted functions), and a cache hit loads the executable
XLA compiled before instead of compiling it again. It changes no numbers: the cached executable is the
one the compilation would produce. Processes the tests start (``mgpt`` on the command line) do not use
it, and a test that points JAX at its own cache directory still gets an empty one.
"""

import os
import shutil
import tempfile

# LLVM's optimisation of XLA's CPU code is most of a compilation, and the tests' tiny programs gain nothing
# from it: level 0 compiles about a third faster. Every run in the suite compiles the same way, so runs the tests
# compare with each other (resumed and straight, sharded and not) stay comparable. MGPT_TESTS_XLA_EXTRA="" turns
# it off; processes and kernels the tests start with their own XLA_FLAGS add it too.
os.environ.setdefault("MGPT_TESTS_XLA_EXTRA", "--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8",
                                    os.environ["MGPT_TESTS_XLA_EXTRA"]]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The first process (pytest itself, or the xdist controller) makes the directory; xdist workers inherit it.
_CACHE_ENV = "MGPT_TESTS_COMPILATION_CACHE"
_OWN_CACHE = _CACHE_ENV not in os.environ
if _OWN_CACHE:
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="mgpt-tests-xla-cache-")


def _enable_compilation_cache(directory):
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ.get("MGPT_TESTS_CACHE_MIN", "0")))
    if os.environ.get("MGPT_TESTS_CACHE_MAX"):
        jax.config.update("jax_compilation_cache_max_size", int(os.environ["MGPT_TESTS_CACHE_MAX"]))


def pytest_configure(config):
    if os.environ.get("MGPT_TESTS_NO_COMPILATION_CACHE") != "1":
        base = os.environ[_CACHE_ENV]
        if os.environ.get("MGPT_TESTS_CACHE_SHARED") != "1":
            base = os.path.join(base, os.environ.get("PYTEST_XDIST_WORKER", "main"))
        _enable_compilation_cache(base)


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)
