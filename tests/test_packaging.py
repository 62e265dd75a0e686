"""What the distribution declares matches what it ships: the license file, the packages."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10
  tomllib = pytest.importorskip("tomli")

# SPDX id -> what the first lines of its license text say.
LICENSE_TITLES = {"Apache-2.0": r"Apache License\s+Version 2\.0"}


def _pyproject() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_license_file_is_the_license_pyproject_names():
  license_id = _pyproject()["project"]["license"]["text"]
  assert license_id in LICENSE_TITLES, f"no known text for {license_id!r}"
  path = os.path.join(ROOT, "LICENSE")
  assert os.path.exists(path), "LICENSE is missing"
  with open(path) as f:
    head = f.read(500)
  assert re.search(LICENSE_TITLES[license_id], head), head


def test_the_benchmarks_ship_beside_the_library_and_the_studies_do_not():
  """`fedjax-gen bench` needs fedjax_gen_bench in an install; experiments/ stays out."""
  from setuptools import find_packages
  found = set(find_packages(ROOT, include=_pyproject()["tool"]["setuptools"]["packages"]
                                                       ["find"]["include"]))
  assert {"fedjax_gen", "fedjax_gen.engine", "fedjax_gen_bench"} <= found
  assert not {p for p in found if p.split(".")[0] not in ("fedjax_gen", "fedjax_gen_bench")}
