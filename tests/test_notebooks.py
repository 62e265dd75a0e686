"""The tutorial notebooks run top to bottom in small mode (FEDJAX_GEN_SMALL=1) and their key
numbers are sane; the committed notebooks are the generator's output, without outputs; they
point to the repository of pyproject.toml's `[project.urls]`, never to a placeholder, and
use only what `pip install` of the package gives (no `experiments/` files, except linked on
the repository's web pages).

Each notebook writes `$FEDJAX_GEN_WORKDIR/notebook.json` in its last cell. The kernel
imports this checkout's `fedjax_gen` (PYTHONPATH), not an installed copy.

Small mode's budgets are a few rounds, so XLA compilation is most of a notebook's time; the
kernels run with XLA's cheap-compile flags (`FAST_COMPILE`: CPU time of the tiny DDPM run
65 s -> 30 s), except the benchmark's, whose numbers would then time unoptimized code.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
PFEDGPA = importlib.util.find_spec("fedjax_gen.algorithms.pfedgpa") is not None
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def execute(name: str, workdir, monkeypatch, fast_compile: bool = True) -> dict:
  """Runs notebooks/<name>.ipynb in small mode; returns its notebook.json."""
  if fast_compile:
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip())
  monkeypatch.setenv("FEDJAX_GEN_SMALL", "1")
  monkeypatch.setenv("FEDJAX_GEN_WORKDIR", str(workdir))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
  start = time.perf_counter()
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(workdir)}}).execute()
  print(f"{name}: {time.perf_counter() - start:.1f} s")
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, errors
  with open(os.path.join(workdir, "notebook.json")) as f:
    return json.load(f)


def test_01_quickstart(tmp_path, monkeypatch):
  out = execute("01_quickstart", tmp_path, monkeypatch)
  assert out["rounds"] == 10
  assert 0.5 < out["global_accuracy"] <= 1  # ~0.75 after 10 rounds; chance is 0.1
  assert (tmp_path / "accuracy.png").exists() and (tmp_path / "label_counts.png").exists()


def test_02_partitions_and_algorithms(tmp_path, monkeypatch):
  out = execute("02_partitions_and_algorithms", tmp_path, monkeypatch)
  assert set(out) == {"fedavg", "fedprox", "scaffold", "fedper"}
  for alg, acc in out.items():
    assert 0.2 < acc["global_accuracy"] <= 1, alg
    assert 0.2 < acc["personalized_accuracy"] <= 1, alg
  # a personal head fits each client's skewed label mix
  assert out["fedper"]["personalized_accuracy"] > out["fedper"]["global_accuracy"]
  for name in ("iid", "dirichlet", "label_k"):
    assert (tmp_path / f"labels_{name}.png").exists()


def test_03_generative_augmentation(tmp_path, monkeypatch):
  out = execute("03_generative_augmentation", tmp_path, monkeypatch)
  assert 0 <= out["cas"] <= 1 and out["frechet_distance"] >= 0
  assert out["gen_fedsd_synthetic_examples"] == 10 * 16  # fill_budget=16, 10 clients
  for alg in ("fedavg", "gen_fedsd", "genfl"):
    assert 0.1 < out[f"{alg}_global_accuracy"] <= 1, alg
  assert (tmp_path / "ddpm" / "samples.png").exists()


@pytest.mark.skipif(not PFEDGPA, reason="fedjax_gen.algorithms.pfedgpa (algorithm=pfedgpa) is not "
                    "in this checkout yet")
def test_04_pfedgpa(tmp_path, monkeypatch):
  out = execute("04_pfedgpa", tmp_path, monkeypatch)
  assert set(out) == {"pfedgpa", "plain_average", "local_only"}
  for run, s in out.items():
    assert 0.3 < s["personalized_accuracy"] <= 1, run  # chance is 0.1
    assert 0 <= s["new_client_accuracy"] <= 1, run
  # the diffusion is the server's work: plain averaging does not pay for it
  assert out["pfedgpa"]["server_s_per_round"] > out["plain_average"]["server_s_per_round"]


def test_05_benchmark(tmp_path, monkeypatch):
  out = execute("05_benchmark", tmp_path, monkeypatch, fast_compile=False)
  records = {r["runner"]: r for r in out["records"]}
  assert set(records) == {"fedjax_gen_auto", "jax_loop", "torch_loop"}
  for name in ("fedjax_gen_auto", "jax_loop"):
    assert records[name]["status"] == "ok" and records[name]["round_s"] > 0
  torch = importlib.util.find_spec("torch") is not None
  assert records["torch_loop"]["status"] == ("ok" if torch else "skipped")


def test_committed_notebooks_are_generated_and_carry_no_outputs():
  proc = subprocess.run([sys.executable, os.path.join(NOTEBOOKS, "make_notebooks.py"),
                         "--check"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for name in sorted(os.listdir(NOTEBOOKS)):
    if name.endswith(".ipynb"):
      nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
      code = [c for c in nb.cells if c.cell_type == "code"]
      assert all(not c.outputs and c.execution_count is None for c in code), name
      assert "FEDJAX_GEN_SMALL" in nb.cells[2].source, name  # the parameters cell
      assert "find_spec(\"fedjax_gen\") is None" in nb.cells[1].source, name  # install


def _sources() -> dict:
  """Every committed notebook's cells, and the generator's own text."""
  out = {}
  for name in sorted(os.listdir(NOTEBOOKS)):
    if name.endswith(".ipynb"):
      nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
      out[name] = "\n".join(c.source for c in nb.cells)
  with open(os.path.join(NOTEBOOKS, "make_notebooks.py")) as f:
    out["make_notebooks.py"] = f.read()
  return out


def _repository_url() -> str:
  try:
    import tomllib
  except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    urls = tomllib.load(f)["project"].get("urls", {})
  assert "Repository" in urls, "pyproject.toml has no [project.urls] Repository"
  return urls["Repository"].rstrip("/")


PLACEHOLDER = re.compile(r"placeholder|example\.(com|org)|your[-_]?(org|user|name|repo)|"
                         r"<(user|org|owner)>|OWNER/REPO|USERNAME", re.IGNORECASE)


def test_notebooks_point_to_the_repository_of_pyproject_and_to_no_placeholder():
  url = _repository_url()
  assert not PLACEHOLDER.search(url), url
  path = url.removeprefix("https://github.com/")
  for name, text in _sources().items():
    assert not PLACEHOLDER.search(text), (name, PLACEHOLDER.search(text).group())
    for link in re.findall(r"https://(?:colab\.research\.google\.com/)?github\.com/[^\s\"')]+",
                           text):
      assert f"github.com/{path}" in link, (name, link)  # github or colab: this repository
    if name.endswith(".ipynb"):
      assert f'REPO_URL = "{url}"' in text and "git+{REPO_URL}" in text, name  # install
      badge = f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{name}"
      assert badge in text, name


def test_notebooks_use_only_what_an_install_has():
  """A `pip install` from git has the packages, not `experiments/`: a notebook may link
  such a file on the repository's web pages, but never open, import or clone it."""
  url = re.escape(_repository_url())
  for name, text in _sources().items():
    if not name.endswith(".ipynb"):
      continue
    text = re.sub(rf"\[[^\]]*\]\({url}/blob/main/[^)]*\)", "", text)  # web links
    assert "experiments" not in text, (name, text[text.index("experiments") - 200:][:300])
    assert "git clone" not in text, name
