"""A decoded copy of a file-reading training set: every item's images decoded once into uint8 ``.npy`` arrays.

The retinal-edema and TDSNet originals read and decode their PNG/BMP files every epoch; on a GPU host that
decoding, not the network, bounds training (bench/input_pipeline.py). Their train scripts' ``--decode-cache``
decodes each file once into this cache and then gathers batches from memory-mapped uint8 arrays (the array
tasks' layout); the batches are the same, only faster.

Layout: ``<root>/<key>/`` with ``part0.npy``, ``part1.npy`` ... (one array per file of an item, e.g. image and
label; ``(n, *shape)`` uint8, in the order of ``sources``) and ``sources.json`` (the files and their size and
modification time). ``key`` is a hash of that list, so a changed, added or removed file makes a new cache
folder: an existing one is never rewritten. The folder is written under a temporary name and renamed when
complete, so an interrupted run leaves no half-written cache.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from common.data.io import atomic_dir
from common.errors import UserError


def _describe(sources):
    """The JSON-able record of ``sources`` (lists of paths, one list per item): path, size, mtime_ns."""
    items = []
    for files in sources:
        row = []
        for path in files:
            try:
                stat = os.stat(path)
            except OSError as exc:
                raise UserError(f"{path}: {exc.strerror or exc}; the training list names a file that cannot be "
                                f"read") from None
            row.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
        items.append(row)
    return items


def cache_key(sources, described=None):
    """A hash of the files' paths, sizes and modification times (changes when any file does); ``described``:
    ``_describe(sources)`` if already made."""
    text = json.dumps(_describe(sources) if described is None else described, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decoded_arrays(root, sources, read, *, verbose=True, what="files"):
    """Read-only memory maps ``[part0, part1, ...]`` of the decoded ``sources`` under ``root``.

    Args:
        root: folder of caches (created); the cache of these sources is ``root/<cache_key(sources)>``.
        sources: one sequence of paths per item (e.g. ``(image, label)``), every item with the same count.
        read: ``read(i) -> tuple`` of uint8 arrays of item ``i``, one per path; every item's arrays must have the
            first item's shapes (the training batches are stacked from them anyway).
        verbose: show a progress bar while decoding.
        what: the items' name in the progress bar.

    A cache that exists for exactly these files (paths, sizes, modification times) is reused as it is.
    """
    sources = [list(files) for files in sources]
    if not sources:
        raise UserError(f"{root}: no {what} to decode")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--decode-cache {root}: cannot create the folder ({exc.strerror or exc}); pass another "
                        f"DIR") from None
    described = _describe(sources)  # one stat per file: the key and the record of a new cache
    folder = root / cache_key(sources, described)
    parts = [folder / f"part{k}.npy" for k in range(len(sources[0]))]
    if not (folder / "sources.json").is_file():
        _write(folder, sources, described, parts, read, verbose=verbose, what=what)
    elif verbose:
        print(f"decode cache: reusing {folder} ({len(sources)} {what})")
    return [np.load(p, mmap_mode="r") for p in parts]


def _write(folder, sources, described, parts, read, *, verbose, what):
    from tqdm import tqdm

    from common.data.io import json_ready

    first = [np.asarray(a) for a in read(0)]
    for k, array in enumerate(first):
        if array.dtype != np.uint8:
            raise UserError(f"{sources[0][k]}: decoded to {array.dtype}, the decode cache holds uint8 images")
    nbytes = len(sources) * sum(a.nbytes for a in first)
    free = shutil.disk_usage(folder.parent).free
    if nbytes > free:  # checked first: a memory map on a full disk would crash the process (SIGBUS)
        raise UserError(f"--decode-cache {folder.parent}: the decoded {what} need {nbytes / 1e9:.2f} GB, "
                        f"{free / 1e9:.2f} GB are free there; pass a DIR on a disk with room, or leave the option "
                        f"out (the files are then read every epoch)")
    if verbose:
        print(f"decode cache: decoding {len(sources)} {what} once into {folder} ({nbytes / 1e9:.2f} GB)", flush=True)
    with atomic_dir(folder) as tmp:
        arrays = [np.lib.format.open_memmap(tmp / p.name, mode="w+", dtype=np.uint8, shape=(len(sources), *a.shape))
                  for p, a in zip(parts, first)]
        for i in tqdm(range(len(sources)), desc="decoding", unit=what.split()[-1], disable=not verbose):
            decoded = first if i == 0 else [np.asarray(a) for a in read(i)]
            for k, (array, out) in enumerate(zip(decoded, arrays)):
                if array.shape != out.shape[1:] or array.dtype != np.uint8:
                    raise UserError(f"{sources[i][k]}: {array.dtype} {'x'.join(map(str, array.shape))}, but "
                                    f"{sources[0][k]} is uint8 {'x'.join(map(str, out.shape[1:]))}; the decode "
                                    f"cache needs every file of this kind at one size")
                out[i] = array
        for array in arrays:
            array.flush()
        del arrays
        (tmp / "sources.json").write_text(json.dumps(json_ready({"items": described}), indent=1))
