import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers")

from diffusers.models.cache_utils import CacheMixin  # noqa: E402

from integrators.diffusers import (  # noqa: E402
    apply_cache,
    cache_stats,
    find_blocks,
    remove_cache,
    reset_cache,
)
from integrators.methods import (  # noqa: E402
    FORA,
    ABCache,
    BlockRecorder,
    BlockStack,
    BWCache,
    CFGCache,
    ERTACache,
    FirstBlockCache,
    ProfilingDiT,
    Sortblock,
    TaylorSeer,
)
from integrators.samplers import Recorder  # noqa: E402


class AffineBlock(nn.Module):
    """Adds ``weight * t + offset``: a residual that depends on the timestep alone."""

    def __init__(self, weight, offset=0.0):
        super().__init__()
        self.weight, self.offset, self.calls = weight, offset, 0

    def forward(self, hidden_states, timestep=None):
        self.calls += 1
        return hidden_states + self.weight * timestep.view(-1, 1) + self.offset


class DummyTransformer(nn.Module):
    def __init__(self, weights, offsets=None):
        super().__init__()
        offsets = offsets or [0.0] * len(weights)
        self.transformer_blocks = nn.ModuleList(AffineBlock(w, o) for w, o in zip(weights, offsets))

    def forward(self, hidden_states, timestep):
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, timestep=timestep)
        return hidden_states

    @property
    def calls(self):
        return [block.calls for block in self.transformer_blocks]


def run(model, xs, times):
    return [model(x, torch.tensor([float(t)], dtype=x.dtype)) for x, t in zip(xs, times)]


def ones(value):
    return torch.full((1, 1), value, dtype=torch.float64)


def test_bwcache_reuses_each_block_until_its_input_change_adds_up():
    model = DummyTransformer([0.0, 100.0, 0.0])
    apply_cache(model, BWCache(tol=0.1, warmup=1))
    out = run(model, [ones(1.0), ones(1.06), ones(1.12)], [10, 9, 8])
    # step 1: input changed 6% < 10%: every block reuses its residual (100 * 10 for block 1)
    torch.testing.assert_close(out[1], ones(1.06 + 1000.0))
    # step 2: accumulated change 11.7% > 10%: every block runs again, exactly
    torch.testing.assert_close(out[2], ones(1.12 + 800.0))
    assert model.calls == [2, 2, 2]
    stats = cache_stats(model)["default"]
    assert (stats.full_steps, stats.reuse_steps) == (6, 3)


def test_first_block_cache_skips_the_tail_while_block_zero_barely_changes():
    weights = [1.0, 10.0, 100.0]
    model = DummyTransformer(weights)
    apply_cache(model, FirstBlockCache(tol=0.12, warmup=1))
    times = [10.0, 9.5, 9.0, 5.0]  # block 0's residual changes by 5%, 5.3%, 44%
    out = run(model, [ones(0.0)] * 4, times)
    assert model.calls == [4, 2, 2]
    # reuse steps: block 0 is fresh, the tail adds its residual from t = 10
    torch.testing.assert_close(out[1], ones(9.5 + 110.0 * 10))
    torch.testing.assert_close(out[2], ones(9.0 + 110.0 * 10))
    torch.testing.assert_close(out[3], ones(111.0 * 5))


def test_sortblock_recomputes_the_fastest_block_and_extrapolates_the_rest_exactly():
    # residual t + offset: relative change per unit time 1 / (t + offset), fastest for 0
    model = DummyTransformer([1.0] * 4, offsets=[100.0, 0.0, 50.0, 1000.0])
    apply_cache(model, Sortblock(fraction=0.25, refresh=6, warmup=2))
    times = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    out = run(model, [ones(0.0)] * len(times), times)
    assert model.calls == [3, 7, 3, 3]  # block 1 always; the others at steps 0, 1, 6
    for t, value in zip(times, out):  # linear residuals: the prediction is exact
        torch.testing.assert_close(value, ones(4 * t + 1150.0))


def test_profiling_dit_runs_profiled_blocks_always_and_caches_the_others():
    model = DummyTransformer([1.0, 10.0, 100.0])
    recorder = BlockRecorder()
    apply_cache(model, recorder)
    run(model, [ones(0.0)] * 3, [10.0, 9.0, 8.0])
    remove_cache(model)
    scores = recorder.scores()
    assert scores == pytest.approx([(1 / 10 + 1 / 9) / 2] * 3)  # same relative change for all
    model = DummyTransformer([1.0, 10.0, 100.0])
    apply_cache(model, ProfilingDiT(always=(1,), interval=3, warmup=1))
    out = run(model, [ones(0.0)] * 4, [10.0, 9.0, 8.0, 7.0])
    assert model.calls == [2, 4, 2]
    torch.testing.assert_close(out[2], ones(101.0 * 10 + 10.0 * 8))
    torch.testing.assert_close(out[3], ones(111.0 * 7))


def test_block_stack_skips_every_block_and_forecasts_the_stack_residual():
    times = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0]
    model = DummyTransformer([1.0, 10.0, 100.0])
    apply_cache(model, BlockStack(FORA(interval=3)))
    out = run(model, [ones(0.5)] * 6, times)
    assert model.calls == [2, 2, 2]
    torch.testing.assert_close(out[2], ones(0.5 + 111.0 * 10))  # stale residual of t = 10
    torch.testing.assert_close(out[4], ones(0.5 + 111.0 * 7))
    model = DummyTransformer([1.0, 10.0, 100.0])
    apply_cache(model, BlockStack(ABCache(order=2, interval=3)))
    out = run(model, [ones(0.5)] * 6, times)
    assert model.calls == [2, 2, 2]
    torch.testing.assert_close(out[5], ones(0.5 + 111.0 * 5))  # linear residual: exact


def test_block_stack_with_a_method_calibrated_on_recorded_stack_residuals():
    times = [10.0, 9.0, 8.0, 7.0]
    model = DummyTransformer([1.0, 10.0])
    recorder = BlockRecorder()
    apply_cache(model, recorder)
    reference = run(model, [ones(0.5)] * 4, times)
    remove_cache(model)
    assert recorder.times == times
    torch.testing.assert_close(recorder.residuals[1], ones(11.0 * 9))
    method = ERTACache.calibrate(recorder.residuals, recorder.times, tol=1e-9)
    assert method.mask == (True, False, False, False)  # a gain per step makes t * 11 exact
    apply_cache(model, BlockStack(method))
    for a, b in zip(run(model, [ones(0.5)] * 4, times), reference):
        torch.testing.assert_close(a, b)
    assert model.calls == [5, 5]


def test_state_is_kept_per_context_and_reset_between_generations():
    def generate(model, context, shift):
        with CacheMixin.cache_context(model, context):
            return run(model, [ones(shift)] * 4, [10.0, 9.0, 8.0, 7.0])

    alone = {}
    for context, shift in (("cond", 1.0), ("uncond", -1.0)):
        model = DummyTransformer([1.0, 2.0])
        apply_cache(model, FORA(interval=2))
        alone[context] = generate(model, context, shift)
    model = DummyTransformer([1.0, 2.0])
    apply_cache(model, FORA(interval=2))
    interleaved = {"cond": [], "uncond": []}
    for t in [10.0, 9.0, 8.0, 7.0]:
        for context, shift in (("cond", 1.0), ("uncond", -1.0)):
            with CacheMixin.cache_context(model, context):
                interleaved[context] += run(model, [ones(shift)], [t])
    for context in alone:
        for a, b in zip(alone[context], interleaved[context]):
            assert torch.equal(a, b)
    assert set(cache_stats(model)) == {"cond", "uncond"}
    # a new generation (the timestep rises) starts from scratch, in each context
    again = generate(model, "cond", 1.0)
    assert all(torch.equal(a, b) for a, b in zip(again, alone["cond"]))
    reset_cache(model)
    assert all(torch.equal(a, b) for a, b in zip(generate(model, "cond", 1.0), alone["cond"]))


def test_repeated_timestep_runs_in_full_without_touching_the_cache():
    model = DummyTransformer([1.0, 2.0])
    apply_cache(model, FORA(interval=3))
    first = run(model, [ones(0.0)] * 2, [10.0, 10.0])
    assert torch.equal(first[0], first[1])
    assert cache_stats(model)["default"].full_steps == 1
    assert model.calls == [2, 2]


def tiny_dit(out_channels=1, num_embeds=10):
    return diffusers.DiTTransformer2DModel(
        in_channels=1,
        out_channels=out_channels,
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=3,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=num_embeds,
        patch_size=2,
        sample_size=4,
    ).eval()


def tiny_pixart():
    model = diffusers.PixArtTransformer2DModel(
        sample_size=4,
        num_layers=2,
        patch_size=2,
        attention_head_dim=4,
        num_attention_heads=2,
        caption_channels=8,
        in_channels=1,
        cross_attention_dim=8,
        out_channels=1,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
    ).eval()
    text = torch.randn(4, 3, 8)
    return model, dict(
        encoder_hidden_states=text, added_cond_kwargs={"resolution": None, "aspect_ratio": None}
    )


def tiny_sd3():
    model = diffusers.SD3Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=1,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        caption_projection_dim=8,
        joint_attention_dim=8,
        pooled_projection_dim=8,
        out_channels=1,
    ).eval()
    return model, dict(
        encoder_hidden_states=torch.randn(4, 3, 8), pooled_projections=torch.randn(4, 8)
    )


def tiny_flux():
    model = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=8,
        axes_dims_rope=[2, 2, 4],
    ).eval()
    extra = dict(
        encoder_hidden_states=torch.randn(4, 3, 8),
        pooled_projections=torch.randn(4, 8),
        img_ids=torch.zeros(4, 3),
        txt_ids=torch.zeros(3, 3),
    )
    return model, extra


def tiny_models():
    dit = tiny_dit()
    return {
        "dit": (dit, dict(class_labels=torch.tensor([1, 2, 10, 10])), (4, 1, 4, 4), 1),
        "pixart": (*tiny_pixart(), (4, 1, 4, 4), 1),
        "sd3": (*tiny_sd3(), (4, 1, 4, 4), 1),
        "flux": (*tiny_flux(), (4, 4, 4), 1e-3),
    }


EXACT = [
    FORA(interval=1),
    BWCache(max_reuse=0),
    FirstBlockCache(max_reuse=0),
    Sortblock(fraction=1.0),
    CFGCache(interval=1),
]
CACHING = [TaylorSeer(order=1, interval=2), BWCache(tol=0.5), FirstBlockCache(tol=0.5)]


def trajectory(model, extra, shape, scale):
    torch.manual_seed(3)
    x = torch.randn(shape)
    times = [900.0, 800.0, 700.0, 600.0]
    with torch.no_grad():
        return [
            model(x * t / 1000, timestep=torch.full((shape[0],), t * scale), **extra).sample
            for t in times
        ]


@pytest.mark.parametrize("name", ["dit", "pixart", "sd3", "flux"])
def test_real_transformers_exact_when_computing_all_and_restored_after_removal(name):
    model, extra, shape, scale = tiny_models()[name]
    reference = trajectory(model, extra, shape, scale)
    for config in EXACT:
        apply_cache(model, config)
        out = trajectory(model, extra, shape, scale)
        assert all(torch.equal(a, b) for a, b in zip(out, reference)), config
        assert cache_stats(model)["default"].reuse_steps == 0
        remove_cache(model)
    for config in CACHING:
        apply_cache(model, config)
        out = trajectory(model, extra, shape, scale)
        assert cache_stats(model)["default"].reuse_steps > 0, config
        assert all(a.shape == b.shape and torch.isfinite(a).all() for a, b in zip(out, reference))
        remove_cache(model)
    after = trajectory(model, extra, shape, scale)
    assert all(torch.equal(a, b) for a, b in zip(after, reference))
    assert not any(
        hasattr(block, "_diffusers_hook") and block._diffusers_hook.hooks
        for _, block in find_blocks(model)
    )


def test_cfg_cache_on_a_batched_transformer_runs_the_conditional_half_only():
    model = tiny_dit()
    labels = torch.tensor([10, 10, 3, 4])  # [uncond, cond]
    seen = []
    model.pos_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    apply_cache(model, CFGCache(interval=2))
    x = torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        outs = [model(x, timestep=torch.full((4,), t), class_labels=labels).sample for t in (9, 8)]
    assert seen == [4, 2]
    uncond_minus_cond = outs[0][:2] - outs[0][2:]
    torch.testing.assert_close(outs[1][:2], outs[1][2:] + uncond_minus_cond)


def test_recorder_on_a_transformer_and_error_messages():
    model = tiny_dit()
    recorder = Recorder()
    apply_cache(model, recorder)
    with pytest.raises(ValueError, match="already has a cache"):
        apply_cache(model, FORA())
    with torch.no_grad():
        model(
            torch.randn(2, 1, 4, 4),
            timestep=torch.tensor([5, 5]),
            class_labels=torch.tensor([1, 2]),
        )
    assert recorder.times == [5.0] and recorder.outputs[0].shape == (2, 1, 4, 4)
    remove_cache(model)
    with pytest.raises(TypeError, match=r"integrators\.methods"):
        apply_cache(model, object())
    with pytest.raises(ValueError, match="no blocks"):
        apply_cache(nn.Linear(2, 2), BWCache())


def test_inside_a_diffusers_pipeline():
    transformer = diffusers.DiTTransformer2DModel(
        in_channels=4,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=4,
        num_layers=2,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=1000,
        patch_size=2,
        sample_size=4,
    ).eval()
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, sample_size=8)
    pipe = diffusers.DiTPipeline(transformer, vae.eval(), diffusers.DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def generate():
        generator = torch.Generator().manual_seed(0)
        return pipe([1, 2], num_inference_steps=6, generator=generator, output_type="pt").images

    reference = generate()
    apply_cache(transformer, FORA(interval=1))
    assert torch.equal(generate(), reference)
    remove_cache(transformer)
    for config in (FORA(interval=2), CFGCache(interval=2, uncond_first=False), Sortblock(0.5)):
        apply_cache(transformer, config)
        first, second = generate(), generate()
        assert torch.equal(first, second)  # nothing leaks from one generation to the next
        assert not torch.equal(first, reference)
        assert cache_stats(transformer)["default"].reuse_steps > 0
        remove_cache(transformer)
    assert torch.equal(generate(), reference)
