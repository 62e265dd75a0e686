"""A population on the host: every client's examples in one flat ragged array, no padding.

`data.federated.stack_clients` pads every client to the largest one, so a population costs
clients x largest client, however small the typical client is (10^6 clients of median 20
and largest 2,000 examples of 28x28 floats: 6 TB). A `PopulationStore` holds instead

* `x_base [N, ...]`, `y_base [N]`: the examples (a dataset's train split, or any base
  array: a client's examples may repeat another's);
* `index [E]` (int32, int64 past 2^31 examples): every client's examples as indices into
  the base, client after client;
* `offsets [C + 1]` (int64): client `c` holds `index[offsets[c]:offsets[c + 1]]`.

10^6 clients of mean 63 examples: 250 MB of indices and 8 MB of offsets beside the base.
`gather(ids, pad_to)` builds the padded `ClientData` of a few clients (what a round
trains on); `gather_flat(ids, total)` the same examples back to back (what
`engine.streamed.StreamedSimulation` moves to the device). `save(folder)` writes the four
arrays with `np.save` and a small `index.json`; `PopulationStore.open(folder)` maps them
(`np.load(mmap_mode="r")`: only the rows a round gathers are read) after checking that the
files match the index. NumPy only.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple, Sequence

import numpy as np

from fedjax_gen.types import ClientData

FORMAT = "fedjax-gen population store"
VERSION = 1
ARRAYS = ("x_base", "y_base", "index", "offsets")


class FlatClients(NamedTuple):
  """Some clients' examples back to back: client `i` is rows `start[i]:start[i] + count[i]`
  of `x` and `y`; rows past the last client (up to `total`) are zeros."""
  x: np.ndarray      # [total, *example_shape] float32
  y: np.ndarray      # [total] int32
  start: np.ndarray  # [m] int32
  count: np.ndarray  # [m] int32


def _fail(where: str, what: str) -> ValueError:
  return ValueError(f"{where}: {what}")


def _check(x_base, y_base, index, offsets, where: str) -> None:
  """Raises one ValueError line naming the first mismatch between the four arrays."""
  if x_base.ndim < 1 or y_base.ndim != 1 or len(x_base) != len(y_base):
    raise _fail(where, f"x_base {x_base.shape} and y_base {y_base.shape} must hold the same "
                       "number of examples (y_base 1-D).")
  if not np.issubdtype(y_base.dtype, np.integer):
    raise _fail(where, f"y_base must hold integer labels, got {y_base.dtype}.")
  if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
    raise _fail(where, f"index must be a 1-D integer array, got shape {index.shape} "
                       f"dtype {index.dtype}.")
  if offsets.ndim != 1 or len(offsets) < 2 or not np.issubdtype(offsets.dtype, np.integer):
    raise _fail(where, f"offsets must be a 1-D integer array of clients + 1 >= 2 entries, "
                       f"got shape {offsets.shape} dtype {offsets.dtype}.")
  if offsets[0] != 0 or offsets[-1] != len(index):
    raise _fail(where, f"offsets must start at 0 and end at len(index)={len(index)}, got "
                       f"{int(offsets[0])} .. {int(offsets[-1])}.")
  steps = np.diff(offsets)
  if (steps < 0).any():
    bad = int(np.flatnonzero(steps < 0)[0])
    raise _fail(where, f"offsets must not decrease, but offsets[{bad + 1}]="
                       f"{int(offsets[bad + 1])} < offsets[{bad}]={int(offsets[bad])}.")
  if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(x_base)):
    raise _fail(where, f"index holds values in [{int(index.min())}, {int(index.max())}], "
                       f"outside the base's {len(x_base)} examples.")


def index_dtype(num_base: int) -> np.dtype:
  """int32 while the base has fewer than 2^31 examples, else int64."""
  return np.dtype(np.int32 if num_base < 2**31 else np.int64)


class PopulationStore:
  """Clients' examples as indices into a base array (see the module docstring).

  Args:
    x_base: `[N, *example_shape]` examples (any dtype; gathered as float32).
    y_base: `[N]` integer labels.
    index: `[E]` integer indices into the base, client after client.
    offsets: `[C + 1]` non-decreasing, from 0 to `E`.
  """

  def __init__(self, x_base, y_base, index, offsets, *, where: str = "PopulationStore"):
    x_base, y_base = np.asanyarray(x_base), np.asanyarray(y_base)
    index, offsets = np.asanyarray(index), np.asanyarray(offsets)
    _check(x_base, y_base, index, offsets, where)
    self.x_base, self.y_base, self.index = x_base, y_base, index
    self.offsets = offsets.astype(np.int64, copy=False)
    self.sizes = np.diff(self.offsets).astype(np.int32)  # [C] examples per client
    self.where = where

  # --- shape -----------------------------------------------------------------------------
  @property
  def num_clients(self) -> int:
    return len(self.offsets) - 1

  @property
  def num_examples(self) -> int:
    return len(self.index)

  @property
  def example_shape(self) -> tuple[int, ...]:
    return tuple(self.x_base.shape[1:])

  @property
  def max_size(self) -> int:
    return int(self.sizes.max()) if self.num_clients else 0

  def padded_bytes(self) -> int:
    """Bytes of this population as padded float32 arrays (`stack_clients`)."""
    return padded_bytes(self.num_clients, self.max_size, self.example_shape)

  def nbytes(self) -> int:
    return sum(int(getattr(self, a).nbytes) for a in ARRAYS)

  def __repr__(self) -> str:
    return (f"PopulationStore({self.num_clients} clients, {self.num_examples} examples of "
            f"{self.example_shape}, sizes {int(self.sizes.min()) if self.num_clients else 0}"
            f"..{self.max_size}, base {len(self.x_base)})")

  # --- building ----------------------------------------------------------------------------
  @classmethod
  def from_indices(cls, x, y, indices: Sequence[np.ndarray]) -> "PopulationStore":
    """The store of per-client index lists into `x`/`y` (what the partitioners return and
    `stack_clients` pads); a client's examples keep the order of its list."""
    x, y = np.asarray(x), np.asarray(y)
    if len(indices) == 0:
      raise ValueError("indices is empty; pass one index array per client.")
    sizes = np.array([np.size(i) for i in indices], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    flat = (np.concatenate([np.asarray(i).reshape(-1) for i in indices]) if offsets[-1]
            else np.zeros(0, np.int64))
    return cls(x, y, flat.astype(index_dtype(len(x))), offsets)

  # --- gathering -----------------------------------------------------------------------------
  def _ids(self, ids) -> np.ndarray:
    ids = np.asarray(ids).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"client ids must be integers, got {ids.dtype}.")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= self.num_clients):
      bad = int(ids[(ids < 0) | (ids >= self.num_clients)][0])
      raise ValueError(f"client id {bad} is outside this population of {self.num_clients} "
                       f"clients (ids 0..{self.num_clients - 1}).")
    return ids

  def _rows(self, ids: np.ndarray):
    """(rows into the base, each client's count, each client's first position)."""
    lo = self.offsets[ids]
    count = (self.offsets[ids + 1] - lo).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    pos = np.repeat(lo - start, count) + np.arange(int(count.sum()))
    return np.asarray(self.index[pos], np.int64), count, start

  def _take_x(self, rows: np.ndarray, out: np.ndarray) -> None:
    if self.x_base.dtype == out.dtype and len(rows):
      np.take(self.x_base, rows, axis=0, out=out)
    else:
      out[...] = self.x_base[rows]

  def gather(self, ids, pad_to: int | None = None) -> ClientData:
    """Clients `ids` as padded NumPy arrays: `x [m, pad_to, ...]` float32, `y [m, pad_to]`
    int32 (zeros past each client's count), `count [m]` int32; `pad_to` defaults to the
    largest of them. The same arrays `stack_clients` makes of their index lists."""
    ids = self._ids(ids)
    rows, count, start = self._rows(ids)
    biggest = int(count.max()) if len(count) else 0
    pad_to = biggest if pad_to is None else int(pad_to)
    if pad_to < biggest:
      raise ValueError(f"pad_to={pad_to} is smaller than the largest gathered client "
                       f"({biggest} examples); pad to at least {biggest}.")
    client = np.repeat(np.arange(len(ids)), count)
    col = np.arange(len(rows)) - np.repeat(start, count)
    x = np.zeros((len(ids), pad_to, *self.example_shape), np.float32)
    y = np.zeros((len(ids), pad_to), np.int32)
    flat = np.empty((len(rows), *self.example_shape), np.float32)
    self._take_x(rows, flat)
    x[client, col] = flat
    y[client, col] = self.y_base[rows]
    return ClientData(x, y, count.astype(np.int32))

  def gather_flat(self, ids, total: int | None = None) -> FlatClients:
    """Clients `ids` back to back (`FlatClients`), in `total` rows (default: exactly their
    examples; more rows are zeros)."""
    ids = self._ids(ids)
    rows, count, start = self._rows(ids)
    total = len(rows) if total is None else int(total)
    if total < len(rows):
      raise ValueError(f"total={total} rows cannot hold the {len(rows)} examples of these "
                       f"{len(ids)} clients.")
    x = np.zeros((total, *self.example_shape), np.float32)
    y = np.zeros((total,), np.int32)
    self._take_x(rows, x[:len(rows)])
    y[:len(rows)] = self.y_base[rows]
    return FlatClients(x, y, start.astype(np.int32), count.astype(np.int32))

  def examples(self, clients, positions) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` of example `positions[k]` of client `clients[k]` (as `padded.x[clients,
    positions]` would read them)."""
    clients = self._ids(clients)
    positions = np.asarray(positions, np.int64).reshape(-1)
    if positions.size and ((positions < 0) | (positions >= self.sizes[clients])).any():
      raise ValueError("positions must lie within each client's examples.")
    rows = np.asarray(self.index[self.offsets[clients] + positions], np.int64)
    return np.asarray(self.x_base[rows], np.float32), np.asarray(self.y_base[rows], np.int32)

  def to_arrays(self, pad_to: int | None = None) -> ClientData:
    """Every client padded (the layout `stack_clients` gives): small populations only."""
    return self.gather(np.arange(self.num_clients), pad_to)

  # --- files ---------------------------------------------------------------------------------
  def save(self, folder: str) -> str:
    """Writes `x_base.npy`, `y_base.npy`, `index.npy`, `offsets.npy` and `index.json` (their
    shapes and dtypes) into `folder`; the JSON last, so a folder with one is complete."""
    os.makedirs(folder, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "num_clients": self.num_clients,
            "num_examples": self.num_examples, "arrays": {}}
    for name in ARRAYS:
      a = np.asarray(getattr(self, name))
      np.save(os.path.join(folder, f"{name}.npy"), a, allow_pickle=False)
      meta["arrays"][name] = {"shape": list(a.shape), "dtype": a.dtype.str}
    tmp = os.path.join(folder, "index.json.tmp")
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(folder, "index.json"))
    return folder

  @classmethod
  def open(cls, folder: str, *, mmap: bool = True) -> "PopulationStore":
    """The store saved in `folder`, its arrays memory-mapped (`mmap`) or read. Raises one
    ValueError line when a file is missing, unreadable, or does not match `index.json`
    (shape, dtype) or the others (offsets from 0 to len(index), non-decreasing; indices
    within the base)."""
    meta_path = os.path.join(folder, "index.json")
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except FileNotFoundError:
      raise _fail(folder, "no index.json: not a population store (write one with "
                          "PopulationStore.save).") from None
    except (OSError, ValueError) as e:
      raise _fail(folder, f"index.json is unreadable ({type(e).__name__}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
      raise _fail(folder, f"index.json is not a {FORMAT!r} index.")
    if meta.get("version") != VERSION:
      raise _fail(folder, f"index.json has version {meta.get('version')!r}; this fedjax-gen "
                          f"reads version {VERSION}.")
    arrays = {}
    for name in ARRAYS:
      want = (meta.get("arrays") or {}).get(name)
      path = os.path.join(folder, f"{name}.npy")
      if not isinstance(want, dict):
        raise _fail(folder, f"index.json does not describe {name}.")
      try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
      except FileNotFoundError:
        raise _fail(folder, f"{name}.npy is missing.") from None
      except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0][:120]
        raise _fail(folder, f"{name}.npy is unreadable ({type(e).__name__}: {first}).") from None
      if list(a.shape) != list(want.get("shape", [])) or a.dtype.str != want.get("dtype"):
        raise _fail(folder, f"{name}.npy holds {a.dtype.str} {list(a.shape)} but index.json "
                            f"says {want.get('dtype')} {want.get('shape')}.")
      arrays[name] = a
    if (len(arrays["offsets"]) - 1 != meta.get("num_clients")
        or len(arrays["index"]) != meta.get("num_examples")):
      raise _fail(folder, f"index.json counts {meta.get('num_clients')} clients and "
                          f"{meta.get('num_examples')} examples; the arrays hold "
                          f"{len(arrays['offsets']) - 1} and {len(arrays['index'])}.")
    return cls(**arrays, where=folder)


def padded_bytes(num_clients: int, max_n: int, example_shape: Sequence[int],
                 itemsize: int = 4) -> int:
  """Bytes of `num_clients` clients padded to `max_n` examples (`stack_clients`'s float32
  `x`, int32 `y` and the counts)."""
  per_example = int(np.prod(example_shape, dtype=np.int64)) * itemsize + 4
  return int(num_clients) * int(max_n) * per_example + 4 * int(num_clients)


def power_law_sizes(num_clients: int, *, median: int = 20, max_size: int = 2000,
                    seed: int = 0) -> np.ndarray:
  """`num_clients` client sizes from a Pareto law of exponent 1 (`P(size >= s) = s_min / s`,
  `s_min = median / 2`, so half the clients hold at most `median` examples), rounded down
  and capped at `max_size` (so at least `s_min`). Mean about `s_min * (1 + ln(max_size / s_min))` (63 for the
  defaults); the share of clients at the cap is `s_min / max_size` (0.5%)."""
  if num_clients < 1 or not 1 <= median <= max_size:
    raise ValueError(f"need num_clients >= 1 and 1 <= median <= max_size, got "
                     f"{num_clients}, {median}, {max_size}.")
  u = np.random.default_rng([seed, 7]).random(num_clients)
  sizes = np.floor((median / 2) / np.maximum(u, 1e-12))
  return np.clip(sizes, 1, max_size).astype(np.int32)


def power_law_population(x_base, y_base, num_clients: int, *, median: int = 20,
                         max_size: int = 2000, seed: int = 0) -> PopulationStore:
  """A synthetic population for benchmarks: `power_law_sizes` clients whose examples are
  drawn uniformly with replacement from the base (seeded). Built in chunks, so 10^6 clients
  take about the index's own memory (4 bytes an example)."""
  x_base, y_base = np.asarray(x_base), np.asarray(y_base)
  sizes = power_law_sizes(num_clients, median=median, max_size=max_size, seed=seed)
  offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
  dtype = index_dtype(len(x_base))
  index = np.empty(int(offsets[-1]), dtype)
  rng = np.random.default_rng([seed, 8])
  step = 1 << 24
  for s in range(0, len(index), step):
    index[s:s + step] = rng.integers(0, len(x_base), min(step, len(index) - s), dtype=dtype)
  return PopulationStore(x_base, y_base, index, offsets)
