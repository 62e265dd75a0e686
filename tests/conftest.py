import os
import shutil
import sys
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# One JAX compilation cache for the whole session, fresh each time: many tests compile the
# same rounds (quickstart's MLP, the tiny UNet) in their own processes or closures, and
# XLA's CPU compiles dominate them. Shared across pytest-xdist workers and the subprocesses
# tests start (they inherit the environment); a size limit makes JAX lock the folder, so
# processes never read an entry half written. Results do not change: a hit loads the same
# executable a compile would make.
CACHE = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": 0.2,
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": -1,
         "JAX_COMPILATION_CACHE_MAX_SIZE": 4 << 30}


def pytest_configure(config):
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # an xdist worker (it inherited the controller's), or the user chose one
  path = tempfile.mkdtemp(prefix="fedjax-gen-tests-jax-cache-")
  os.environ.update(JAX_COMPILATION_CACHE_DIR=path, **{k: str(v) for k, v in CACHE.items()})
  config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
  if "jax" in sys.modules:  # imported by a plugin before this hook: tell it directly
    import jax
    jax.config.update("jax_compilation_cache_dir", path)
    for key, value in CACHE.items():
      jax.config.update(key.lower(), value)
