"""The task descriptors (``<task>/task.py``) and their registry ``common.tasks``.

Expected recipes are the spec's numbers (../shared/specs/*.md), typed here from the spec text, not read from
the code under test.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _cli import BLOCK_FRAMEWORKS
from common.errors import UserError
from common.tasks import available_tasks, get_task

ROOT = Path(__file__).resolve().parents[1]
SEVEN = ["fingernail", "lung", "retina_vessel", "retinal_edema", "robotic_scene", "skin_lesion", "ultrasound_nerve"]

# spec bcdu_net.md 5.1 (ISIC / DRIVE / lung), ultrasound_nerve.md "Loss, metric, optimizer, fit",
# fingernail.md 3, retinal_edema.md 4, tdsnet.md 2.1
SPEC = {
    "skin_lesion": {"optimizer": "adam", "lr": 1e-4, "loss": "binary_crossentropy", "batch_size": 8, "epochs": 100,
                    "monitor": "val_loss", "shuffle": True},
    "retina_vessel": {"optimizer": "adam", "lr": 1e-4, "loss": "binary_crossentropy", "batch_size": 8,
                      "epochs": 50, "val_split": 0.2, "monitor": "val_loss", "shuffle": True},
    "lung": {"optimizer": "adam", "lr": 1e-4, "loss": "binary_crossentropy", "batch_size": 2, "epochs": 50,
             "val_split": 0.2, "monitor": "val_loss", "shuffle": True},
    "ultrasound_nerve": {"optimizer": "adam", "lr": 1e-5, "loss": "dice_coef_loss", "batch_size": 32, "epochs": 20,
                         "val_split": 0.2, "img_size": 96, "monitor": "val_loss", "shuffle": True},
    "fingernail": {"optimizer": "adam", "lr": 1e-5, "lr_decay": 1.99e-7, "loss": "bce_dice", "batch_size": 2,
                   "epochs": 220, "shuffle": False, "seed": 144, "monitor": "val_dice_metric"},
    "retinal_edema": {"epochs": 100, "lr": 1e-3, "weight_decay": 1e-4, "step": 20, "seed": 1234, "shuffle": True,
                      "drop_last": True},
    "robotic_scene": {"optimizer": "adam", "batch_size": 1, "shuffle": True},
}
ADAM = {"skin_lesion": (0.9, 0.999, 1e-7), "retina_vessel": (0.9, 0.999, 1e-7), "lung": (0.9, 0.999, 1e-7),
        "ultrasound_nerve": (0.9, 0.999, 1e-8), "fingernail": (0.9, 0.999, 1e-8),
        "retinal_edema": (0.9, 0.99, 1e-8), "robotic_scene": (0.9, 0.999, 1e-8)}
REDUCE_LR_BCDU = {"factor": 0.1, "patience": 7, "min_delta": 1e-4}


def test_registry_finds_the_seven_tasks_by_scanning():
    assert available_tasks() == SEVEN


def test_registry_scans_any_root(tmp_path):
    for name in ("zeta", "alpha", "_private", "no_descriptor"):
        (tmp_path / name).mkdir()
    for name in ("zeta", "alpha", "_private"):
        (tmp_path / name / "task.py").write_text("NAME = 'x'\n")
    assert available_tasks(tmp_path) == ["alpha", "zeta"]


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="nosuch: no such task"):
        get_task("nosuch")


@pytest.mark.parametrize("name", SEVEN)
def test_descriptor_fields(name):
    task = get_task(name)
    assert task.NAME == name
    assert task.DEFAULT_MODEL in task.MODELS
    assert 0 in task.CLASSES and len(task.CLASSES) >= 2
    assert isinstance(task.INPUT, dict) and task.INPUT["mode"]
    assert task.OWN_DATA is None or isinstance(task.OWN_DATA, dict)
    assert callable(task.preprocess) and callable(task.postprocess)
    for key, value in SPEC[name].items():
        assert task.RECIPE[key] == value, (name, key)
    adam = task.RECIPE["adam"]
    assert (adam["beta_1"], adam["beta_2"], adam["epsilon"]) == ADAM[name]


def test_special_recipes_equal_the_specs():
    for name in ("skin_lesion", "retina_vessel", "lung"):
        assert {k: get_task(name).RECIPE["reduce_lr"][k] for k in REDUCE_LR_BCDU} == REDUCE_LR_BCDU
    assert get_task("fingernail").RECIPE["reduce_lr"] == {"factor": 0.8, "patience": 3, "min_lr": 1e-5}
    per_model = get_task("retinal_edema").RECIPE["per_model"]
    assert per_model["unet"] == {"loss": "mix_3", "batch_size": 32, "lr_mode": "step"}
    assert per_model["unet_nested"] == {"loss": "mix_33", "batch_size": 16, "lr_mode": "poly"}
    stages = get_task("robotic_scene").RECIPE["stages"]
    assert [s[1:] for s in stages] == [(0, 0, 0, 1e-4, 10), (0.2, 0, 0, 1e-4, 30), (0.2, 0.6, 0, 5e-5, 50),
                                       (0.2, 0.6, 0.2, 5e-5, 70)]
    assert get_task("robotic_scene").RECIPE["val_seqs"] == (1, 2, 3, 4)
    assert len(get_task("robotic_scene").CLASSES) == 12
    assert get_task("retinal_edema").CLASSES == {0: "background", 1: "REA", 2: "SRF", 3: "PED"}


def test_train_scripts_read_their_defaults_from_the_descriptors():
    """The argparse defaults of the train scripts are the descriptors' (spec) values."""
    from fingernail import train as fingernail_train
    from lung import train_lung
    from retina_vessel import train_retina
    from skin_lesion import train_isic18

    for module, name in ((train_retina, "retina_vessel"), (train_isic18, "skin_lesion"), (train_lung, "lung"),
                         (fingernail_train, "fingernail")):
        defaults = {a.dest: a.default for a in module.build_parser()._actions}
        assert (defaults["epochs"], defaults["batch_size"], defaults["lr"]) == \
            (SPEC[name]["epochs"], SPEC[name]["batch_size"], SPEC[name]["lr"]), name


def test_descriptors_import_without_tensorflow():
    code = ("import sys, json; from common.tasks import available_tasks, get_task\n"
            "[get_task(n) for n in available_tasks()]\n"
            "print(json.dumps([m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


BLOCK_TF = BLOCK_FRAMEWORKS + """
from common.tasks import available_tasks, get_task
names = available_tasks()
for n in names:
    get_task(n)
print(json.dumps({"tasks": names, "modules": sorted(m for m in sys.modules if m.split('.')[0] in names)}))
"""


def test_descriptors_import_no_script_of_their_folder_with_tensorflow_unimportable():
    """Dependencies point one way (scripts -> task.py -> common): importing every task.py, with TensorFlow and
    Keras unimportable, imports no other module of a task folder; and no function of a task.py imports one
    (checked on the source: lazy imports inside functions included)."""
    import ast

    done = subprocess.run([sys.executable, "-c", BLOCK_TF], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["tasks"] == SEVEN
    assert sorted(found["modules"]) == sorted(SEVEN + [f"{n}.task" for n in SEVEN])
    for name in SEVEN:
        tree = ast.parse((ROOT / name / "task.py").read_text())
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + \
            [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        folders = [m for m in imported if m.split(".")[0] in SEVEN and m != f"{name}.task"]
        assert folders == [], (name, folders)


def test_preprocess_postprocess_against_numpy_formulas():
    rng = np.random.default_rng(0)
    # nerve: bilinear resize then (x - mean) / std; a constant frame stays constant
    frame = np.full((40, 60), 100, np.uint8)
    x = get_task("ultrasound_nerve").preprocess(frame, mean=50.0, std=25.0, img_size=16)
    assert x.shape == (1, 16, 16, 1) and np.allclose(x, 2.0)
    mask = get_task("ultrasound_nerve").postprocess(np.ones((16, 16)), shape=(40, 60))
    assert mask.shape == (40, 60) and (mask == 255).all()
    assert (get_task("ultrasound_nerve").postprocess(np.zeros((16, 16)), shape=(40, 60)) == 0).all()
    # robotic scene: torch normalisation per channel, zero padding to 32
    image = rng.integers(0, 256, (33, 40, 3), dtype=np.uint8)
    x = get_task("robotic_scene").preprocess(image, normalise_mode="torch")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert x.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(x[0, :33, :40], (image / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert (x[0, 33:] == 0).all() and (x[0, :, 40:] == 0).all()
    caffe = get_task("robotic_scene").preprocess(image, normalise_mode="caffe")[0, :33, :40]
    np.testing.assert_allclose(caffe, image[..., ::-1] - np.array([103.939, 116.779, 123.68]), atol=1e-4)
    prob = np.zeros((64, 64, 12), np.float32)
    prob[..., 1] = 1
    assert (get_task("robotic_scene").postprocess(prob, shape=(33, 40)) == (0, 255, 0)).all()
    # retinal edema: [next, current, previous] slices, / 255, z-score, padded to 16
    cube = rng.integers(0, 256, (3, 20, 17), dtype=np.uint8)
    x = get_task("retinal_edema").preprocess(cube, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    assert x.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(x[1, :20, :17, 0], (cube[2] / 255 - 0.1) / 0.5, atol=1e-6)
    np.testing.assert_allclose(x[0, :20, :17, 2], (cube[0] / 255 - 0.3) / 0.5, atol=1e-6)
    soft = np.zeros((3, 32, 32, 4), np.float32)
    soft[..., 3] = 1
    assert (get_task("retinal_edema").postprocess(soft, shape=(20, 17)) == 128).all()
    # skin lesion: the resized image min-max stretched to 0..255
    photo = rng.integers(10, 200, (30, 50, 3), dtype=np.uint8)
    x = get_task("skin_lesion").preprocess(photo, size=16)
    assert x.shape == (1, 16, 16, 3) and x.min() == 0 and x.max() == 255
    # fingernail: portrait photos rotated, / 255
    x = get_task("fingernail").preprocess(np.full((50, 30, 3), 51, np.uint8), rows=16, cols=24)
    assert x.shape == (1, 16, 24, 3) and np.allclose(x, 0.2)
    mask = get_task("fingernail").postprocess(np.full((16, 24), 0.5), shape=(50, 30))
    assert mask.shape == (50, 30) and (mask == 255).all()
