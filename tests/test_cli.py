"""common.cli.run: one line `error: <file or option>: <what>` and exit status 2 for every user error."""

import pytest

from common import cli
from common.data.io import DataLayoutError, ImageReadError
from common.errors import OptionError, UserError


@pytest.mark.parametrize("exc, line", [
    (UserError("a.npy: wrong shape (3, 4); expected (N, 420, 580)"),
     "error: a.npy: wrong shape (3, 4); expected (N, 420, 580)"),
    (OptionError("--strategy: unknown"), "error: --strategy: unknown"),
    (DataLayoutError("data/x: folder not found"), "error: data/x: folder not found"),
    (ImageReadError("f.png: cannot decode\nimage"), "error: f.png: cannot decode image"),
    (FileNotFoundError(2, "No such file or directory", "weights.h5"), "error: weights.h5: No such file or directory"),
])
def test_user_errors_give_one_line_and_exit_2(capsys, exc, line):
    def main(argv):
        raise exc

    with pytest.raises(SystemExit) as stop:
        cli.run(main, [])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == line + "\n"


def test_programming_errors_are_not_hidden():
    def main(argv):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        cli.run(main, [])


def test_training_option_errors_are_user_errors(monkeypatch):
    from common.training import get_strategy, split_last

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(OptionError, match="--strategy multi_worker: needs the TF_CONFIG"):
        get_strategy("multi_worker")
    with pytest.raises(UserError, match="validation split: 0.0 of 10 samples leaves an empty"):
        split_last(0.0, list(range(10)))


def test_bad_options_give_one_line(capsys):
    import argparse

    def main(argv):
        parser = argparse.ArgumentParser(prog="train.py")
        parser.add_argument("--model", choices=("a", "b"), default="a")
        parser.add_argument("--epochs", type=int, default=1)
        parser.parse_args(argv)
        return 0

    for argv, start in ((["--model", "c"], "error: --model: invalid choice: 'c'"),
                        (["--epochs", "x"], "error: --epochs: invalid int value: 'x'"),
                        (["--nope"], "error: unrecognized arguments: --nope")):
        with pytest.raises(SystemExit) as stop:
            cli.run(main, argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.endswith("(see train.py --help)\n") and err.count("\n") == 1, err
    assert cli.run(main, []) == 0
    assert argparse.ArgumentParser.error is not cli._argparse_error  # restored after the run
