"""The records of a user's dataset, shared by the own-folder reader (``common.data.pairs``) and the nnU-Net
reader (``common.data.nnunet``); ``common.data.pairs`` hands them on under the same names."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    """One case.

    ====== ======================== ==========================================================================
    field  type                     meaning
    ====== ======================== ==========================================================================
    name   str                      image path relative to the images folder, ``/``-separated, without
                                    extension (nnU-Net: the case identifier)
    image  tuple[Path, ...]         one file, or the channel files in channel order (nnU-Net ``_0000``, ...)
    mask   Path | None              None: no label (nnU-Net ``imagesTs``, predict only)
    volume bool                     True for NIfTI volumes (3-D), sliced by the task
    ====== ======================== ==========================================================================
    """

    name: str
    image: tuple
    mask: Path | None
    volume: bool = False


@dataclass(frozen=True)
class OwnDataset:
    """A user's dataset.

    ============= ============================ =================================================================
    field         type                         meaning
    ============= ============================ =================================================================
    pairs         tuple[Pair, ...]             sorted by name
    labels        dict[int, str] | None        label value -> name (nnU-Net ``labels``, colour table) or None
    test          tuple[Pair, ...]             nnU-Net ``imagesTs`` (mask None)
    source        str                          ``"folders"`` | ``"nnunet"`` (for split.json / run.json)
    label_colours dict[int, tuple] | None      colour-coded RGB masks: label -> (r, g, b); pass it to
                                               ``read_pair(..., label_colours=dataset.label_colours)``
    ============= ============================ =================================================================
    """

    pairs: tuple
    labels: dict | None
    test: tuple = ()
    source: str = ""
    label_colours: dict | None = None
