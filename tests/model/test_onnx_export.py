"""ONNX export (``python -m tasp_hloc export-onnx``): the file run by onnxruntime on the CPU
gives torch's dense outputs, and ``onnx_export.postprocess`` (numpy) gives TaSP's features
(``subpixel: None``) from them.

Tolerances (float32 everywhere): logits 1e-4 and unit descriptor maps 1e-5 max abs (measured
on the demo image with the released weights: 2.2e-5 and 1.9e-6); keypoints the same set at the
same pixels, scores 1e-5 max abs, descriptors cosine > 0.9999 (measured: > 0.9999996).

The tests that export or run a file skip without onnx, onnxscript and onnxruntime (the
``[onnx]`` extra, not part of ``[dev]``); the post-processing and the command line's checks
run everywhere. Each dynamic-size export takes ~30 s on 2 CPU cores.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasp_hloc import TaSP, load_image
from tasp_hloc import __main__ as cli
from tasp_hloc.assets import DEMO_DIR
from tasp_hloc.onnx_export import (
    EXPORT_CONF,
    OnnxTaSP,
    build_model,
    export_onnx,
    network_input,
    postprocess,
)

LOGITS_ATOL, DESCRIPTORS_ATOL, SCORES_ATOL, MIN_COSINE = 1e-4, 1e-5, 1e-5, 0.9999


def needs_onnx():
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason='pip install "tasp-hloc[onnx]"')


@pytest.fixture(scope="module")
def box():
    """The demo image, 223 x 324 (not multiples of 8: the padded path)."""
    return load_image(DEMO_DIR / "box.png")


def features_of(model: TaSP, image: torch.Tensor, **conf) -> dict:
    """TaSP's features of one (C, H, W) image with ``subpixel: None``, as numpy."""
    weights = model.conf["weights"]
    reference = TaSP({"weights": weights, "subpixel": None, **EXPORT_CONF, **conf}).eval()
    if weights is None:
        reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = reference({"image": image[None]})
    return {k: v[0].numpy() for k, v in out.items()}


def assert_same_features(ours: dict, theirs: dict):
    """The same keypoints (as a set: ties may come in another order), scores, descriptors."""
    assert len(ours["keypoints"]) == len(theirs["keypoints"]) > 0
    a = np.lexsort(ours["keypoints"].T[::-1])
    b = np.lexsort(theirs["keypoints"].T[::-1])
    np.testing.assert_array_equal(ours["keypoints"][a], theirs["keypoints"][b])
    np.testing.assert_allclose(ours["scores"][a], theirs["keypoint_scores"][b], atol=SCORES_ATOL)
    assert np.all(np.diff(ours["scores"]) <= 0)  # strongest first
    cosine = (ours["descriptors"][a] * theirs["descriptors"][b]).sum(1)
    assert cosine.min() > MIN_COSINE, cosine.min()
    np.testing.assert_allclose(np.linalg.norm(ours["descriptors"], axis=1), 1, atol=1e-5)


def assert_dense_match(model: TaSP, runner: OnnxTaSP, image: torch.Tensor):
    logits, descriptors, size = runner.dense(image.numpy())
    with torch.no_grad():
        dense = model.forward_dense(image[None])
    assert size == tuple(image.shape[-2:])
    assert logits.shape == dense["logits"].shape
    assert descriptors.shape == dense["descriptors_dense"].shape
    assert np.abs(logits - dense["logits"].numpy()).max() < LOGITS_ATOL
    assert np.abs(descriptors - dense["descriptors_dense"].numpy()).max() < DESCRIPTORS_ATOL


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """An untrained network exported for any size, in-process."""
    needs_onnx()
    torch.manual_seed(0)
    model = build_model(weights=None)
    path = tmp_path_factory.mktemp("onnx") / "random.onnx"
    info = export_onnx(path, model)
    assert info["size"] is None and info["max_abs_diff"] < LOGITS_ATOL
    return model, path


@pytest.fixture(scope="module")
def released_export(tmp_path_factory):
    """The released default weights exported for any size by the command line."""
    needs_onnx()
    path = tmp_path_factory.mktemp("onnx") / "sub" / "tasp.onnx"  # the folder is created
    assert cli.main(["export-onnx", "--output", str(path)]) == 0
    return build_model(), path


def test_random_weights_onnxruntime_matches_torch(random_export, box):
    model, path = random_export
    runner = OnnxTaSP(path, num_threads=1)
    for image in (box[:, :120, :160], box[:, :64, :200]):  # one file, any multiple of 8
        assert_dense_match(model, runner, image)
    assert_same_features(runner(box[:, :120, :160].numpy()), features_of(model, box[:, :120, :160]))


def test_released_weights_onnxruntime_matches_torch(released_export, box):
    model, path = released_export
    runner = OnnxTaSP(path, num_threads=1)
    assert_dense_match(model, runner, box[:, :120, :160])
    assert_dense_match(model, runner, box)  # 223 x 324: padded to 224 x 328 as TaSP pads
    for image in (box[:, :120, :160], box):
        assert_same_features(runner(image.numpy()), features_of(model, image))
    uint8 = (box.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3) RGB
    assert_same_features(
        runner(uint8), features_of(model, torch.from_numpy(uint8).permute(2, 0, 1) / 255.0)
    )


def test_released_file_records_its_weights(released_export):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(released_export[1])).metadata_props}
    assert meta["tasp_weights"] == "tasp_v2"
    assert "multiples of 8" in meta["tasp_input"]


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"max_keypoints": 100},
        {"detection_threshold": 0.02, "nms_window": 5, "remove_borders": 0},
        {"max_keypoints": 7, "remove_borders": 12, "nms_window": 1},
    ],
)
def test_postprocess_mirrors_tasp(box, conf):
    """numpy post-processing of torch's own dense outputs: TaSP's features, any conf."""
    model = build_model()
    image = box[:, :, :300]  # 223 x 300: the heatmap cropped from the padded 224 x 304
    with torch.no_grad():
        dense = model.forward_dense(image[None])
    ours = postprocess(
        dense["logits"].numpy(),
        dense["descriptors_dense"].numpy(),
        image_size=image.shape[-2:],
        **conf,
    )
    theirs = features_of(model, image, **conf)
    assert_same_features(ours, theirs)
    if conf.get("max_keypoints"):
        np.testing.assert_array_equal(ours["keypoints"], theirs["keypoints"])  # no ties here


def test_postprocess_of_nothing_and_bad_shapes():
    logits = np.zeros((1, 65, 2, 3), np.float32)
    logits[:, 64] = 10  # all dustbin
    out = postprocess(logits, np.ones((1, 16, 4, 6), np.float32))
    assert out["keypoints"].shape == (0, 2) and out["scores"].shape == (0,)
    assert out["descriptors"].shape == (0, 16)
    with pytest.raises(ValueError, match="65"):
        postprocess(np.zeros((1, 64, 2, 3)), np.ones((1, 16, 4, 6)))
    with pytest.raises(ValueError, match="odd"):
        postprocess(logits, np.ones((1, 16, 4, 6)), nms_window=2)


def test_network_input_pads_as_tasp_and_takes_every_layout(box):
    image = box[:, :61, :93]
    array, size = network_input(image)
    assert size == (61, 93) and array.shape == (1, 3, 64, 96) and array.dtype == np.float32
    expected = F.pad(image[None], (0, 3, 0, 3), mode="replicate").numpy()
    np.testing.assert_array_equal(array, expected)
    uint8 = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_allclose(network_input(uint8)[0], array, atol=1 / 255)
    gray = network_input(uint8[..., 0])[0]
    assert gray.shape == (1, 3, 64, 96) and np.array_equal(gray[:, 0], gray[:, 2])
    assert np.array_equal(network_input(image[None])[0], array)  # (1, C, H, W)
    with pytest.raises(ValueError, match="RGB|uint8"):
        network_input(np.zeros((10, 10, 4), np.uint8))


def test_cli_fixed_size_file(tmp_path, capsys, box):
    needs_onnx()
    path = tmp_path / "fixed.onnx"
    argv = ["export-onnx", "--output", str(path), "--weights", "random", "--size", "64", "96"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"Wrote {path}" in out and "64 x 96" in out and "max |diff|" in out
    runner = OnnxTaSP(path)
    assert runner.size == (64, 96)
    assert runner(box[:, :60, :90].numpy())["descriptors"].shape[1] == 128  # padded to 64 x 96
    with pytest.raises(ValueError, match="exported for 64 x 96"):
        runner(box[:, :120, :160].numpy())


def _one_line_error(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("INFO ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], err[0]


def test_cli_bad_output_or_size_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["export-onnx", "--output", str(tmp_path)], "is a folder", "tasp.onnx")
    (tmp_path / "file").write_text("")
    below_a_file = tmp_path / "file" / "tasp.onnx"
    _one_line_error(capsys, ["export-onnx", "--output", str(below_a_file)], "not a folder")
    argv = ["export-onnx", "--output", str(tmp_path / "t.onnx"), "--size", "60", "80"]
    _one_line_error(capsys, argv, "multiples of 8")
    assert not (tmp_path / "t.onnx").exists()


def test_cli_without_the_exporter_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # import fails
    argv = ["export-onnx", "--output", str(tmp_path / "t.onnx"), "--weights", "random"]
    _one_line_error(capsys, argv, "onnxscript", "tasp-hloc[onnx]")


def test_speed_onnx_subcommand_runs(random_export, capsys):
    from benchmarks import speed

    argv = ["onnx", "--sizes", "64x48", "--runs", "1", "--threads", "1", "--no-openvino"]
    assert speed.main([*argv, "--max-keypoints", "20", "--onnx", str(random_export[1])]) == 0
    table = capsys.readouterr().out
    assert "| 64x48 | 1 | onnxruntime (fp32) |" in table and "torch plain" in table
