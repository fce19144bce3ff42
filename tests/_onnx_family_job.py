"""One model family exported to ONNX and run in onnxruntime against Keras, in a process of its own.

Run by tests/test_onnx.py (``python tests/_onnx_family_job.py FAMILY OUT_DIR``): tf2onnx's conversion of the
VGG16-encoder families takes several GB at its peak (sedu_net ~8 GB, tdsnet ~6.5 GB), memory a long pytest
process would not give back; here it goes with the process. Prints one JSON line: the largest difference per
output, the task and input shape written to preprocessing.json.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _families import without_dropout  # noqa: E402

TASK_OF_FAMILY = {"unet": "ultrasound_nerve", "bcdu_net": "retina_vessel", "sedu_net": "skin_lesion",
                  "unet2d_srnn": "fingernail", "edema_unet": "retinal_edema", "unet_nested": "retinal_edema",
                  "tdsnet": "robotic_scene"}


def _cr_unet_short_rnns():
    """CR-UNet 8..128 (unet2d_res_srnn_8_128's graph: residual U-Net, SpatialRNN2D skips on encoder levels 2 and
    3) with L = the skip's side at a 16 x 16 input (8 and 4) instead of 64 and 32: a step beyond the map's side
    only adds zeros (SpatialRNN2D's docstring), so the function is the same and tf2onnx converts 12 unrolled
    steps instead of 96 (about 6 s instead of about 170 s on the 2-core machine)."""
    from common.models.unet2d_family import _unet2d_model

    return _unet2d_model((16, 16, 3), (8, 16, 32, 64, 128), "Unet_Res_SRNN_8x128", residual=True,
                         encoder_initializer="he_normal", srnn_seq_lengths={2: 8, 3: 4})


def _build(name, shape, **options):
    def make():
        import warnings

        from common.models import build_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_model(name, shape, **options)
    return make


# family -> (builder of its smallest model, input shape); seconds of the export on the loaded 2-core machine in
# the comment
FAMILIES = {
    "unet": (_build("nerve_unet", (16, 16, 1), filters=(4, 8, 16, 32, 64)), (16, 16, 1)),       # ~4 s
    "bcdu_net": (_build("bcdu_net_d1", (8, 8, 1)), (8, 8, 1)),                                  # ConvLSTM, ~16 s
    "sedu_net": (_build("sedu_net_d3", (8, 8, 3), encoder_weights=None), (8, 8, 3)),            # ~37 s
    "unet2d_srnn": (_cr_unet_short_rnns, (16, 16, 3)),                                          # SpatialRNN2D, ~6 s
    "edema_unet": (_build("edema_unet", (16, 16, 3), feature_scale=16), (16, 16, 3)),           # ~3 s
    "unet_nested": (_build("unet_nested", (16, 16, 3), feature_scale=16), (16, 16, 3)),         # ~5 s
    "tdsnet": (_build("tdsnet", (32, 32, 3)), (32, 32, 3)),                                     # ~13 s
}


def _flat(output):
    if isinstance(output, dict):
        return {k: np.asarray(v, np.float32) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return {str(i): np.asarray(v, np.float32) for i, v in enumerate(output)}
    return {"0": np.asarray(output, np.float32)}


def main(family, out_dir):
    from common import export
    from common.predict import OnnxNetwork
    from common.tasks import get_task

    make, shape = FAMILIES[family]
    model = without_dropout(make())
    model(np.zeros((1,) + shape, np.float32))
    task = get_task(TASK_OF_FAMILY[family])
    record = export.export_onnx(model, Path(out_dir), task=task, context={"threshold": 0.5})
    network = OnnxNetwork(Path(out_dir) / "model.onnx", output_keys=record["output"]["keys"], batch_size=4)
    x = np.random.default_rng(7).random((3,) + shape, dtype=np.float32)
    ours, reference = _flat(network(x)), _flat(model(x, training=False))
    saved = json.loads((Path(out_dir) / "preprocessing.json").read_text())
    print(json.dumps({"keys": sorted(ours), "reference_keys": sorted(reference),
                      "max_diff": {k: float(np.abs(ours[k] - reference[k]).max()) for k in reference if k in ours},
                      "task": saved["task"], "expected_task": task.NAME, "shape": saved["input"]["shape"][1:],
                      "expected_shape": list(shape)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
