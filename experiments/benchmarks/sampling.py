"""Sampling throughput (images/s) of the generators, measured in one run on this machine.

* the class-conditional DDPM of `ddpm_fmnist` (its UNet, DDIM with guidance) at several
  sample-step counts and batch sizes; weights from a trained `generator/` folder if given
  (throughput does not depend on the weights), else random;
* Stable Diffusion through our jitted loop, on the tiny random pipeline (the only one that
  runs here; real weights: pass --sd-model with a hub id or folder).

Compile time is excluded and reported separately. Writes
`experiments/benchmarks/results/sampling_<device>.json` and a table into
`experiments/BENCHMARKS.md`.

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
NAME = "sampling"  # its section of BENCHMARKS.md
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
  from fedjax_gen.trainer.ddpm import validate
  if args.ddpm_dir:
    spec, params = load_ddpm(args.ddpm_dir)
  else:
    spec = validate(config_lib.load_config("ddpm_fmnist"))
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
  folder = args.sd_model or sd.save_tiny_pipeline(tempfile.mkdtemp(prefix="tiny-sd-"))
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


def write_report(result: dict, path: str) -> None:
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
  from fedjax_gen.outputs import write_marked_section
  write_marked_section(path, NAME, "\n".join(lines), heading="# Benchmarks")


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
  args = p.parse_args(argv)
  result = {"device": _device(), "jax": jax.__version__,
            "command": " ".join(["python", "experiments/benchmarks/sampling.py",
                                 *(sys.argv[1:] if argv is None else argv)]),
            "rows": bench_ddpm(args) + bench_sd(args)}
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  tag = re.sub(r"[^a-z0-9]+", "_", result["device"].lower()).strip("_")[:40]
  with open(os.path.join(HERE, "results", f"sampling_{tag}.json"), "w") as f:
    json.dump(result, f, indent=2)
  write_report(result, os.path.join(os.path.dirname(HERE), "BENCHMARKS.md"))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
