"""The options every train script shares (``--resume``, ``--overwrite``, ``--strategy``, ...) and run-folder
names, without TensorFlow: a script's ``--help`` builds its parser from these alone. ``common.training``
re-exports every name here."""


STRATEGIES = ("default", "mirrored", "multi_worker")
#: the losses of ``--multiclass-loss`` (``common.losses.MulticlassLoss``): cross-entropy, foreground soft Dice, both
MULTICLASS_LOSSES = ("ce", "dice", "ce_dice")


def positive_int(text):
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_strategy_argument(parser):
    """``--strategy`` and ``--data-workers``: how a run uses the machine's devices and CPU cores (neither
    changes what is computed)."""
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="tf.distribute strategy: default (one device), mirrored (all local devices) or "
                             "multi_worker (several machines, cluster given by TF_CONFIG; run the same command "
                             "on every worker). Default: %(default)s")
    parser.add_argument("--data-workers", type=positive_int, default=1, metavar="N",
                        help="batches the input pipeline prepares in parallel (tf.data map calls); the batches and "
                             "their order are the same for every N. On a GPU machine give it a few CPU cores "
                             "(e.g. 4-8: see bench/input_pipeline.py); on a CPU-only machine the default leaves "
                             "the cores to the model. Default: %(default)s")


def add_decode_cache_argument(parser, folder_option):
    """``--decode-cache [DIR]`` of the train scripts that read image files every epoch (retinal_edema, TDSNet):
    decode them once into uint8 arrays (common.data.decode_cache) and normalise on the device. Without DIR:
    ``decoded/`` in the folder of ``folder_option`` (:func:`decode_cache_dir`)."""
    default = f"<{folder_option.lstrip('-')}>/decoded"
    parser.add_argument("--decode-cache", nargs="?", const=default, default=None, metavar="DIR",
                        help="decode the training images once into uint8 arrays under DIR (default DIR: "
                             f"{default}; as large as the images uncompressed; reused while the files are "
                             "unchanged) and normalise them inside the training step, on the device: the same "
                             "batches, for a GPU, whose steps would otherwise wait for the PNG decoding (see "
                             "bench/input_pipeline.py). Default: off, the original's reading of every file every "
                             "epoch")


def decode_cache_dir(value, folder):
    """The folder of ``--decode-cache``: None (off), ``folder/decoded`` (given without DIR) or DIR."""
    from pathlib import Path

    if value is None:
        return None
    return Path(folder) / "decoded" if value.startswith("<") else Path(value)


def tagged_name(base, tags):
    """A default run or results folder's name: ``base`` plus ``_<tag>`` for every ``(value, default, tag)`` of
    ``tags`` whose value is given (not None) and differs from its default; ``tag`` is a format string of the
    value (``"lr{:g}"``, ``"bidirectional"``) or a function of it. Every train script names its default run
    folder so, and every evaluate script its results folder: the original's settings get ``base``, and two
    recipes (or evaluations) never share a folder."""
    parts = [base]
    for value, default, tag in tags:
        if value is not None and value != default:
            parts.append(tag(value) if callable(tag) else tag.format(value))
    return "_".join(parts)


def add_run_arguments(parser, resume_help="continue an interrupted run in --run-dir"):
    """The options every train script shares: ``--resume``, ``--overwrite``, ``--verbose``, ``--strategy``,
    ``--data-workers``, ``--mixed-precision`` and ``--jit-compile``."""
    from common.devices import add_precision_arguments

    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the run folder (default: refuse to start a fresh run "
                             "there; --resume continues it)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    add_strategy_argument(parser)
    add_precision_arguments(parser, jit_compile=True)
