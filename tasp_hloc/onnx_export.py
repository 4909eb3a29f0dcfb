"""TaSP's network as an ONNX file, and the numpy post-processing that makes features of it.

    python -m tasp_hloc export-onnx --output tasp.onnx            # any H, W (multiples of 8)
    python -m tasp_hloc export-onnx --output tasp.onnx --size 480 640   # one fixed size

The file holds the network's dense outputs, ``TaSP.forward_dense``: ``image`` (1, 3, H, W)
float32 RGB in [0, 1], H and W multiples of 8 -> ``logits`` (1, 65, H/8, W/8) and
``descriptors_dense`` (1, D, H/4, W/4), unit-norm along D. :func:`postprocess` turns them into
keypoints, scores and descriptors with numpy alone, as ``TaSP`` does with ``subpixel: None``;
:class:`OnnxTaSP` runs both with onnxruntime on the CPU, padding any image to multiples of 8
as ``TaSP`` does:

    from tasp_hloc.onnx_export import OnnxTaSP
    features = OnnxTaSP("tasp.onnx", max_keypoints=2048)(rgb_uint8_array)

Export uses torch's ONNX exporter built on ``torch.export`` (``dynamo=True``, needs the
packages onnx and onnxscript): the network computes TensorFlow "SAME" padding from the input
size, which the older TorchScript exporter (``dynamo=False``) records wrongly as soon as the
size is dynamic (its output keeps the traced size). Running needs onnxruntime only (no torch):
``pip install "tasp-hloc[onnx]"`` installs all three.
"""

import logging
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

OPSET = 18
# The network as exported: the plain float32 modules (no oneDNN fusion, no autocast, NCHW).
EXPORT_CONF = {"fuse": False, "channels_last": False, "amp": None}
CELL = 8  # the detector's stride: image sides are multiples of it
DESCRIPTOR_STRIDE = 4
MAX_CELLS = 2048  # dynamic sides up to 8 * 2048 = 16384 pixels
INPUT_NAME, OUTPUT_NAMES = "image", ("logits", "descriptors_dense")
INSTALL_HINT = 'pip install "tasp-hloc[onnx]" (or: pip install onnx onnxscript onnxruntime)'


class MissingDependency(ImportError):
    """onnx, onnxscript or onnxruntime is not installed; the message says what to install."""


def _require(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{purpose} needs the package {module}: {INSTALL_HINT}") from e


# ------------------------------------------------------------------------------------ export
def build_model(**conf):
    """``TaSP`` as exported: ``EXPORT_CONF`` plus ``conf`` (e.g. ``weights``), in eval mode."""
    from .model.tasp import TaSP

    return TaSP({**conf, **EXPORT_CONF}).eval()


def _dense_module(model):
    import torch

    class DenseOutputs(torch.nn.Module):
        """``model.forward_dense`` as a tuple, the form the exporter takes."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image):
            dense = self.model.forward_dense(image)
            return dense["logits"], dense["descriptors_dense"]

    return DenseOutputs(model).eval()


def export_onnx(
    output: Union[str, Path],
    model=None,
    size: Optional[Tuple[int, int]] = None,
    opset: int = OPSET,
    check: bool = True,
) -> Dict:
    """Write ``model``'s network (default: ``build_model()``, the released default weights)
    to ``output`` as one self-contained ONNX file.

    Args:
        output: the .onnx file; its folder is created; written whole or not at all.
        model: a ``TaSP`` on the CPU; exported in eval mode with ``EXPORT_CONF`` (set for
            the export, then restored).
        size: ``(H, W)``, multiples of 8, for a file that takes only that size; None: any
            H, W that are multiples of 8.
        opset: the ONNX opset.
        check: when onnxruntime is installed, run the file on a random image and compare
            with the torch network (``ValueError`` past 1e-3 on either output).

    Returns:
        ``{"output", "size", "opset", "weights", "max_abs_diff"}`` (the last: logits and
        descriptors, onnxruntime against torch, or None without the check).
    """
    import torch

    _require("onnxscript", "ONNX export")
    onnx = _require("onnx", "ONNX export")
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) <= 0 or size[0] % CELL or size[1] % CELL:
            raise ValueError(
                f"size must be (H, W), positive multiples of 8, e.g. (480, 640); got {size}"
            )
    model = build_model() if model is None else model
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("Export a model on the CPU: call model.cpu() first.")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    saved = {k: model.conf[k] for k in EXPORT_CONF}
    was_training = model.training
    model.conf.update(EXPORT_CONF)
    model.eval()
    example = torch.rand(1, 3, *(size or (64, 96)), generator=torch.Generator().manual_seed(0))
    dynamic_shapes = None
    if size is None:
        cells_h = torch.export.Dim("cells_h", min=1, max=MAX_CELLS)
        cells_w = torch.export.Dim("cells_w", min=1, max=MAX_CELLS)
        dynamic_shapes = {"image": {2: CELL * cells_h, 3: CELL * cells_w}}
    # the exporter's notes ("torchvision is not installed", each optimisation pass) and warnings
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        module = _dense_module(model)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
            reference = [t.numpy() for t in module(example)]
        proto = onnx.load(str(tmp))
        weights = model.conf.get("weights")
        meta = {
            "tasp_weights": "random" if weights is None else str(weights),
            "tasp_input": "image (1, 3, H, W) float32 RGB in [0, 1], H and W multiples of 8",
            "tasp_postprocess": "tasp_hloc.onnx_export.postprocess",
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        diff = _check(tmp, example.numpy(), reference) if check else None
        os.replace(tmp, output)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        model.conf.update(saved)
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return {
        "output": output,
        "size": size,
        "opset": opset,
        "weights": meta["tasp_weights"],
        "max_abs_diff": diff,
    }


def _check(path: Path, image: np.ndarray, reference: Sequence[np.ndarray]) -> Optional[float]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    session = OnnxTaSP(path).session
    outputs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs, reference))
    if not diff <= 1e-3:
        raise ValueError(f"the exported {path} differs from the torch network by {diff:.2g}")
    return diff


# ------------------------------------------------------------------------- post-processing
def _max_filter(x: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the (2r+1)^2 window of every pixel, the window cut at the image edges
    (``keypoints.max_filter``)."""
    for axis in (1, 0):
        source, x = x, x.copy()
        src, dst = source.swapaxes(0, axis), x.swapaxes(0, axis)  # views: rows along axis
        n = dst.shape[0]
        for s in range(1, min(radius, n - 1) + 1):
            np.maximum(dst[s:], src[: n - s], out=dst[s:])
            np.maximum(dst[: n - s], src[s:], out=dst[: n - s])
    return x


def heatmap(logits: np.ndarray) -> np.ndarray:
    """(65, h, w) cell logits -> (8h, 8w) keypoint probability: softmax over the 65 classes,
    the dustbin dropped, channel ``8*dy + dx`` put at pixel (dx, dy) of its cell."""
    logits = np.asarray(logits, np.float32)
    e = np.exp(logits - logits.max(0, keepdims=True))
    prob = (e / e.sum(0, keepdims=True))[:64]
    _, h, w = prob.shape
    return prob.reshape(CELL, CELL, h, w).transpose(2, 0, 3, 1).reshape(h * CELL, w * CELL)


def sample_descriptors(descriptors: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Bilinear samples of a (D, h, w) stride-4 map at (N, 2) x-y pixels, unit-norm (N, D).

    As ``torch.nn.functional.grid_sample(align_corners=False, padding_mode="border")``: map
    cell (i, j) is centred on pixel (4j + 1.5, 4i + 1.5); past the outer centres the border
    value repeats."""
    d, h, w = descriptors.shape
    kp = np.asarray(keypoints, np.float32).reshape(-1, 2)
    size = np.array([w, h], np.float32) * np.float32(DESCRIPTOR_STRIDE)
    grid = (kp + np.float32(0.5)) / size * np.float32(2) - np.float32(1)
    xy = ((grid + np.float32(1)) * np.array([w, h], np.float32) - np.float32(1)) / np.float32(2)
    xy = np.clip(xy, 0, np.array([w - 1, h - 1], np.float32))
    x0 = np.floor(xy[:, 0]).astype(np.int64)
    y0 = np.floor(xy[:, 1]).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    sampled = (
        descriptors[:, y0, x0] * ((1 - fx) * (1 - fy))
        + descriptors[:, y0, x1] * (fx * (1 - fy))
        + descriptors[:, y1, x0] * ((1 - fx) * fy)
        + descriptors[:, y1, x1] * (fx * fy)
    ).T
    norm = np.linalg.norm(sampled, axis=1, keepdims=True)
    return (sampled / np.maximum(norm, 1e-12)).astype(np.float32)


def postprocess(
    logits: np.ndarray,
    descriptors_dense: np.ndarray,
    max_keypoints: int = -1,
    detection_threshold: float = 0.005,
    nms_window: int = 3,
    remove_borders: int = 4,
    image_size: Optional[Tuple[int, int]] = None,
) -> Dict[str, np.ndarray]:
    """Keypoints, scores and descriptors of one image from the network's dense outputs, with
    numpy alone: the same as ``TaSP`` with ``subpixel: None`` (its defaults here).

    Steps (``tasp_hloc.model.keypoints``): softmax over the 65 cell classes, dustbin dropped,
    depth-to-space (:func:`heatmap`); non-maximum suppression in ``nms_window`` x
    ``nms_window`` (ties all kept); the ``remove_borders`` outermost pixels zeroed; the pixels
    above ``detection_threshold``, strongest first, at most ``max_keypoints`` (<= 0: all);
    descriptors sampled bilinearly at the keypoints (:func:`sample_descriptors`).

    Args:
        logits: (1, 65, H/8, W/8) or (65, H/8, W/8), the file's first output.
        descriptors_dense: (1, D, H/4, W/4) or (D, H/4, W/4), its second output.
        image_size: (H, W) of the image before it was padded to multiples of 8, whose pixels
            alone can hold keypoints; None: the padded size.

    Returns:
        ``keypoints`` (N, 2) float32 x-y pixels, the centre of the top-left pixel at (0, 0);
        ``scores`` (N,) float32, descending; ``descriptors`` (N, D) float32, unit-norm.
    """
    logits = np.asarray(logits, np.float32)
    descriptors_dense = np.asarray(descriptors_dense, np.float32)
    logits = logits[0] if logits.ndim == 4 else logits
    descriptors_dense = descriptors_dense[0] if descriptors_dense.ndim == 4 else descriptors_dense
    if logits.ndim != 3 or logits.shape[0] != 65 or descriptors_dense.ndim != 3:
        raise ValueError(
            f"Expected logits (1, 65, h, w) and descriptors (1, D, 2h, 2w), got "
            f"{logits.shape} and {descriptors_dense.shape}."
        )
    if nms_window % 2 != 1:
        raise ValueError(f"The NMS window must be odd, got {nms_window}.")
    scores = heatmap(logits)
    if image_size is not None:
        scores = scores[: int(image_size[0]), : int(image_size[1])]
    h, w = scores.shape
    scores = np.where(scores == _max_filter(scores, nms_window // 2), scores, np.float32(0))
    if remove_borders > 0:
        b = remove_borders
        scores[:b], scores[max(h - b, 0) :], scores[:, :b], scores[:, max(w - b, 0) :] = 0, 0, 0, 0
    flat = scores.reshape(-1)
    candidates = np.flatnonzero(flat > detection_threshold)
    order = np.argsort(-flat[candidates], kind="stable")  # strongest first, ties by position
    if max_keypoints > 0:
        order = order[:max_keypoints]
    index = candidates[order]
    keypoints = np.stack([index % w, index // w], -1).astype(np.float32).reshape(-1, 2)
    return {
        "keypoints": keypoints,
        "scores": flat[index].astype(np.float32),
        "descriptors": sample_descriptors(descriptors_dense, keypoints),
    }


# ----------------------------------------------------------------------------------- running
def network_input(image) -> Tuple[np.ndarray, Tuple[int, int]]:
    """An image as the file takes it: (1, 3, H', W') float32 in [0, 1], padded at the bottom
    and right to multiples of 8 by repeating the last row / column (as ``TaSP``), and its
    (H, W) before padding.

    ``image``: a uint8 array (H, W) gray or (H, W, 3) RGB (OpenCV's BGR: convert first), or a
    float array or tensor in [0, 1], (H, W), (C, H, W) or (1, C, H, W) with C = 1 or 3
    (``tasp_hloc.load_image``'s layout)."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        if array.ndim == 3:
            array = array.transpose(2, 0, 1)
        array = array.astype(np.float32) / np.float32(255)
    array = np.asarray(array, np.float32)
    array = array[None] if array.ndim == 2 else array
    array = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(
            f"Expected an image (H, W), (H, W, 3) uint8 or (C, H, W) float with C = 1 or 3, "
            f"got shape {np.shape(image)} of {np.asarray(image).dtype}."
        )
    if array.shape[0] == 1:
        array = np.repeat(array, 3, 0)
    h, w = array.shape[1:]
    array = np.pad(array, ((0, 0), (0, -h % CELL), (0, -w % CELL)), mode="edge")
    return np.ascontiguousarray(array[None]), (h, w)


class OnnxTaSP:
    """An exported file run by onnxruntime on the CPU, with :func:`postprocess`.

    Args:
        path: the .onnx file of ``export-onnx``.
        max_keypoints, detection_threshold, nms_window, remove_borders: as ``TaSP``'s conf.
        num_threads: onnxruntime's intra-op threads (None: its default, all cores).
        providers: onnxruntime execution providers.
        session_config: onnxruntime session config entries, e.g.
            ``{"session.intra_op.allow_spinning": "0"}``.

    Call: ``image`` (see :func:`network_input`) -> ``{"keypoints", "scores", "descriptors"}``
    (:func:`postprocess`), in the pixels of the image as given.
    """

    def __init__(
        self,
        path: Union[str, Path],
        max_keypoints: int = -1,
        detection_threshold: float = 0.005,
        nms_window: int = 3,
        remove_borders: int = 4,
        num_threads: Optional[int] = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        session_config: Optional[Dict[str, str]] = None,
    ):
        ort = _require("onnxruntime", "Running an exported TaSP")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.conf = {
            "max_keypoints": max_keypoints,
            "detection_threshold": detection_threshold,
            "nms_window": nms_window,
            "remove_borders": remove_borders,
        }
        shape = self.session.get_inputs()[0].shape
        self.size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None

    def dense(self, image) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
        """``logits``, ``descriptors_dense`` (batch of 1) and the image's (H, W)."""
        array, (h, w) = network_input(image)
        if self.size is not None and array.shape[2:] != self.size:
            raise ValueError(
                f"This file was exported for {self.size[0]} x {self.size[1]} images (--size); "
                f"got {h} x {w}: resize the image, or export without --size for any size."
            )
        logits, descriptors = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
        return logits, descriptors, (h, w)

    def __call__(self, image) -> Dict[str, np.ndarray]:
        logits, descriptors, size = self.dense(image)
        return postprocess(logits, descriptors, image_size=size, **self.conf)
