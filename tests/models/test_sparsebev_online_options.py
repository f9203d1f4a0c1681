"""OnlineSparseBEV's inference options on the CPU: bf16 weights keep the geometry fp32 (query centres bit for bit,
grid_sample on fp32 features and grid) and stay as close to fp32 as autocast; the compiled decoder layer
(aot_eager: no C++ compiler needed) gives the uncompiled outputs bit for bit, without graph breaks."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from test_sparsebev_online_fast import T, assert_same_bits, stream, tiny_config

from ftkd.models.sparsebev import online
from ftkd.models.sparsebev.model import SparseBEV
from ftkd.models.sparsebev.online import OnlineSparseBEV, cast_weights
from ftkd.models.sparsebev.sampling import arrange_features


def default_init_model(fixed_centres: bool) -> SparseBEV:
    """A tiny online SparseBEV with its own initialisation (as the speed benchmark's random weights; 25 queries: their
    initial centres (k + 0.5) / 5 are not bf16 numbers); with
    `fixed_centres` the box head predicts no centre residual, so every layer's refined centre is the initial query
    centre put through inverse sigmoid and sigmoid in fp32: any bf16 on that path moves it by centimetres."""
    torch.manual_seed(0)
    model = SparseBEV(tiny_config(num_queries=25)).eval()
    if fixed_centres:
        with torch.no_grad():
            model.decoder.layer.reg_branch[-1].weight[0:3] = 0.0
            model.decoder.layer.reg_branch[-1].bias[0:3] = 0.0
    return model


def run_stream(model: SparseBEV, samples: list[tuple], **options) -> list:
    runner = OnlineSparseBEV(model, max_cached_frames=4 * T, **options)
    return [runner(batch, keys) for batch, keys in samples]


def max_difference(outputs, references, field: str, columns: slice = slice(None)) -> float:
    return max(
        float((getattr(a, field)[..., columns] - getattr(b, field)[..., columns]).abs().max())
        for a, b in zip(outputs, references, strict=True)
    )


def test_bf16_weights_keep_the_query_centres_fp32_bit_for_bit():
    model = default_init_model(fixed_centres=True)
    samples = stream(2)
    reference = run_stream(model, samples)
    outputs = run_stream(model, samples, weights_dtype=torch.bfloat16)
    centre = slice(0, 3)
    assert max_difference(outputs, reference, "pred_boxes", centre) == 0.0
    for aux, aux_reference in zip(outputs[-1].aux_boxes, reference[-1].aux_boxes, strict=True):
        assert torch.equal(aux[..., centre], aux_reference[..., centre])
    # not vacuous: the same model with its initial query boxes in bf16 moves the centres by centimetres or more
    with mock.patch.object(online, "FP32_MODULES", ("decoder.layer.self_attn.gen_tau",)):
        bf16_boxes = run_stream(model, samples[:1], weights_dtype=torch.bfloat16)
    assert max_difference(bf16_boxes, reference[:1], "pred_boxes", centre) > 0.02
    assert model.decoder.layer.cls_branch[0].weight.dtype == torch.float32  # the caller's model is untouched


def test_bf16_weights_sample_fp32_features_with_an_fp32_grid():
    model = default_init_model(fixed_centres=False)
    calls = []
    grid_sample = F.grid_sample

    def recording_grid_sample(features, grid, *args, **kwargs):
        calls.append((features.dtype, grid.dtype))
        return grid_sample(features, grid, *args, **kwargs)

    with mock.patch("ftkd.models.sparsebev.sampling.F.grid_sample", recording_grid_sample):
        run_stream(model, stream(1, steps=2), weights_dtype=torch.bfloat16)
    assert calls and set(calls) == {(torch.float32, torch.float32)}


def test_bf16_weights_stay_close_to_fp32():
    """Measured here (4 samples, torch 2.14.1 on the CPU): max |logit - fp32| 0.129 with bf16 weights, 0.024 with
    autocast (max |logit| 5.6; bf16 weights also round the decoder's residual stream); centres 0.11 m and 0.08 m
    (mostly the bf16 centre residual of the box head). Both are held to the same bounds rather than to each other:
    how much autocast keeps in fp32 depends on the torch release (with an earlier release its logits moved by 0.068)."""
    model = default_init_model(fixed_centres=False)
    samples = stream(2)
    reference = run_stream(model, samples)
    scale = max(float(output.pred_logits.abs().max()) for output in reference)
    for options in ({"weights_dtype": torch.bfloat16}, {"autocast_dtype": torch.bfloat16}):
        outputs = run_stream(model, samples, **options)
        logits = max_difference(outputs, reference, "pred_logits")
        centres = max_difference(outputs, reference, "pred_boxes", slice(0, 3))
        assert 0 < logits < 0.05 * scale and centres < 0.5, (options, logits, centres, scale)


def test_cast_weights_keeps_only_the_geometry_fp32():
    model = default_init_model(fixed_centres=False)
    cast = cast_weights(model, torch.bfloat16)
    fp32 = {name for name, p in cast.named_parameters() if p.dtype == torch.float32}
    assert fp32 == {"queries.init_query_bbox.weight", "decoder.layer.self_attn.gen_tau.weight",
                    "decoder.layer.self_attn.gen_tau.bias"}  # fmt: skip
    assert all(b.dtype == torch.bfloat16 for b in cast.buffers() if b.is_floating_point())
    with pytest.raises(ValueError, match="replaces autocast"):
        OnlineSparseBEV(model, autocast_dtype=torch.bfloat16, weights_dtype=torch.bfloat16)


def test_compiled_decoder_layer_gives_the_same_outputs():
    """With bf16 weights (the compiled autocast runner is checked by the speed benchmark's CPU rehearsal)."""
    torch._dynamo.reset()
    model = default_init_model(fixed_centres=False)
    samples = stream(2)
    reference = run_stream(model, samples, weights_dtype=torch.bfloat16)
    frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    runner = OnlineSparseBEV(model, max_cached_frames=4 * T, weights_dtype=torch.bfloat16, compile_decoder=True,
                             compile_backend="aot_eager")
    compiled = [runner(batch, keys) for batch, keys in samples]
    for got, expected in zip(compiled, reference, strict=True):
        assert_same_bits(got, expected)
    assert runner.model.decoder.layer._compiled_call_impl is not None  # the layer really went through dynamo
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > frames_before
    assert not hasattr(model.decoder.layer, "_compiled_call_impl") or model.decoder.layer._compiled_call_impl is None


def test_decoder_layer_has_no_graph_breaks():
    model = default_init_model(fixed_centres=False)
    batch, _ = stream(1, steps=1)[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        features = [arrange_features(level, model.config.num_groups) for level in model.extract_features(batch.images)]
        query_boxes, query_feat, _, _ = model.queries(1)
        explanation = torch._dynamo.explain(model.decoder.layer)(
            query_boxes, query_feat, features, batch.lidar2img, batch.time_offsets, (32, 96), None
        )
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
