import math

import pytest
import torch

from integrators import Periodic, Reuse, Threshold
from integrators.methods import (
    FORA,
    ABCache,
    BWCache,
    CFGCache,
    ERTACache,
    HyCa,
    OutputCache,
    TaylorSeer,
    TeaCache,
)
from integrators.samplers import (
    DDIM,
    DPMSolverPP2M,
    FlowEuler,
    Recorder,
    flow_timesteps,
    linear_alphas_cumprod,
    spaced_timesteps,
)

ALPHAS = linear_alphas_cumprod()
DATA_STD = 0.5  # data ~ N(0, DATA_STD^2): the optimal models are linear and known


def gaussian_noise_model(x, t, cond):
    a = float(ALPHAS[int(t)])
    return math.sqrt(1 - a) * x / (a * DATA_STD**2 + 1 - a)


def gaussian_velocity_model(x, t, cond):
    variance = (1 - t) ** 2 * DATA_STD**2 + t**2
    return (t - (1 - t) * DATA_STD**2) * x / variance


def noise_scale_error(sampler, steps):
    """Relative error of the map x_T -> x_0, against the exact ODE map (a scaling)."""
    x_T = torch.ones(1, dtype=torch.float64)
    a_T = float(ALPHAS[999])
    exact = DATA_STD / math.sqrt(a_T * DATA_STD**2 + 1 - a_T)
    scale = sampler.sample(gaussian_noise_model, x_T, spaced_timesteps(steps)).item()
    return abs(scale / exact - 1)


def test_ddim_and_dpm_solver_follow_the_probability_flow():
    ddim = [noise_scale_error(DDIM(ALPHAS), n) for n in (50, 200)]
    assert ddim[0] < 0.07 and ddim[1] < ddim[0] / 3  # first order: 4x steps, 4x smaller
    assert noise_scale_error(DPMSolverPP2M(ALPHAS), 50) < 0.002
    # second order beats first order at few steps
    assert noise_scale_error(DPMSolverPP2M(ALPHAS), 10) < noise_scale_error(DDIM(ALPHAS), 10)


def test_flow_euler_follows_the_flow():
    x_T = torch.ones(1, dtype=torch.float64)
    coarse = FlowEuler().sample(gaussian_velocity_model, x_T, flow_timesteps(10)).item()
    fine = FlowEuler().sample(gaussian_velocity_model, x_T, flow_timesteps(100)).item()
    assert abs(fine - DATA_STD) < abs(coarse - DATA_STD) / 5 < 0.02


def test_point_mass_is_recovered_exactly(dtype):
    clean = torch.tensor([0.3, -0.7], dtype=dtype)

    def noise(x, t, cond):
        a = float(ALPHAS[int(t)])
        return (x - math.sqrt(a) * clean) / math.sqrt(1 - a)

    for sampler in (DDIM(ALPHAS), DPMSolverPP2M(ALPHAS)):
        out = sampler.sample(noise, torch.randn(2, dtype=dtype), spaced_timesteps(7))
        torch.testing.assert_close(out, clean)


class CountingModel:
    """Nonlinear in x, depends on t and on the conditioning; records batch sizes."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, t, cond):
        self.batches.append(x.shape[0])
        return torch.tanh(x) * (1 + t / 1000) + 0.1 * cond.view(-1, 1)


def sample_all(sampler_and_times, cache, **kwargs):
    sampler, times = sampler_and_times
    x_T = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    model = CountingModel()
    out = sampler.sample(model, x_T, times, cache=cache, **kwargs)
    return out, model, sampler.stats


SAMPLERS = {
    "ddim": lambda: (DDIM(ALPHAS), spaced_timesteps(12)),
    "dpm": lambda: (DPMSolverPP2M(ALPHAS), spaced_timesteps(12)),
    "euler": lambda: (FlowEuler(), flow_timesteps(12)),
}
GUIDANCE = dict(cond=torch.tensor([1.0, 2.0, 3.0]), uncond=torch.zeros(3), guidance_scale=4.0)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize(
    "cache",
    [
        OutputCache(Periodic(1), Reuse()),
        FORA(interval=1),
        ABCache(order=3, interval=1),
        TaylorSeer(order=2, interval=1),
        TeaCache(threshold=0.1, max_reuse=0),
        CFGCache(interval=1),
    ],
    ids=lambda c: type(c).__name__,
)
def test_computing_every_step_is_bit_identical_to_no_cache(sampler, cache):
    plain, plain_model, _ = sample_all(SAMPLERS[sampler](), None, **GUIDANCE)
    cached, model, stats = sample_all(SAMPLERS[sampler](), cache, **GUIDANCE)
    assert torch.equal(cached, plain)
    assert model.batches == plain_model.batches == [6] * 12  # one batched CFG call per step
    assert stats.full_steps == 12 and stats.reuse_steps == 0


def test_guidance_combines_branches_and_scale_one_runs_cond_only():
    model = CountingModel()
    x = torch.randn(3, 4)
    out = FlowEuler().sample(model, x, [0.5], **GUIDANCE)
    cond = torch.tanh(x) * (1 + 0.5 / 1000) + 0.1 * GUIDANCE["cond"].view(-1, 1)
    uncond = torch.tanh(x) * (1 + 0.5 / 1000)
    torch.testing.assert_close(out, x - 0.5 * (uncond + 4.0 * (cond - uncond)))
    model = CountingModel()
    FlowEuler().sample(model, x, [0.5], cond=GUIDANCE["cond"], uncond=torch.zeros(3))
    assert model.batches == [3]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_forecasting_methods_are_exact_on_polynomial_outputs(order):
    def polynomial(x, t, cond):  # output of degree `order` in t, whatever x is
        return torch.full_like(x, 0.3) + sum((t / 1000) ** k * (k + 1) for k in range(1, 1 + order))

    x_T, times = torch.zeros(2, dtype=torch.float64), spaced_timesteps(20)
    exact = DDIM(ALPHAS).sample(polynomial, x_T, times)
    for method in (
        ABCache(order=order + 1, interval=3, warmup=order + 1),
        TaylorSeer(order=order, interval=3, warmup=order + 1),
    ):
        sampler = DDIM(ALPHAS)
        cached = sampler.sample(polynomial, x_T, times, cache=method)
        assert sampler.stats.reuse_steps >= 10
        torch.testing.assert_close(cached, exact, rtol=1e-9, atol=1e-9)
    # one order lower is not exact: the tests above are sharp
    sampler = DDIM(ALPHAS)
    low = sampler.sample(polynomial, x_T, times, cache=ABCache(order, interval=3, warmup=order))
    assert not torch.allclose(low, exact, rtol=1e-6, atol=1e-6)


def test_reuse_steps_make_no_model_calls():
    sampler, times = SAMPLERS["ddim"]()
    _, model, stats = sample_all((sampler, times), FORA(interval=4), **GUIDANCE)
    assert len(model.batches) == stats.full_steps == 3 and stats.reuse_steps == 9


def test_cfg_cache_skips_the_unconditional_pass_and_is_exact_for_a_constant_difference():
    def model(x, t, cond):  # uncond - cond = -cond: constant along the trajectory
        model.batches.append(x.shape[0])
        return torch.sin(x) * t / 1000 + cond.view(-1, 1)

    model.batches = []
    x_T, times = torch.randn(3, 2, dtype=torch.float64), spaced_timesteps(10)
    exact = DDIM(ALPHAS).sample(model, x_T, times, **GUIDANCE)
    model.batches = []
    sampler = DDIM(ALPHAS)
    cached = sampler.sample(model, x_T, times, cache=CFGCache(interval=3), **GUIDANCE)
    torch.testing.assert_close(cached, exact, rtol=1e-12, atol=1e-12)
    assert model.batches == [6, 3, 3] * 3 + [6]
    assert (sampler.stats.full_steps, sampler.stats.reuse_steps) == (4, 6)


def test_cfg_cache_frequency_weights_scale_the_difference():
    from integrators.methods.guidance import split_frequencies

    value = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    low, high = split_frequencies(value, radius=0.3)
    torch.testing.assert_close(low + high, value)
    assert low.abs().sum() > 0 and high.abs().sum() > 0
    runtime = CFGCache(low_weight=2.0, high_weight=0.0, radius=0.3).make_runtime()
    runtime.record(1.0, value, torch.zeros_like(value))
    torch.testing.assert_close(runtime.rebuild(0.5, torch.zeros_like(value)), 2 * low)


def test_ertacache_gains_make_a_scaled_trajectory_exact():
    direction = torch.randn(2, 3, dtype=torch.float64)

    def model(x, t, cond):  # the output only changes scale: one gain per step is exact
        return direction * (1 + t / 1000)

    recorder = Recorder()
    x_T, times = torch.zeros(2, 3, dtype=torch.float64), spaced_timesteps(10)
    exact = DDIM(ALPHAS).sample(model, x_T, times, cache=recorder)
    method = ERTACache.calibrate(recorder.outputs, recorder.times, tol=1e-9)
    assert method.mask == (True,) + (False,) * 9
    sampler = DDIM(ALPHAS)
    torch.testing.assert_close(sampler.sample(model, x_T, times, cache=method), exact)
    limited = ERTACache.calibrate(recorder.outputs, recorder.times, tol=1e-9, max_reuse=2)
    assert limited.mask == (True, False, False) * 3 + (True,)
    with pytest.raises(ValueError, match="no gains for timestep"):
        DDIM(ALPHAS).sample(model, x_T, spaced_timesteps(10, 900), cache=method)


def test_hyca_assigns_each_dimension_its_exact_predictor():
    def model(x, t, cond):  # dimension 0 linear in t, dimension 1 quadratic, 2 constant
        s = t / 1000
        return torch.stack([torch.full_like(x[:, 0], s), x[:, 1] * 0 + s * s, x[:, 2] * 0 + 1], 1)

    recorder = Recorder()
    x_T, times = torch.zeros(4, 3, dtype=torch.float64), spaced_timesteps(16)
    exact = DDIM(ALPHAS).sample(model, x_T, times, cache=recorder)
    method = HyCa.calibrate(
        recorder.outputs, recorder.times, interval=3, warmup=3, candidates=("reuse", "ab2", "ab3")
    )
    assert method.assignment.tolist() == [1, 2, 0]
    assert "reuse: 33%" in repr(method)
    cached = DDIM(ALPHAS).sample(model, x_T, times, cache=method)
    torch.testing.assert_close(cached, exact, rtol=1e-9, atol=1e-9)


def test_teacache_threshold_counts_accumulated_input_change():
    x_T, times = torch.ones(2, dtype=torch.float64), flow_timesteps(10)
    model = lambda x, t, c: -x  # noqa: E731 - x shrinks by a constant factor per step
    sampler = FlowEuler()
    sampler.sample(model, x_T, times, cache=TeaCache(threshold=0.0, warmup=1))
    assert sampler.stats.reuse_steps == 0
    sampler.sample(model, x_T, times, cache=TeaCache(threshold=10.0, max_reuse=2, warmup=1))
    assert (sampler.stats.full_steps, sampler.stats.reuse_steps) == (4, 6)
    recorder = Recorder()
    FlowEuler().sample(lambda x, t, c: -x * (1 + t), x_T, times, cache=recorder)
    assert len(TeaCache.fit_rescale(recorder.inputs, recorder.outputs, degree=1)) == 2


def test_no_state_leaks_between_calls():
    sampler, times = SAMPLERS["dpm"]()
    for method in (ABCache(2, interval=3), CFGCache(interval=2), TeaCache(0.05)):
        first, _, stats_first = sample_all((sampler, times), method, **GUIDANCE)
        second, _, stats_second = sample_all((sampler, times), method, **GUIDANCE)
        assert torch.equal(first, second)
        assert (stats_first.full_steps, stats_first.reuse_steps) == (
            stats_second.full_steps,
            stats_second.reuse_steps,
        )
    schedule = Threshold(0.1)
    OutputCache(schedule, Reuse()).make_cache(lambda x, t: x)(torch.ones(1), 1.0)
    assert not schedule._started  # the config's objects are copied, never used


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: FORA(0), r"FORA\(interval=\.\.\.\)"),
        (lambda: ABCache(order=0), r"ABCache\(order"),
        (lambda: TaylorSeer(warmup=-1), r"TaylorSeer\(warmup"),
        (lambda: CFGCache(predictor="cubic"), "unknown predictor"),
        (lambda: BWCache(warmup=-1), r"BWCache\(warmup"),
    ],
)
def test_configs_reject_bad_parameters_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_per_dimension_predictor_checks_its_assignment():
    from integrators import PerDimension

    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        PerDimension([Reuse(), Reuse()], torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integers"):
        PerDimension([Reuse()], torch.tensor([0.0]))
    with pytest.raises(TypeError, match="tensors"):
        PerDimension([Reuse()], torch.tensor([0])).update(0.0, (torch.ones(1),))


def test_rejects_block_methods_and_bad_timesteps():
    kwargs = dict(cond=torch.zeros(1))
    with pytest.raises(TypeError, match="apply_cache"):
        DDIM(ALPHAS).sample(CountingModel(), torch.zeros(1), [999], cache=BWCache(), **kwargs)
    with pytest.raises(ValueError, match="decrease strictly"):
        DDIM(ALPHAS).sample(CountingModel(), torch.zeros(1), [10, 20], **kwargs)
    with pytest.raises(ValueError, match="not an integer"):
        DDIM(ALPHAS).sample(CountingModel(), torch.zeros(1), [10.5], **kwargs)
