"""Sampling throughput (images/s) of the generators, measured in one run on this machine.

* the class-conditional DDPM of `ddpm_fmnist` (its UNet, DDIM with guidance) at several
  sample-step counts and batch sizes; weights from a trained `generator/` folder if given
  (throughput does not depend on the weights), else random;
* Stable Diffusion through our jitted loop, on the tiny random pipeline (the only one that
  runs here; real weights: pass --sd-model with a hub id or folder).

Compile time is excluded and reported separately. Writes
`benchmarks/results/sampling_<device>.json` and a table in `BENCHMARKS.md` into `--out`
(default `./fedjax-gen-out/sampling`, each path printed); `--update-reports` writes the
committed `experiments/benchmarks/results/` and `experiments/BENCHMARKS.md` instead.

    python experiments/benchmarks/sampling.py
    python experiments/benchmarks/sampling.py --ddpm-dir experiments/runs/ddpm_fmnist/federated/generator
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(os.path.dirname(HERE)))  # fedjax_gen_bench, if not installed
from fedjax_gen_bench import reports as reports_lib  # noqa: E402

NAME = "sampling"  # its section of BENCHMARKS.md, and its output folder
BEGIN, END = f"<!-- {NAME}:begin -->", f"<!-- {NAME}:end -->"


def _device() -> str:
  d = jax.devices()[0]
  if d.platform == "cpu":
    model = ""
    if os.path.exists("/proc/cpuinfo"):
      m = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
      model = m.group(1).strip() if m else ""
    return f"CPU {model} ({os.cpu_count()} cores)"
  return d.device_kind


def _time(generator, num_images: int, repeats: int) -> dict:
  labels = np.arange(num_images) % generator.num_classes
  t0 = time.perf_counter()
  generator.generate(labels[:1], jax.random.key(0))
  compile_s = time.perf_counter() - t0
  times = []
  for r in range(repeats):
    t0 = time.perf_counter()
    generator.generate(labels, jax.random.key(r + 1))
    times.append(time.perf_counter() - t0)
  best = float(np.median(times))
  return {"images": num_images, "seconds": best, "images_per_s": num_images / best,
          "first_call_s": compile_s}


def bench_ddpm(args) -> list[dict]:
  from fedjax_gen import config as config_lib
  from fedjax_gen.diffusion.ddpm import DDPMGenerator, load_ddpm
  from fedjax_gen.trainer.ddpm_options import check_options
  if args.ddpm_dir:
    spec, params = load_ddpm(args.ddpm_dir)
  else:
    spec = check_options(config_lib.load_config("ddpm_fmnist"))  # the config's UNet
    params = spec.init_params(jax.random.key(0))
  rows = []
  for steps in args.ddpm_steps:
    for batch in args.ddpm_batch:
      g = DDPMGenerator(spec, params, sample_steps=steps, guidance_scale=2.0, batch_size=batch)
      row = {"generator": f"DDPM {spec.image_shape[0]}x{spec.image_shape[1]} "
                          f"UNet{list(spec.channels)}", "steps": steps, "batch": batch,
             **_time(g, batch * args.batches, args.repeats)}
      print(json.dumps(row))
      rows.append(row)
  return rows


def bench_sd(args) -> list[dict]:
  try:
    from fedjax_gen.diffusion import stable_diffusion as sd
  except ImportError as e:
    return [{"generator": "Stable Diffusion", "skipped": f"diffusers not installed ({e})"}]
  if args.sd_model:
    folder = args.sd_model
  else:  # the tests' tiny random pipeline (tests/tiny_sd.py, in a source checkout)
    try:
      from tests.tiny_sd import save_tiny_pipeline
    except ImportError as e:
      return [{"generator": "Stable Diffusion", "skipped": f"no --sd-model and no tiny "
               f"pipeline of a source checkout ({e})"}]
    folder = save_tiny_pipeline(tempfile.mkdtemp(prefix="tiny-sd-"))
  name = "SD (tiny random pipeline)" if not args.sd_model else f"SD {args.sd_model}"
  components = sd.load_components(folder)
  rows = []
  for steps in args.sd_steps:
    g = sd.StableDiffusionGenerator(components, [f"class {i}" for i in range(10)],
                                    (32, 32, 3), num_steps=steps, guidance_scale=7.5,
                                    batch_size=args.sd_batch)
    row = {"generator": name, "steps": steps, "batch": args.sd_batch,
           **_time(g, args.sd_batch * args.batches, args.repeats)}
    print(json.dumps(row))
    rows.append(row)
  return rows


def write_report(result: dict, reports: reports_lib.Reports) -> None:
  lines = [BEGIN, "## Sampling throughput", "",
           f"Device: {result['device']} (jax {result['jax']}). Command: "
           f"`{result.get('command', 'python experiments/benchmarks/sampling.py')}`; compile "
           "time excluded (first call "
           "shown separately); median of repeats.", "",
           "| generator | steps | batch | images/s | first call (s) |", "|---|---|---|---|---|"]
  for r in result["rows"]:
    if "skipped" in r:
      lines.append(f"| {r['generator']} | — | — | skipped: {r['skipped']} | — |")
    else:
      lines.append(f"| {r['generator']} | {r['steps']} | {r['batch']} | "
                   f"{r['images_per_s']:.2f} | {r['first_call_s']:.1f} |")
  lines.append(END)
  reports.write_section("BENCHMARKS.md", NAME, "\n".join(lines), heading="# Benchmarks")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--ddpm-dir", default="")
  p.add_argument("--ddpm-steps", type=int, nargs="+", default=[25, 50])
  p.add_argument("--ddpm-batch", type=int, nargs="+", default=[50, 250])
  p.add_argument("--sd-model", default="")
  p.add_argument("--sd-steps", type=int, nargs="+", default=[10])
  p.add_argument("--sd-batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=2)
  p.add_argument("--repeats", type=int, default=2)
  reports_lib.add_arguments(p, NAME)
  args = p.parse_args(argv)
  reports = reports_lib.Reports.from_args(args, NAME)
  result = {"device": _device(), "jax": jax.__version__,
            "command": " ".join(["python", "experiments/benchmarks/sampling.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "rows": bench_ddpm(args) + bench_sd(args)}
  tag = re.sub(r"[^a-z0-9]+", "_", result["device"].lower()).strip("_")[:40]
  reports.write_text(f"benchmarks/results/sampling_{tag}.json", json.dumps(result, indent=2))
  write_report(result, reports)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
