"""Where the benchmark and experiment scripts write: an output folder, or the committed reports.

Every writer (`fedjax-gen bench`, `experiments/*_bench.py`, `experiments/benchmarks/*.py`)
writes into `--out DIR` (default `./fedjax-gen-out/<script>`, under the current directory)
and prints each file it wrote, so running a command from the README never changes the
repository. Only `--update-reports` rewrites the committed reports of a source checkout
(`experiments/BENCHMARKS.md`, `RESULTS.md`, `results/`, `benchmarks/results/`). Both keep the
paths relative to `experiments/` (`RESULTS.md`, `results/NAME.json`), so a report's image
links hold in either. Earlier results (to resume, extend or re-render) are read from the
output folder, or where it has none yet, from the committed reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

OUT = "fedjax-gen-out"
FLAG = "--update-reports"
# The committed reports: `experiments/` beside this package in a source checkout.
CHECKOUT_REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments")


def add_arguments(parser: argparse.ArgumentParser, script: str) -> None:
  """`--out DIR` and `--update-reports` (exclusive), for `Reports.from_args`."""
  group = parser.add_argument_group("where results go").add_mutually_exclusive_group()
  group.add_argument("--out", metavar="DIR",
                     help=f"folder to write into (default ./{OUT}/{script}); earlier results "
                          "there are resumed")
  group.add_argument(FLAG, action="store_true",
                     help="rewrite the committed reports of this source checkout "
                          "(experiments/) instead of writing into --out")


def committed_reports() -> str | None:
  """The checkout's `experiments/` folder, or None where this is an install without one."""
  marker = os.path.join(CHECKOUT_REPORTS, "BENCHMARKS.md")
  return CHECKOUT_REPORTS if os.path.isfile(marker) else None


class Reports:
  """The folder a run writes into (`root`) and the committed reports (`committed`, None
  outside a source checkout) it may start from."""

  def __init__(self, root: str, committed: str | None = None):
    self.root = os.path.abspath(root)
    self.committed = committed
    self._printed = set()

  @classmethod
  def from_args(cls, args: argparse.Namespace, script: str) -> "Reports":
    committed = committed_reports()
    if args.update_reports:
      if committed is None:
        raise SystemExit(f"{FLAG} rewrites the reports of a source checkout (experiments/ "
                         "beside fedjax_gen_bench); this is an install: drop the flag to "
                         f"write into ./{OUT}/{script}.")
      return cls(committed, committed)
    return cls(args.out or os.path.join(OUT, script), committed)

  def path(self, rel: str) -> str:
    """Where to write `rel` (relative to `experiments/`); its folder is created."""
    path = os.path.join(self.root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def existing(self, rel: str) -> str | None:
    """Earlier results `rel`: the output folder's, else the committed ones; None if neither."""
    for base in (self.root, self.committed):
      if base and os.path.exists(os.path.join(base, rel)):
        return os.path.join(base, rel)
    return None

  def previous_json(self, rel: str):
    """The earlier results `rel` (`existing`), read; for `--report-only`, which has nothing
    to render without them."""
    previous = self.existing(rel)
    if not previous:
      raise SystemExit(f"--report-only: no results in {self.path(rel)}")
    with open(previous) as f:
      return json.load(f)

  def names(self, rel_dir: str) -> list[str]:
    """Sorted file names in `rel_dir` of the output folder and of the committed reports."""
    found = set()
    for base in (self.root, self.committed):
      folder = os.path.join(base, rel_dir) if base else ""
      if folder and os.path.isdir(folder):
        found.update(os.listdir(folder))
    return sorted(found)

  def wrote(self, path: str) -> None:
    """Prints `wrote PATH` (relative to the current directory where inside it), once."""
    if path in self._printed:
      return
    self._printed.add(path)
    rel = os.path.relpath(path)
    print(f"wrote {path if rel.startswith(os.pardir) else rel}", flush=True)

  # Writers: atomic (fedjax_gen.outputs), each printing what it wrote.
  def write_text(self, rel: str, text: str) -> str:
    from fedjax_gen.outputs import atomic_write
    path = self.path(rel)
    atomic_write(path, text)
    self.wrote(path)
    return path

  def write_section(self, rel: str, name: str, block: str, *, heading: str) -> str:
    """Replaces (or adds) the `<!-- name:begin/end -->` section of the markdown file `rel`."""
    from fedjax_gen.outputs import write_marked_section
    path = self.path(rel)
    write_marked_section(path, name, block, heading=heading)
    self.wrote(path)
    return path

  def save_figure(self, rel: str, fig, *, dpi: int) -> str:
    from fedjax_gen.outputs import save_figure
    path = self.path(rel)
    save_figure(fig, path, dpi=dpi)
    self.wrote(path)
    return path

  def copy(self, src: str, rel: str) -> str:
    path = self.path(rel)
    shutil.copyfile(src, path)
    self.wrote(path)
    return path
