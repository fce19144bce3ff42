"""Which published model for my data? Train every chosen registered network on one prepared dataset, score all
on the same test images with one scorer, and write a table and figures.

The prepared dataset is a folder a task's prepare script wrote (the benchmark layout or your own images through
``--images/--masks``); its task is recognised from the files it holds (``<task>/task.py``'s ``is_prepared``), or
named with ``--task``. Readable today: fingernail (prepare_data.py's study folder), ultrasound_nerve (data.py's
``--work-dir``), skin_lesion (prepare_isic2018.py's ``--work-dir``), lung (prepare_data.py's ``--work-dir``: the
slices with the task's own target, the AROUND-lung region, so the scores are of that region, not of the lung,
which lung/evaluate_performance.py scores after its FOV step) and retina_vessel (the ``--work-dir`` of
prepare_datasets_DRIVE.py after save_patch.py: train / validation = the random patches, test = the whole
prepared test images, each predicted in one pass zero-padded to the model's multiple, probabilities outside the
FOV set to 0, as its evaluate.py ``--inference full``). retinal_edema's prepared data (3-slice OCT stacks with
4-class lesion maps) and robotic_scene's (prepare.py's frames with 12-class label maps for the multi-task TDSNet)
cannot feed the binary models: they are refused in one line saying so. The task's
``load_prepared`` gives the train / validation / test parts at the network input size (split.json's parts when
the prepare script wrote them, else the task's own rule, printed) and its ``prepared_input`` the
normalisation: one input pipeline for every model, the arrays loaded once (memory-mapped where stored so) and
shared by all models.

Recipes: ``--recipe paper`` (default): each model with its own task's recipe from that task's descriptor
(optimizer, learning rate and schedule, loss, batch size, epochs; the data's task when it lists the model, else
the first of skin_lesion, fingernail, ultrasound_nerve that does). ``--recipe budget``: one recipe for all (Adam
``--lr`` 1e-3, BCE + image-level Dice, ``--batch-size`` 8, best checkpoint on the validation loss) for ``--epochs
N`` or ``--minutes M`` per model (an epoch that starts is finished). ``--epochs``/``--minutes`` also cap the paper
recipe (the table says so). ``--repeats K`` trains K seeds (``--seed``, ``--seed`` + 1, ...): mean +- sd over
the seeds; with one seed, mean +- sd over the test images.

Scores (``common.metrics``, binary masks at ``--threshold`` on the network-size test images, checkpoint
``--weights best`` on the validation part): Dice (= F1), IoU, sensitivity, precision per image, HD95 and ASSD
(``surface_distances``, pixels; images where exactly one mask is empty are left out of their mean and counted),
then parameters, forward GFLOPs per image (counted from the layers), training wall time (sum of the epochs),
epochs run, best epoch and inference images/s (batch 8, after one warm-up batch). Where the paper reports a
number for the model on this dataset (``PAPER``), it is put beside ours. Every network starts from a random
initialisation (SEDU-Net's VGG16 encoder too: nothing is downloaded), and the scores are those of the network's
input size (the prepared images as the network sees them), the same for every model.

Output (``--out``, default ``<data>/comparison``): ``comparison.md`` / ``.json``, ``comparison_scores.png``
(Dice and HD95 per model, bars = mean, dots = test images), ``comparison_grid.png`` (the same test images:
image | ground truth | every model's mask), ``run.json`` (provenance), and ``runs/<model>/seed<k>/`` per model:
the run folder of ``common.training.fit`` plus ``test_pred.npy`` (uint8 0/1 masks) and ``result.json``.
A model with ``result.json`` is finished and is not retrained; ``--resume`` continues the others (a killed
model from its last epoch) and adds new models; an existing comparison is replaced only with ``--overwrite``.
A model that cannot take the data is listed as skipped with the reason. Bad input (unknown model, no prepared
dataset, ``--repeats 0``, a budget of 0, an input size a model cannot take) stops with one ``error:`` line
before anything is written.

Examples::

    python compare_models.py --data work/fingernail/dataset1 --models all --recipe budget --minutes 20
    python compare_models.py --data work/nerve_jpeg --models nerve_unet unet2d_8_128 --recipe budget --epochs 30 \\
        --repeats 3 --mixed-precision bfloat16
    python compare_models.py --data work/skin_lesion --models bcdu_net_d3 sedu_net_d3       # paper recipes
    python compare_models.py --data work/fingernail/dataset1 --models all --recipe budget --minutes 20 --resume
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

from common import cli
from common.errors import UserError
from common.run_options import positive_int

#: models that cannot take a binary-mask dataset, and why (listed as skipped, never silently dropped)
NOT_BINARY = {
    "tdsnet": "needs the instrument-class and scene labels of EndoVis (multi-task: segmentation + classification "
              "+ scene); a binary-mask dataset has neither",
    "edema_unet": "an edema model: 3-slice OCT input, 4-class softmax with the lesion-presence (detection) target "
                  "of AI Challenger 2018; not a binary-mask network",
    "unet_nested": "an edema model: 3-slice OCT input, 4-class softmax with the lesion-presence (detection) target "
                   "of AI Challenger 2018; not a binary-mask network",
    "unet_nested_dilated": "an edema model: 3-slice OCT input, 4-class softmax with the lesion-presence (detection) "
                           "target of AI Challenger 2018; not a binary-mask network",
}
#: the input side every model needs a multiple of: 2 ** (its 2x2 poolings)
MULTIPLE = {"nerve_unet": 16, "unet2d_8_128": 16, "unet2d_res_32_512": 16, "unet2d_res_srnn_32_512": 16,
            "unet2d_res_srnn_8_128": 16, "bcdu_net_d3": 8, "bcdu_net_d1": 8, "bcdu_unet": 8, "sedu_net_d3": 8,
            "edema_unet": 16, "unet_nested": 16, "unet_nested_dilated": 16, "tdsnet": 32}
#: whose recipe a model trains with under --recipe paper when the data's task does not list it (the whole-image
#: 2-D tasks first: lung's recipe is for CT slices, retina_vessel's for 64x64 patches)
RECIPE_ORDER = ("skin_lesion", "fingernail", "ultrasound_nerve", "retina_vessel", "lung")
#: the paper's own number for (task, study, model): the fingernail notebook's dataset-1 test Dice with its own
#: loss (BCE-Dice, last epoch, threshold 0.3, 20 test images); source: ../shared/specs/fingernail.md section 5
#: (behroozmrd47/Spatial_RNN_Fingernail, README and notebook)
PAPER = {
    ("fingernail", "dataset1", "unet2d_8_128"): 0.820733,
    ("fingernail", "dataset1", "unet2d_res_32_512"): 0.927045,
    ("fingernail", "dataset1", "unet2d_res_srnn_32_512"): 0.932680,
    ("fingernail", "dataset1", "unet2d_res_srnn_8_128"): 0.852748,
}
DATASET1_LABELLED = 192  # the labelled photos of the real dataset1 (specs/fingernail.md section 4)
PAPER_SOURCE = ("paper: the fingernail notebook's dataset-1 test Dice (BCE-Dice, last epoch, threshold 0.3, its own "
                "split of 20 test images; Spatial_RNN_Fingernail, ../shared/specs/fingernail.md section 5)")
BUDGET = {"optimizer": "adam", "lr": 1e-3, "loss": "bce_dice_image", "batch_size": 8, "shuffle": True,
          "monitor": "val_loss", "schedule": None}
RESULT_FILE = "result.json"
SETTINGS_FILE = "settings.json"
OUTPUTS = ("comparison.md", "comparison.json", "comparison_scores.png", "comparison_grid.png", "run.json",
           SETTINGS_FILE)
SCORES = (("dice", "Dice"), ("iou", "IoU"), ("sensitivity", "sensitivity"), ("precision", "precision"),
          ("hd95", "HD95"), ("assd", "ASSD"))
GRID_IMAGES = 6
NO_EPOCH_LIMIT = 100000  # --minutes alone: the time budget stops the run


# ----------------------------------------------------------------------------------------------- the data

def readable_tasks():
    """The descriptors that can read a prepared dataset (``is_prepared``, ``load_prepared``, ``prepared_input``)."""
    from common.tasks import available_tasks, get_task

    tasks = [get_task(name) for name in available_tasks()]
    return [t for t in tasks if all(hasattr(t, f) for f in ("is_prepared", "load_prepared", "prepared_input"))]


def refusing_tasks():
    """The descriptors that recognise their prepared data (``is_prepared``) but say why no binary model can take
    it (``NOT_COMPARABLE``, e.g. retinal_edema, robotic_scene)."""
    from common.tasks import available_tasks, get_task

    tasks = [get_task(name) for name in available_tasks()]
    return [t for t in tasks if hasattr(t, "NOT_COMPARABLE") and hasattr(t, "is_prepared")]


def find_task(data, task_name=None):
    """The descriptor of the task whose prepared dataset ``data`` is (``--task`` names it when given)."""
    data = Path(data)
    tasks = readable_tasks()
    names = ", ".join(t.NAME for t in tasks)
    refusing = refusing_tasks()
    if task_name is not None:
        task = next((t for t in tasks if t.NAME == task_name), None)
        refused = next((t for t in refusing if t.NAME == task_name), None)
        if task is None and refused is not None:
            raise cli.option_error("--task", f"{task_name}: {refused.NOT_COMPARABLE}")
        if task is None:
            raise cli.option_error("--task", f"{task_name!r} cannot be compared (readable: {names})")
        if not task.is_prepared(data):
            raise UserError(f"{data}: holds no prepared {task_name} dataset (expected "
                            f"{', '.join(task.PREPARED_FILES)}); run its prepare script first")
        return task
    if not data.is_dir():
        raise UserError(f"{data}: no such folder; give a folder a task's prepare script wrote")
    found = [t for t in tasks if t.is_prepared(data)]
    refused = [t for t in refusing if t.is_prepared(data)]
    if not found and refused:
        raise UserError(f"{data}: a prepared {refused[0].NAME} dataset: {refused[0].NOT_COMPARABLE}")
    if not found:
        expected = "; ".join(f"{t.NAME}: {', '.join(t.PREPARED_FILES)}" for t in tasks)
        raise UserError(f"{data}: holds no prepared dataset ({expected}); run a task's prepare script first")
    if len(found) > 1:
        raise cli.option_error("--task", f"{data} holds the prepared files of {', '.join(t.NAME for t in found)}; "
                                         f"name one with --task")
    return found[0]


def check_binary(data, path, chunk=1024):
    """``UserError`` when the masks hold more than the labels 0 and 1 (a multi-class dataset)."""
    import numpy as np

    for part in ("train", "val", "test"):
        masks = data[part][1]
        top = max(int(np.asarray(masks[i:i + chunk]).max(initial=0)) for i in range(0, len(masks), chunk))
        if top > 1:
            raise UserError(f"{path}: the {part} masks hold labels up to {top}; compare_models.py compares binary "
                            f"segmentation: prepare the data with one foreground (--foreground; not --keep-labels)")


def study_of(task, data):
    """The study the PAPER table is keyed by, or None: fingernail's real ``dataset1`` is prepare_data.py's
    benchmark study of that name with its 192 labelled photos (any other data gets no paper number)."""
    info = data.get("info") or {}
    if task.NAME != "fingernail" or "counts" in info or info.get("datasets") != ["dataset1"]:
        return None
    return "dataset1" if len(info.get("train", [])) + len(info.get("test", [])) == DATASET1_LABELLED else None


# ----------------------------------------------------------------------------------------------- the models

def select_models(spec):
    """``--models`` -> the registry names (``all`` = every registered model); ``OptionError`` for an unknown one."""
    from common.models import available_models

    known = available_models()
    if spec == ["all"]:
        return known
    unknown = [m for m in spec if m not in known]
    if unknown:
        raise cli.option_error("--models", f"unknown model {unknown[0]!r}; choose 'all' or from {', '.join(known)}")
    return list(dict.fromkeys(spec))


def skip_reason(model, shape):
    """Why ``model`` cannot take images of ``shape`` (H, W, C), or None."""
    if model in NOT_BINARY:
        return NOT_BINARY[model]
    if model == "sedu_net_d3" and shape[-1] != 3:
        return f"its VGG16 encoder takes RGB input; the data has {shape[-1]} channel(s)"
    return None


def check_fit(models, shape):
    """``OptionError`` naming the first model whose input-size multiple does not divide the data's (H, W)."""
    for model in models:
        m = MULTIPLE.get(model)
        if m and (shape[0] % m or shape[1] % m):
            raise cli.option_error("--models", f"{model} needs an input side divisible by {m} (its poolings); the "
                                               f"data is {shape[0]}x{shape[1]}: prepare it at a multiple of {m} or "
                                               f"leave {model} out")


def recipe_task(model, data_task):
    """The task whose recipe ``model`` trains with under ``--recipe paper``."""
    from common.tasks import available_tasks, get_task

    if model in data_task.MODELS:
        return data_task
    for name in RECIPE_ORDER + tuple(available_tasks()):
        if name in available_tasks() and model in get_task(name).MODELS:
            return get_task(name)
    return data_task


def recipe_for(model, data_task, args):
    """The training recipe of ``model``: a plain dict (stored in settings and the table)."""
    if args.recipe == "budget":
        recipe = dict(BUDGET, lr=args.lr, batch_size=args.batch_size, source="budget")
    else:
        task = recipe_task(model, data_task)
        r = task.RECIPE
        loss = r.get("loss")
        if loss == "bce_dice":
            loss = "bce_dice_pixel" if r.get("dice", "pixel") == "pixel" else "bce_dice_image"
        recipe = {"optimizer": r.get("optimizer", "adam"), "lr": r["lr"], "adam": r.get("adam", {}), "loss": loss,
                  "batch_size": r["batch_size"], "epochs": r["epochs"], "shuffle": r.get("shuffle", True),
                  "monitor": "val_loss" if "loss" in str(r.get("monitor", "val_loss")) else "val_dice",
                  "schedule": r.get("schedule"), "lr_decay": r.get("lr_decay"),
                  "reduce_lr": r.get("reduce_lr") if r.get("schedule") == "reduce_lr_on_plateau" else None,
                  "source": f"{task.NAME} (paper)"}
    # budget: --epochs (10 when --minutes is not given either), or --minutes alone; paper: --epochs caps its own
    epochs = (args.epochs or NO_EPOCH_LIMIT) if args.recipe == "budget" else (args.epochs or recipe["epochs"])
    if args.recipe == "paper" and epochs != recipe["epochs"]:
        recipe["paper_epochs"] = recipe["epochs"]
    recipe.update(epochs=int(epochs), minutes=args.minutes)
    return recipe


def recipe_text(recipe):
    """One line of the table: optimizer, lr, loss, batch, epochs/minutes."""
    budget = f"{recipe['epochs']} ep" if not recipe.get("minutes") else f"{recipe['minutes']:g} min"
    if recipe.get("minutes") and recipe["epochs"] < NO_EPOCH_LIMIT:
        budget += f" (max {recipe['epochs']} ep)"
    if recipe.get("paper_epochs"):
        budget += f" (the paper's {recipe['paper_epochs']} capped)"
    schedule = f", {recipe['schedule']}" if recipe.get("schedule") else ""
    return (f"{recipe['source']}: Adam {recipe['lr']:g}{schedule}, {recipe['loss']}, batch {recipe['batch_size']}, "
            f"{budget}")


def make_loss(name):
    import keras

    from common.losses import BCEDiceLoss, dice_coef_loss

    if name == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy()
    if name == "bce_dice_pixel":
        return BCEDiceLoss(per_pixel_dice=True)
    if name == "bce_dice_image":
        return BCEDiceLoss(per_pixel_dice=False)
    if name == "dice_coef_loss":
        return dice_coef_loss
    raise ValueError(f"no loss {name!r} for a binary comparison")


def dice(y_true, y_pred):
    """Thresholded (0.5) Dice over the batch: the comparison's training metric (``val_dice``)."""
    import keras

    t = keras.ops.cast(y_true > 0.5, "float32")
    p = keras.ops.cast(y_pred > 0.5, "float32")
    return 2.0 * keras.ops.sum(t * p) / (keras.ops.sum(t) + keras.ops.sum(p) + 1e-7)


def compile_model(model, recipe, jit_compile=False):
    import keras

    adam = dict({"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, **(recipe.get("adam") or {}))
    lr = recipe["lr"]
    if recipe.get("schedule") == "inverse_time_decay" and recipe.get("lr_decay"):
        lr = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=recipe["lr_decay"])
    keras.saving.register_keras_serializable(package="compare_models")(dice)
    model.compile(optimizer=keras.optimizers.Adam(lr, **adam), loss=make_loss(recipe["loss"]), metrics=[dice],
                  jit_compile=jit_compile)
    return model


def time_budget_callback(minutes):
    """A Keras callback summing the epochs' wall time (``elapsed``, kept in state.json across --resume) and
    stopping the run after the epoch that reaches ``minutes`` (None: no limit)."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.elapsed, self.started = 0.0, None

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.elapsed += time.perf_counter() - self.started
            if minutes and self.elapsed >= 60.0 * minutes:
                self.model.stop_training = True

        def get_state(self):
            return {"elapsed": self.elapsed}

        def set_state(self, state):
            self.elapsed = float(state.get("elapsed", 0.0))

    return TimeBudget()


# ----------------------------------------------------------------------------------------------- one model

def train_model(model_name, recipe, data, task, run_dir, *, seed, resume, args):
    """Train (or continue) one model in ``run_dir``; returns ``(model, history, train_seconds)``."""
    import keras

    from common.models import build_model
    from common.training import array_dataset, fit, read_state

    stats = data["stats"]

    def transform(xb, yb):
        return task.prepared_input(xb, **stats), yb

    x_tr, y_tr = data["train"]
    keras.utils.set_random_seed(seed)
    model = compile_model(build_model(model_name, x_tr.shape[1:]), recipe, jit_compile=args.jit_compile)
    train_ds = array_dataset(x_tr, y_tr, recipe["batch_size"], shuffle=recipe["shuffle"], seed=seed,
                             transform=transform)
    val_ds = array_dataset(*data["val"], recipe["batch_size"], transform=transform)
    budget = time_budget_callback(recipe.get("minutes"))
    state = read_state(run_dir) if resume else None
    elapsed = ((state or {}).get("callbacks") or {}).get("TimeBudget", {}).get("elapsed", 0.0)
    done = state is not None and (state.get("epoch", 0) >= recipe["epochs"]
                                  or bool(recipe.get("minutes")) and elapsed >= 60.0 * recipe["minutes"])
    settings = {"model": model_name, "seed": seed, "recipe": recipe, "task": task.NAME,
                "mixed_precision": args.mixed_precision}
    if not done:
        model, history = fit(model, train_ds, val_ds, run_dir=run_dir, epochs=recipe["epochs"],
                             monitor=recipe["monitor"], resume=resume, seed=seed, verbose=args.verbose,
                             shuffle=recipe["shuffle"], reduce_lr=recipe.get("reduce_lr"), callbacks=[budget],
                             settings=settings, tensorboard=False)
    else:  # the training had ended before the kill: only the scoring is left
        from common.report import read_history

        history = read_history(Path(run_dir) / "history.csv")
        budget.set_state(state.get("callbacks", {}).get("TimeBudget", {}))
    state = read_state(run_dir) or {}
    elapsed = (state.get("callbacks") or {}).get("TimeBudget", {}).get("elapsed", budget.elapsed)
    return model, history, float(elapsed)


def predict(model, images, task, stats, batch_size=8, chunk=256, model_name=None):
    """Probabilities (N, H, W) of ``images`` and the inference rate (images/s after one warm-up batch), in chunks
    of ``chunk`` images (memory stays bounded on a large test part).

    Test images of another size than the training inputs (retina_vessel trains on patches): each whole image in
    one pass, zero-padded at the bottom/right to the model's multiple and cropped back
    (``common.inference.predict_whole``; the registered ``model_name`` rebuilt once for the padded size with the
    model's weights)."""
    import numpy as np

    n = len(images)
    h, w = images.shape[1:3]
    if tuple(model.input_shape[1:3]) != (h, w):
        from common.inference import model_for_shape, padded_shape, predict_whole
        from common.models import build_model

        name = model_name or model.name
        multiple = MULTIPLE.get(name, 8)
        sized = model_for_shape(model, padded_shape(h, w, multiple) + (images.shape[-1],),
                                lambda shape: build_model(name, shape))

        def run(x):
            return predict_whole(sized, task.prepared_input(x, **stats), multiple=multiple)
    else:
        def run(x):
            return model.predict(task.prepared_input(x, **stats), batch_size=batch_size, verbose=0)

    run(images[:batch_size])  # warm-up
    start = time.perf_counter()
    probs = [np.asarray(run(images[i:i + chunk]), np.float32) for i in range(0, n, chunk)]
    seconds = time.perf_counter() - start
    prob = np.concatenate(probs)
    return prob.reshape(prob.shape[:3]), n / seconds if seconds > 0 else float("nan")


def image_scores(y_true, y_pred):
    """Per-image Dice, IoU, sensitivity, precision (``segmentation_scores``) and HD95, ASSD (``surface_distances``)
    of binary masks (N, H, W[, 1]); lists of floats (NaN where undefined, inf where exactly one mask is empty)."""
    import numpy as np

    from common.metrics import segmentation_scores, surface_distances

    out = {key: [] for key, _ in SCORES}
    for t, p in zip(y_true, y_pred):
        t, p = np.asarray(t).reshape(p.shape[:2]), np.asarray(p)
        s = segmentation_scores(t, p, threshold=0.5)
        d = surface_distances(t, p)
        for key, value in (("dice", s["f1"]), ("iou", s["jaccard"]), ("sensitivity", s["sensitivity"]),
                           ("precision", s["precision"]), ("hd95", d["hd95"]), ("assd", d["assd"])):
            out[key].append(float(value))
    return out


def evaluate_model(model, history, train_seconds, recipe, data, task, run_dir, *, weights, threshold, model_name=None):
    """Score one trained model on the test part; writes ``test_pred.npy`` and ``result.json``; returns the result."""
    import keras
    import numpy as np

    from common.flops import forward_flops
    from common.data.io import save_npy, write_json

    checkpoint = Path(run_dir) / f"{weights}.keras"
    model = keras.models.load_model(checkpoint)
    x_te, y_te = data["test"]
    prob, rate = predict(model, x_te, task, data["stats"], model_name=model_name or model.name)
    if data.get("test_fov") is not None:  # retina_vessel: 0 outside the field of view (its kill_border)
        prob = np.where(np.asarray(data["test_fov"]).reshape(prob.shape) > 0, prob, 0).astype(np.float32)
    pred = (prob >= threshold).astype(np.uint8)
    save_npy(Path(run_dir) / "test_pred.npy", pred)
    per_image = image_scores(y_te, pred)
    monitor = recipe["monitor"]
    values = history.get(monitor) or []
    best = (int(np.nanargmin(values) if monitor.endswith("loss") else np.nanargmax(values)) + 1) if values else None
    result = {"per_image": per_image, "parameters": int(model.count_params()),
              "gflops": forward_flops(model) / 1e9, "train_seconds": train_seconds,
              "epochs_run": len(history.get("loss", [])), "best_epoch": best, "images_per_second": rate,
              "weights": weights, "threshold": threshold}
    write_json(Path(run_dir) / RESULT_FILE, result)
    return result


# ----------------------------------------------------------------------------------------------- the table

def _mean_sd(values):
    """(mean, sd) over the finite values (NaN when there is none)."""
    import numpy as np

    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarise(model, results, recipe, paper):
    """One table row (dict) of a model from its seeds' results."""
    import numpy as np

    row = {"model": model, "status": "ok", "seeds": len(results), "recipe": recipe_text(recipe)}
    for key, _ in SCORES:
        if len(results) == 1:
            mean, sd = _mean_sd(results[0]["per_image"][key])
        else:
            mean, sd = _mean_sd([_mean_sd(r["per_image"][key])[0] for r in results])
        row[key], row[f"{key}_sd"] = mean, sd
    row["one_mask_empty"] = int(sum(np.isinf(np.asarray(r["per_image"]["hd95"], float)).sum() for r in results))
    for key in ("parameters", "gflops"):
        row[key] = results[0][key]
    for key in ("train_seconds", "epochs_run", "best_epoch", "images_per_second"):
        values = [r[key] for r in results if r[key] is not None]
        row[key] = float(np.mean(values)) if values else None
    row["paper_dice"] = paper
    return row


def fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def markdown(rows, skipped, header):
    """The comparison as Markdown: the scores table, then the skipped models with their reasons."""
    lines = [header, "", "| model | Dice | IoU | sensitivity | precision | HD95 (px) | ASSD (px) | paper Dice | "
             "parameters | GFLOPs/image | train time (s) | epochs | best epoch | images/s | recipe |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{fmt(r[k])} +- {fmt(r[k + '_sd'])}" for k, _ in SCORES]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {fmt(r['paper_dice'])} | {r['parameters']:,} | "
                     f"{fmt(r['gflops'], 2)} | {fmt(r['train_seconds'], 0)} | {fmt(r['epochs_run'], 0)} | "
                     f"{fmt(r['best_epoch'], 0)} | {fmt(r['images_per_second'], 1)} | {r['recipe']} |")
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {m}: {reason}" for m, reason in skipped.items()]
    return "\n".join(lines) + "\n"


def bar_chart(rows, results, path):
    """Dice and HD95 per model: bars = mean over the test images (seeds pooled), dots = the images."""
    import numpy as np

    from common.data.io import atomic_path
    from common.report import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.3 * len(rows) + 3), 4))
    rng = np.random.default_rng(0)
    for ax, (key, label) in zip(axes, (("dice", "Dice (higher is better)"), ("hd95", "HD95 in pixels (lower is "
                                                                                     "better)"))):
        for i, r in enumerate(rows):
            values = np.concatenate([np.asarray(x["per_image"][key], float) for x in results[r["model"]]])
            values = values[np.isfinite(values)]
            ax.bar(i, values.mean() if values.size else 0, color="#9ecae1", edgecolor="#3182bd")
            ax.scatter(i + rng.uniform(-0.25, 0.25, values.size), values, s=8, color="#08519c", alpha=0.6, zorder=3)
        ax.set_xticks(range(len(rows)), [r["model"] for r in rows], rotation=30, ha="right")
        ax.set_title(label)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def grid_figure(data, preds, path):
    """The same test images for every model: image | ground truth | each model's mask."""
    import numpy as np

    from common.report import overlay_grid

    x_te, y_te = data["test"]
    idx = np.unique(np.linspace(0, len(x_te) - 1, min(GRID_IMAGES, len(x_te))).astype(int))
    images = np.asarray(x_te[idx])
    images = images[..., 0] if images.shape[-1] == 1 else images
    truths = np.asarray(y_te[idx]).reshape(images.shape[:3])
    names = list(preds)
    masks = [np.asarray(preds[m][idx]) for m in names]
    overlay_grid(images, truths, masks[0], path, titles=("image", "ground truth", *names), max_rows=len(idx),
                 extra=masks[1:], value_range=(0, 1))


# ----------------------------------------------------------------------------------------------- command line

def build_parser():
    from common.devices import add_precision_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset folder (see above)")
    parser.add_argument("--task", default=None, help="the data's task, when its folder is not recognised alone")
    parser.add_argument("--models", nargs="+", default=["all"],
                        help="registry names, or 'all' (default: all; the ones that cannot take the data are "
                             "listed as skipped)")
    parser.add_argument("--out", type=Path, default=None, help="comparison folder (default: <data>/comparison)")
    parser.add_argument("--recipe", choices=("paper", "budget"), default="paper",
                        help="paper: each model's own task recipe; budget: one recipe for all (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs per model (budget default: 10 when --minutes is not given; caps the paper "
                             "recipe's epochs)")
    parser.add_argument("--minutes", type=float, default=None, help="training minutes per model (> 0)")
    parser.add_argument("--lr", type=float, default=BUDGET["lr"], help="budget recipe's Adam lr (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=BUDGET["batch_size"],
                        help="budget recipe's batch size (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="seeds per model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint scored: best on the validation part, or the last epoch (default: best)")
    parser.add_argument("--threshold", type=float, default=0.5, help="mask = probability >= this (default: 0.5)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a comparison: finished models are kept, killed ones continue, new ones train")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing comparison in --out")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    add_precision_arguments(parser, jit_compile=True)
    return parser


def check_options(args):
    if args.repeats < 1:
        raise cli.option_error("--repeats", f"must be at least 1, got {args.repeats}")
    if args.minutes is not None and not args.minutes > 0:
        raise cli.option_error("--minutes", f"must be above 0, got {args.minutes}")
    if args.recipe == "budget" and not args.lr > 0:
        raise cli.option_error("--lr", f"must be above 0, got {args.lr}")
    if not 0 < args.threshold < 1:
        raise cli.option_error("--threshold", f"must lie strictly between 0 and 1, got {args.threshold}")
    if args.resume and args.overwrite:
        raise cli.option_error("--resume/--overwrite", "choose one (continue the comparison, or replace it)")
    if args.recipe == "budget" and args.epochs is None and args.minutes is None:
        args.epochs = 10


def holds_comparison(out):
    out = Path(out)
    return any((out / name).exists() for name in OUTPUTS) or (out / "runs").exists()


def check_out(out, args, settings):
    """Refuse an existing comparison without --resume/--overwrite, and a --resume with other settings."""
    out = Path(out)
    if not holds_comparison(out) or args.overwrite:
        return
    if not args.resume:
        raise UserError(f"{out}: holds a comparison; pass --resume to continue it (finished models are kept), "
                        f"--overwrite to replace it, or another --out")
    path = out / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        differ = [k for k in settings if k != "models" and old.get(k) != settings[k]]
        if differ:
            raise UserError(f"{path}: the comparison there used other settings ({', '.join(differ)}); resume with "
                            f"the same options, or use --overwrite / another --out")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    task = find_task(args.data, args.task)
    models = select_models(args.models)
    out = args.out or Path(args.data) / "comparison"
    settings = {"data": str(Path(args.data).resolve()), "task": task.NAME, "recipe": args.recipe,
                "epochs": args.epochs, "minutes": args.minutes, "lr": args.lr if args.recipe == "budget" else None,
                "batch_size": args.batch_size if args.recipe == "budget" else None, "seed": args.seed,
                "weights": args.weights, "threshold": args.threshold, "mixed_precision": args.mixed_precision,
                "models": models, "repeats": args.repeats}
    check_out(out, args, settings)  # before the data is read
    print(f"{args.data}: a prepared {task.NAME} dataset; loading it once for every model", flush=True)
    data = task.load_prepared(args.data)
    shape = tuple(int(s) for s in data["train"][0].shape[1:])
    check_binary(data, args.data)
    skipped = {m: r for m in models if (r := skip_reason(m, shape))}
    chosen = [m for m in models if m not in skipped]
    check_fit(chosen, shape)
    if not chosen:
        raise cli.option_error("--models", "none of them can take this data: " +
                               "; ".join(f"{m}: {r}" for m, r in skipped.items()))
    print(f"{data['split']}; train {len(data['train'][0])} / val {len(data['val'][0])} / test "
          f"{len(data['test'][0])} images of {shape[0]}x{shape[1]}x{shape[2]}", flush=True)
    for m, reason in skipped.items():
        print(f"skipped {m}: {reason}")

    # everything is checked: from here on files are written
    if args.overwrite and holds_comparison(out):
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    from common.data.io import write_json
    from common.devices import set_precision
    from common.provenance import write_run_json

    write_json(out / SETTINGS_FILE, settings)
    set_precision(args.mixed_precision)
    seeds = [args.seed + k for k in range(args.repeats)]
    results, recipes, preds = {}, {}, {}
    import numpy as np

    for i, model_name in enumerate(chosen, 1):
        recipe = recipes[model_name] = recipe_for(model_name, task, args)
        results[model_name] = []
        for seed in seeds:
            run_dir = out / "runs" / model_name / f"seed{seed}"
            label = f"[{i}/{len(chosen)}] {model_name} seed {seed}"
            if (run_dir / RESULT_FILE).is_file():
                print(f"{label}: finished before, not retrained ({run_dir})", flush=True)
                result = json.loads((run_dir / RESULT_FILE).read_text())
            else:
                print(f"{label}: training ({recipe_text(recipe)}) in {run_dir}", flush=True)
                model, history, seconds = train_model(model_name, recipe, data, task, run_dir, seed=seed,
                                                      resume=args.resume, args=args)
                result = evaluate_model(model, history, seconds, recipe, data, task, run_dir, model_name=model_name,
                                        weights=args.weights, threshold=args.threshold)
            print(f"{label}: test Dice {np.nanmean(result['per_image']['dice']):.4f} "
                  f"({result['epochs_run']} epochs, {result['train_seconds']:.0f} s)", flush=True)
            results[model_name].append(result)
        preds[model_name] = np.load(out / "runs" / model_name / f"seed{seeds[0]}" / "test_pred.npy")

    study = study_of(task, data)
    rows = [summarise(m, results[m], recipes[m], PAPER.get((task.NAME, study, m))) for m in chosen]
    spread = "test images" if args.repeats == 1 else f"{args.repeats} seeds ({', '.join(map(str, seeds))})"
    header = (f"## Model comparison on {args.data} ({task.NAME})\n\n{data['split']}; train {len(data['train'][0])} / "
              f"val {len(data['val'][0])} / test {len(data['test'][0])} images at {shape[0]}x{shape[1]}. Scores on "
              f"the test images at threshold {args.threshold} with the {args.weights} checkpoint, mean +- sd over "
              f"{spread}; HD95 / ASSD in pixels of the network input, over the images where both masks are "
              f"non-empty; an image whose two masks are both empty has no Dice / IoU and is left out of their mean (the "
              f"Kaggle nerve metric would count it as 1). Mixed precision: {args.mixed_precision}.")
    if any(r["paper_dice"] is not None for r in rows):
        header += f"\n\n{PAPER_SOURCE}."
    text = markdown(rows, skipped, header)
    from common.data.io import atomic_path

    with atomic_path(out / "comparison.md") as tmp:
        Path(tmp).write_text(text)
    write_json(out / "comparison.json", {"settings": settings, "split": data["split"], "rows": rows,
                                         "skipped": skipped, "seeds": seeds,
                                         "per_image": {m: [r["per_image"] for r in results[m]] for m in chosen}})
    bar_chart(rows, results, out / "comparison_scores.png")
    grid_figure(data, preds, out / "comparison_grid.png")
    weights = [out / "runs" / m / f"seed{s}" / f"{args.weights}.keras" for m in chosen for s in seeds]
    write_run_json(out, model_name=chosen, weights=[w for w in weights if w.is_file()], options=settings,
                   inputs=[args.data], extra={"skipped": skipped})
    print("\n" + text + f"\nWritten to {out}: comparison.md/.json, comparison_scores.png, comparison_grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
