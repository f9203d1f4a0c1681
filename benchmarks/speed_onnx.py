"""ONNX sections of the speed benchmark (`benchmarks/speed.py`): export of a random-weight student with
`ftkd.deploy.export.export_model`, its per-frame ONNX Runtime latency with state carried frame to frame, and its
parity with the same export wrapper in PyTorch (`compare_frame`), each returning one JSON section as a dict.

Not a script: `benchmarks/speed.py` imports it (benchmarks/ is not a package); onnxruntime and ftkd.deploy are
imported inside the functions that use them.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ftkd.config import load_config
from ftkd.constants import CAMERA_NAMES
from ftkd.models.build import build_model
from ftkd.structures import Detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_torch import NUM_POOL_FRAMES, summary  # noqa: E402  (the stream's image pool size, the timing summary)

if TYPE_CHECKING:
    from ftkd.deploy.runtime import Frame

ONNX_PARITY_FRAMES = 3
ONNX_SCORE_TOLERANCE, ONNX_BOX_TOLERANCE = 5e-4, 5e-3  # those of tests/deploy/test_export.py (docs/deploy.md)
ONNX_LATENCY_BUDGET_S = 30.0  # timed ONNX Runtime frames per model are cut to fit this (CPU provider on big models)


@torch.no_grad()
def spread_class_scores(
    model: torch.nn.Module, frame: Frame, image_size: tuple[int, int], device: torch.device
) -> None:
    """Redraw the last layer of the class head so that on `frame` (a `Frame` through the export wrapper) each class's
    logit is centred across queries and varies with standard deviation up to 1 (N(0, 1) weights at most).

    A random-weight model gives nearly the same features to every query: with the prior-initialised head all scores
    are ~0.01 (at paper size the top 300 lie within 3e-3 of each other) and an N(0, 1) head saturates them at 1.0;
    either way no rank is 1e-4 away from its neighbours and `compare_detections` could compare no box.
    """
    from ftkd.deploy.runtime import TorchStep

    heads = [module[-1] for name, module in model.named_modules() if name.endswith("cls_branch")]
    if len(heads) != 1:
        raise ValueError(f"expected one cls_branch in {type(model).__name__}, found {len(heads)}")
    head, captured = heads[0], []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    try:
        with torch.device(device):  # see OnnxBench.parity
            TorchStep(model, image_size, device)(frame)
    finally:
        hook.remove()
        model.cpu()
    queries = model.config.num_queries + getattr(model.config, "num_propagated", 0)
    # SparseBEV calls the head once per decoder layer on [1, Q, C], StreamPETR once on [L, 1, Q, C]: the last Q rows
    # are the last layer's queries
    features = captured[-1].float().reshape(-1, captured[-1].shape[-1])[-queries:].cpu()  # [Q, C]
    weight = torch.randn(head.out_features, head.in_features)
    logits = features @ weight.T  # [Q, K]
    # never above N(0, 1) weights: a larger gain would also amplify the rounding differences being measured
    scale = (1.0 / logits.std(dim=0).clamp(min=1e-12)).clamp(max=1.0)
    head.weight.copy_(weight * scale[:, None])
    head.bias.copy_(-logits.mean(dim=0) * scale)


class OnnxBench:
    """Export of a random-weight student and its ONNX Runtime latency and parity (`ftkd.deploy`).

    The score threshold is 0 and the class head is redrawn by `spread_class_scores`, so that the top-k scores are
    distinct enough for `compare_detections` to compare boxes rank by rank.
    """

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int, workdir: Path) -> None:
        self.config_path, self.device, self.steps, self.warmup = config_path, device, steps, warmup
        self.config = load_config(config_path, ["model.score_threshold=0.0"])
        self.size = tuple(self.config.data.image_size)
        self.path = workdir / f"{self.config.model.arch}.onnx"
        self.model: torch.nn.Module | None = None
        self.step = None

    def frames(self, count: int) -> list:
        """`count` frames of a ring-rig drive (`ring_rig`) at 5 m/s forward, 0.5 s apart, random uint8 images."""
        from ftkd.deploy.runtime import Frame, ring_rig

        lidar2img, intrinsics = (x.numpy() for x in ring_rig(self.size))
        rng = np.random.default_rng(0)
        pool = rng.integers(0, 256, (NUM_POOL_FRAMES, len(CAMERA_NAMES), 3, *self.size), dtype=np.uint8)
        frames = []
        for k in range(count):
            pose = np.eye(4)
            pose[0, 3] = 2.5 * k
            frames.append(Frame(pool[k % NUM_POOL_FRAMES], lidar2img, intrinsics, pose, 0.5 * k))
        return frames

    def export(self) -> dict:
        """Export (CPU, fp32), open an ONNX Runtime session and time frames with carried state."""
        import onnxruntime

        from ftkd.deploy.export import DEFAULT_OPSET, export_model
        from ftkd.deploy.runtime import OnnxStep

        torch.manual_seed(0)
        self.model = build_model(self.config.model).eval()
        spread_class_scores(self.model, self.frames(1)[0], self.size, self.device)
        start = time.perf_counter()
        export_model(self.model, self.path, self.size, opset=DEFAULT_OPSET)
        result: dict[str, Any] = {
            "export_s": time.perf_counter() - start,
            "file_mb": self.path.stat().st_size / 1e6,
            "opset": DEFAULT_OPSET,
            "onnxruntime": onnxruntime.__version__,
            "providers_available": onnxruntime.get_available_providers(),
        }
        start = time.perf_counter()
        step = None
        if self.device.type == "cuda" and "CUDAExecutionProvider" in result["providers_available"]:
            try:
                step = OnnxStep(self.path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
                if step.session.get_providers()[0] != "CUDAExecutionProvider":
                    # listed but not loadable (CUDA/cuDNN libraries): the session fell back to the CPU, while
                    # OnnxStep would still bind its state outputs on the GPU
                    result["cuda_provider_failed"] = f"session fell back to {step.session.get_providers()}"
                    step = None
            except Exception as error:
                result["cuda_provider_failed"] = f"{type(error).__name__}: {error}"[:1000]
                step = None
        if step is None:
            step = OnnxStep(self.path)
        result["session_s"] = time.perf_counter() - start
        result["provider"] = step.session.get_providers()[0]
        result["session_providers"] = step.session.get_providers()
        self.step = step

        # CUDA: cuDNN's algorithm search runs in the first calls; CPU: nothing to tune, and a paper-size frame takes
        # seconds there
        warmup = min(self.warmup, 5 if result["provider"] == "CUDAExecutionProvider" else 2)
        frames = self.frames(warmup + self.steps)
        state = None
        warm_ms = []
        for frame in frames[:warmup]:
            start = time.perf_counter()
            _, state = step(frame, state)
            warm_ms.append((time.perf_counter() - start) * 1000.0)
        result["first_frame_ms"] = warm_ms[0]
        # steady frames that fit the time budget (a paper-size graph on the CPU provider takes seconds per frame)
        count = min(self.steps, max(3, int(ONNX_LATENCY_BUDGET_S * 1000.0 / warm_ms[-1])))
        times = []
        for frame in frames[warmup : warmup + count]:
            start = time.perf_counter()
            detections, state = step(frame, state)
            times.append((time.perf_counter() - start) * 1000.0)
        result["latency"] = summary(times)
        result["warmup_frames"] = warmup
        result["detections_last_frame"] = len(detections.scores)
        return result

    def parity(self) -> dict:
        """ONNX Runtime vs `TorchStep` (fp32, TF32 off) on the torch device, 3 frames, each side carrying its state."""
        from ftkd.deploy.runtime import TorchStep

        if self.step is None or self.model is None:
            raise RuntimeError("the onnx section did not produce a session")
        result: dict[str, Any] = {"frames": ONNX_PARITY_FRAMES, "provider": self.step.session.get_providers()[0],
                                  "torch_device": str(self.device)}  # fmt: skip
        if result["provider"] == "CUDAExecutionProvider":
            try:  # ONNX Runtime's CUDA provider uses TF32 by default; compare fp32 with fp32
                self.step.session.set_providers(
                    ["CUDAExecutionProvider", "CPUExecutionProvider"], [{"use_tf32": "0"}, {}]
                )
                result["onnxruntime_tf32"] = False
            except Exception as error:  # an onnxruntime without the option: compare with its default (TF32)
                result["onnxruntime_tf32"] = f"default (use_tf32=0 refused: {type(error).__name__}: {error})"[:1000]
                self.step.session.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            # ftkd/deploy/export.py now creates its constants on the model's device; the default device is kept as a
            # guard until this CUDA path has run once (the CPU rehearsal cannot show a stray CPU tensor)
            with torch.device(self.device):
                reference = TorchStep(self.model, self.size, self.device)
            onnx_state = torch_state = None
            score_diff = box_diff = 0.0
            counts, clear, mismatches = [], [], []
            for t, frame in enumerate(self.frames(ONNX_PARITY_FRAMES)):
                onnx_detections, onnx_state = self.step(frame, onnx_state)
                with torch.device(self.device):
                    torch_detections, torch_state = reference(frame, torch_state)
                counts.append([len(torch_detections.scores), len(onnx_detections.scores)])
                scores, boxes, compared, mismatch = compare_frame(torch_detections, onnx_detections)
                clear.append(compared)
                if mismatch:
                    mismatches.append(f"frame {t}: {mismatch}")
                score_diff, box_diff = max(score_diff, scores), max(box_diff, boxes)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        result.update(max_score_diff=score_diff, max_box_diff=box_diff if math.isfinite(box_diff) else None)
        result["detections_per_frame"] = counts  # [torch, onnx] per frame
        result["boxes_compared_per_frame"] = clear  # ranks clear of their neighbours (compare_frame)
        if mismatches:
            result["mismatches"] = mismatches
        result["tolerance"] = {"score": ONNX_SCORE_TOLERANCE, "box": ONNX_BOX_TOLERANCE}
        result["within_tolerance"] = (
            not mismatches and sum(clear) > 0 and score_diff <= ONNX_SCORE_TOLERANCE and box_diff <= ONNX_BOX_TOLERANCE
        )
        return result

    def release(self) -> None:
        self.model = self.step = None
        self.path.unlink(missing_ok=True)


def compare_frame(reference: Detections, other: Detections) -> tuple[float, float, int, str | None]:
    """(max |score difference|, max |box difference|, ranks whose boxes were compared, None) of two top-k lists.

    Scores are compared rank by rank; boxes by `compare_detections` at the ranks whose reference score is farther
    from both neighbours than 1e-4 or four times the largest score difference, whichever is larger (closer ranks can
    swap by the rounding being measured). Where it refuses (a label differs at such a rank, or a different count):
    the scores of the common ranks, inf, 0 and why.
    """
    from ftkd.deploy.runtime import compare_detections

    n = min(len(reference.scores), len(other.scores))
    score_diff = float((reference.scores[:n].double() - other.scores[:n].double()).abs().max()) if n else 0.0
    tolerance = max(1e-4, 4.0 * score_diff)
    try:
        score_diff, box_diff = compare_detections(reference, other, tolerance)
    except ValueError as error:
        return score_diff, math.inf, 0, str(error)
    gaps = reference.scores.double().diff().abs() > tolerance
    clear = torch.ones(len(reference.scores), dtype=torch.bool)
    clear[1:] &= gaps
    clear[:-1] &= gaps
    return score_diff, box_diff, int(clear.sum()), None

