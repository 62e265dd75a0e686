"""Where a run's training population lives (`data.layout`), decided once from the partition.

* `device`: padded to the largest client, `[clients, max_n, ...]`, on the device for the
  whole run (`engine.Simulation`): no work per round, memory = clients x largest client.
* `store`: unpadded in a host `data.PopulationStore`; each round's clients are gathered and
  moved (`engine.StreamedSimulation`): memory = the examples, plus two rounds' worth on
  the device.
* `auto`: `device` while the padded population takes at most `1 / DEVICE_SHARE` of the
  device's memory, else `store` (ARCHITECTURE.md, "Data flow of one round", says why).

The results are the same either way (float tolerance), so the key's role is "free".
"""

from __future__ import annotations

import os

import jax
import numpy as np

from fedjax_gen.data import options as data_options
from fedjax_gen.data.store import padded_bytes

DEVICE_SHARE = 4  # auto keeps the device layout up to a quarter of the device's memory


def device_capacity() -> tuple[int | None, str]:
  """`(bytes, what)`: the first device's memory (`memory_stats()["bytes_limit"]`), or on a
  backend that does not report it (XLA:CPU, whose device memory is the host's) the host's
  physical memory; `(None, ...)` where neither is known."""
  dev = jax.devices()[0]
  try:
    stats = dev.memory_stats() or {}
  except Exception:  # some backends raise instead of returning None
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{dev.device_kind} memory"
  try:
    return (int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")),
            "host memory, the CPU backend's device memory")
  except (ValueError, OSError, AttributeError):
    return None, "unknown"


def _size(n: int) -> str:
  if n >= 2**30:
    return f"{n / 2**30:.1f} GiB"
  return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def choose(config, sizes, example_shape, *, generative: bool = False, num_devices: int = 1,
           capacity: tuple[int | None, str] | None = None) -> str:
  """"device" or "store" for `config.data.layout` and a partition whose training clients
  hold `sizes` examples of `example_shape`. `generative`: the run appends synthetic
  examples to padded client arrays (GenFL, Gen-FedSD); `num_devices`: devices the client
  axis is sharded over; `capacity`: `device_capacity()` (default: measured). Raises one
  ValueError line where the layout asked for cannot run: `store` with a generative
  algorithm, a sharded client axis or the host-loop plan; `device` (or `auto` when the
  store cannot run) for a padded population larger than the device."""
  layout = config.data.layout
  if layout not in data_options.LAYOUTS:
    raise ValueError(f"Unknown data.layout {layout!r}; valid: "
                     f"{', '.join(data_options.LAYOUTS)}.")
  sizes = np.asarray(sizes)
  max_n = int(sizes.max()) if sizes.size else 0
  need = padded_bytes(len(sizes), max_n, example_shape)
  cap, what = capacity or device_capacity()
  blocked = fix = None  # why the store cannot run this config, and what would let it
  if generative:
    blocked = "generative algorithms append synthetic examples to padded client arrays"
    fix = "use data.layout=device"
  elif num_devices > 1:
    blocked = f"a population in a store trains on one device, not sharded over {num_devices}"
    fix = "set run.num_devices=1 or use data.layout=device"
  elif config.run.steps_per_call > 0:
    blocked = (f"it runs the fused round only, not the host loop (run.steps_per_call="
               f"{config.run.steps_per_call})")
    fix = "set run.steps_per_call=-1 or 0"
  if layout == "store":
    if blocked:
      raise ValueError(f"data.layout=store: {blocked}; {fix}.")
    return "store"
  room = None if cap is None else cap * max(num_devices, 1)
  if room is not None and need > room and (layout == "device" or blocked):
    per_example = int(np.prod(example_shape, dtype=np.int64)) * 4 + 4
    raise ValueError(
        f"data.layout={layout}: the training population padded to its largest client needs "
        f"{_size(need)} ({len(sizes)} clients x {max_n} examples x {per_example} bytes) but "
        f"the device has {_size(room)} ({what}); "
        + (f"data.layout=store cannot run instead: {blocked}." if blocked else
           "use data.layout=store, which moves only each round's clients."))
  if layout == "device" or blocked or room is None:
    return "device"
  return "device" if need * DEVICE_SHARE <= room else "store"
