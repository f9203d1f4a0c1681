"""Online (streaming) inference of SparseBEV with a FIFO cache of per-frame FPN features.

In a video, the past frames of the current sample are the frames of the previous samples: caching their FPN
features means only the new frame's images go through the backbone (how the official code measures FPS). The
decoder still samples all frames, with the current sample's geometry (`lidar2img` is relative to the current
frame). Valid only without image augmentation (test time), since a frame's features must not depend on the sample
it appears in.

With `cuda_graph=True` (CUDA only) the backbone of the new frames and the whole decoder are captured once into CUDA
graphs and replayed, which removes the per-kernel launch cost that otherwise dominates a batch-1 forward.

The cache keeps the arranged FPN features in the FPN's dtype (bf16 under bf16 autocast: half the bytes to store and
copy) and widens them to fp32 when it concatenates them into the decoder input, which is exact: the decoder samples
the same fp32 values as with an fp32 cache. (`grid_sample` needs its input and grid in one dtype and the grid stays
fp32: a bf16 grid would move sampling points by up to ~0.4 feature pixels on the finest level of a 256x704 input.)

Two opt-in inference options (each works on the runner's own copy of the model, taken at construction):
- `weights_dtype=torch.bfloat16`: the weights are stored in bf16 once instead of autocast casting them every call;
  the geometry stays fp32 as under autocast: the query boxes (`FP32_MODULES`), projection, grid, point warp and the
  inverse-sigmoid refinement (the decoder computes them from `.float()` tensors), and `grid_sample` still reads fp32
  features. The residual stream between the decoder's LayerNorms is bf16 (fp32 under autocast).
- `compile_decoder=True`: `torch.compile` of the shared decoder layer (dynamic=False, inductor's default mode: it
  makes no CUDA graphs of its own, so it composes with `cuda_graph`; the compile happens in the graphs' warm-up, and
  their capture refuses to recompile).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace

import torch
from torch import Tensor

from ftkd.models.sparsebev.model import SparseBEV
from ftkd.models.sparsebev.sampling import arrange_features
from ftkd.structures.batch import Batch
from ftkd.structures.outputs import DetectorOutput, Detections

# Kept in fp32 by `cast_weights`: the learned initial query boxes (geometry: a bf16 centre in [0, 1] would move a
# query by up to 0.2 m at 50 m) and SASA's tau generator (the decoder runs it on fp32 input with autocast off).
FP32_MODULES = ("queries.init_query_bbox", "decoder.layer.self_attn.gen_tau")


def default_frame_keys(batch: Batch) -> list[list[Hashable]]:
    """Frame identities [B][T]: `meta.extra["frame_keys"]` if the data layer provides them (e.g. image file names),
    else (scene token, frame time in whole milliseconds) with frame time = keyframe timestamp - time offset."""
    keys = []
    offsets = None
    for b, meta in enumerate(batch.meta):
        if "frame_keys" in meta.extra:
            given = list(meta.extra["frame_keys"])[: batch.num_frames]
            if len(given) != batch.num_frames:
                raise ValueError(f"sample {meta.sample_token}: {len(given)} frame_keys for {batch.num_frames} frames")
            keys.append(given)
            continue
        if offsets is None:
            offsets = batch.time_offsets[:, : batch.num_frames].double().cpu()
        times = float(batch.timestamp[b]) - offsets[b]
        keys.append([(meta.scene_token, int(round(t * 1000.0))) for t in times.tolist()])
    return keys


def stack_frames(frames: list[Tensor], out: Tensor | None = None) -> Tensor:
    """B*T cached [G, C/G, rows, w] frames (any float dtype) -> [B*T*G, C/G, rows, w] fp32, the decoder input (into
    `out` if given): one concatenation that also widens bf16/fp16 to fp32 exactly."""
    if out is None:
        out = frames[0].new_empty((len(frames) * frames[0].shape[0], *frames[0].shape[1:]), dtype=torch.float32)
    return torch.cat(frames, out=out)


def cast_weights(model: SparseBEV, dtype: torch.dtype) -> SparseBEV:
    """A copy of `model` whose parameters and buffers are in `dtype`, except `FP32_MODULES`, with a forward pre-hook
    that casts the backbone's normalised (fp32) images to `dtype`: inference without autocast's per-call weight
    casts."""
    cast = copy.deepcopy(model).to(dtype)
    for name in FP32_MODULES:  # the original values: a round trip through dtype would have rounded them
        cast.get_submodule(name).float().load_state_dict(model.get_submodule(name).state_dict())
    cast.backbone.register_forward_pre_hook(lambda _module, args: (args[0].to(dtype), *args[1:]))
    return cast


class GraphedCall:
    """`function(*static_inputs)` captured once into a CUDA graph; `replay()` reruns it on the current contents of
    `static_inputs` (fill them in place first) and returns the same static output objects every time."""

    def __init__(self, function: Callable, example_inputs: list[Tensor], warmup: int = 2) -> None:
        self.static_inputs = [x.clone() for x in example_inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # cuDNN/cuBLAS choose their algorithms outside the capture
                function(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # a torch.compile'd function compiles in the warm-up: a recompile inside the capture raises instead
        with torch.compiler.set_stance("fail_on_recompile"), torch.cuda.graph(self.graph):
            self.static_output = function(*self.static_inputs)

    def replay(self):
        self.graph.replay()
        return self.static_output


class OnlineSparseBEV:
    """Run a SparseBEV model (eval mode, no future frames) frame after frame, reusing cached past features.

    Args:
        model: an online SparseBEV (config.offline False) in eval mode.
        max_cached_frames: FIFO capacity, in (sample, frame) entries; at least batch size x num_frames.
        autocast_dtype: e.g. torch.bfloat16 to run under autocast (geometry and sampling stay fp32), None for fp32.
        cuda_graph: capture the new-frame backbone and the decoder into CUDA graphs (CUDA only). The returned
            output's aux tensors are then reused buffers, valid until the next call.
        weights_dtype: e.g. torch.bfloat16 to run a copy of the model with its weights in that dtype
            (`cast_weights`) instead of autocast (exclusive with autocast_dtype); None keeps the model's weights.
        compile_decoder: `torch.compile` the decoder layer of a copy of the model (shared by all layers: one compiled
            graph, plus a second for the first layer's differently strided initial queries), dynamic=False.
        compile_backend: torch.compile's backend ("inductor"; "aot_eager" or "eager" need no compiler).
    With weights_dtype or compile_decoder the runner works on its own copy, taken at construction: later changes to
    `model` do not reach it. The cache holds features in the sampling layout (`arrange_features`) and the FPN's
    dtype, so outputs carry no pv_features.
    """

    def __init__(
        self,
        model: SparseBEV,
        max_cached_frames: int = 32,
        autocast_dtype: torch.dtype | None = None,
        cuda_graph: bool = False,
        weights_dtype: torch.dtype | None = None,
        compile_decoder: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        if model.config.offline:
            raise ValueError("OnlineSparseBEV needs an online model (config.offline=False)")
        if weights_dtype is not None and autocast_dtype is not None:
            raise ValueError(
                f"OnlineSparseBEV: weights_dtype={weights_dtype} replaces autocast, but autocast_dtype={autocast_dtype}"
            )
        if weights_dtype is not None:
            model = cast_weights(model, weights_dtype)
        elif compile_decoder:
            model = copy.deepcopy(model)
        if compile_decoder:
            model.decoder.layer.compile(backend=compile_backend, dynamic=False)  # mode "default": no CUDA graphs
        self.model = model
        self.max_cached_frames = max_cached_frames
        self.autocast_dtype = autocast_dtype
        self.cuda_graph = cuda_graph
        self.cache: OrderedDict[Hashable, list[Tensor]] = OrderedDict()
        self.graphs: dict[tuple, GraphedCall] = {}
        self.last_backbone_frames = 0  # (sample, frame) entries that went through the backbone in the last call

    def reset(self) -> None:
        """Forget cached features (captured graphs stay valid)."""
        self.cache.clear()

    def _autocast(self, device_type: str) -> torch.autocast:
        # no weight-cast cache: it would leak tensors across CUDA-graph captures
        dtype = self.autocast_dtype or torch.float32
        return torch.autocast(device_type, dtype=dtype, enabled=self.autocast_dtype is not None, cache_enabled=False)

    def _graph(self, key: tuple, function: Callable, example_inputs: list[Tensor]) -> GraphedCall:
        if key not in self.graphs:
            self.graphs[key] = GraphedCall(function, example_inputs)
        return self.graphs[key]

    def _arranged_features(self, images: Tensor) -> list[Tensor]:
        """[B', M, N, 3, H, W] -> per level [B'*M*G, C/G, N*(h+1), w] in the FPN's dtype (sampling layout, fresh
        tensors)."""
        groups = self.model.config.num_groups

        def run(x: Tensor) -> list[Tensor]:
            with self._autocast(x.device.type):
                return [arrange_features(level, groups, level.dtype) for level in self.model.extract_features(x)]

        if not (self.cuda_graph and images.is_cuda):
            return run(images)
        graph = self._graph(("backbone", tuple(images.shape), images.dtype), run, [images])
        graph.static_inputs[0].copy_(images)
        return [level.clone() for level in graph.replay()]

    def _decode(self, frames: list[list[Tensor]], batch: Batch, image_size: tuple[int, int]) -> DetectorOutput:
        """frames: per level, the B*T cached [G, C/G, N*(h+1), w] features in (sample, frame) order."""
        if not (self.cuda_graph and batch.lidar2img.is_cuda):
            arranged = [stack_frames(level) for level in frames]  # B*T x [G, ...] -> [B*T*G, ...] fp32
            with self._autocast(batch.lidar2img.device.type):
                return self.model.decode_arranged(arranged, batch.lidar2img, batch.time_offsets, image_size)
        num_levels = len(frames)

        def run(*inputs: Tensor) -> DetectorOutput:
            with self._autocast("cuda"):
                return self.model.decode_arranged(list(inputs[:num_levels]), inputs[-2], inputs[-1], image_size)

        shapes = tuple((len(level) * level[0].shape[0], *level[0].shape[1:]) for level in frames)
        key = ("decoder", shapes, tuple(batch.lidar2img.shape), image_size)
        if key not in self.graphs:
            examples = [stack_frames(level) for level in frames]
            self.graphs[key] = GraphedCall(run, [*examples, batch.lidar2img, batch.time_offsets])
        graph = self.graphs[key]
        for level, static in zip(frames, graph.static_inputs):
            stack_frames(level, out=static)  # fill the captured fp32 input in place
        graph.static_inputs[-2].copy_(batch.lidar2img)
        graph.static_inputs[-1].copy_(batch.time_offsets)
        output = graph.replay()
        return replace(
            output,
            pred_logits=output.pred_logits.clone(),
            pred_boxes=output.pred_boxes.clone(),
            query_features=output.query_features.clone(),
        )

    @torch.no_grad()
    def __call__(self, batch: Batch, frame_keys: list[list[Hashable]] | None = None) -> DetectorOutput:
        if self.model.training:
            raise RuntimeError("OnlineSparseBEV: call model.eval() first (cached features assume test-time inputs)")
        images = self.model._frames(batch)  # [B, T, N, 3, H, W]; raises on future frames
        B, T = images.shape[:2]
        if self.max_cached_frames < B * T:
            raise ValueError(f"max_cached_frames={self.max_cached_frames} < batch size x frames = {B * T}")
        keys = default_frame_keys(batch) if frame_keys is None else frame_keys
        missing = [(b, t) for b in range(B) for t in range(T) if keys[b][t] not in self.cache]
        self.last_backbone_frames = len(missing)
        if missing:
            steady = [t for _, t in missing] == [0] * B  # the usual case: one new (current) frame per sample
            new_images = images[:, :1] if steady else torch.stack([images[b, t] for b, t in missing])[None]
            new_features = self._arranged_features(new_images)  # per level [len(missing)*G, ...], (sample, frame) order
            G = self.model.config.num_groups
            for i, (b, t) in enumerate(missing):
                self.cache[keys[b][t]] = [level[i * G : (i + 1) * G] for level in new_features]
        for b in range(B):
            for t in range(T):
                self.cache.move_to_end(keys[b][t])
        frames = [
            [self.cache[keys[b][t]][level] for b in range(B) for t in range(T)]
            for level in range(len(self.model.backbone.out_levels))
        ]
        while len(self.cache) > self.max_cached_frames:
            self.cache.popitem(last=False)
        return self._decode(frames, batch, (images.shape[-2], images.shape[-1]))

    def detect(self, batch: Batch, frame_keys: list[list[Hashable]] | None = None) -> list[Detections]:
        """Decoded detections (reference frame) of the current keyframe of each sample."""
        return self.model.postprocess(self(batch, frame_keys))
