"""Low-resolution reuse on diffusers UNets: DeepCache and Clockwork's distilled adaptor."""

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import UNet2DConditionModel

from integrators import Profiled
from integrators.diffusers import apply_cache, cache_stats, remove_cache
from integrators.digits.unet import UNetRecipe, load_unet
from integrators.methods import (
    AdaptorRecipe,
    Clockwork,
    ClockworkAdaptor,
    DeepCache,
    LowResFeatures,
    LowResRecorder,
    distill,
)
from integrators.methods.adaptor import load_adaptor, save_adaptor, unet_fingerprint
from integrators.unet import inner_levels

TIMES = (900, 700, 500, 300)


def small_unet(seed=0):
    torch.manual_seed(seed)
    return UNetRecipe(channels=(8, 16, 16), attention_head_dim=8, norm_groups=4).build().eval()


def small_conditional_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=4,
    ).eval()


def unet_inputs():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 16, 16, generator=generator)
    return x, dict(class_labels=torch.tensor([1, 4, 10]))


def conditional_inputs():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 8, 8, generator=generator)
    return x, dict(encoder_hidden_states=torch.randn(2, 5, 8, generator=generator))


def trajectory(unet, x, kwargs, times=TIMES):
    """The model's outputs along fixed inputs at decreasing timesteps."""
    with torch.no_grad():
        return [unet(x, timestep=torch.tensor(t), **kwargs).sample for t in times]


def substituted(unet, x, kwargs, replace_at, source_at, predict=None, depth=1):
    """Output at ``replace_at`` with the inner levels' output taken from ``source_at``.

    An independent reference built from plain torch forward hooks: the exit block's
    output at ``source_at`` (optionally mapped by ``predict(stored, entry, embedding)``)
    replaces its output at ``replace_at``; everything else runs normally.
    """
    levels = inner_levels(unet, depth)
    stored = {}

    def grab_entry(module, args, kwargs_, output):
        stored["entry"], stored["embedding"] = output[0], kwargs_.get("temb")

    def grab_exit(module, args, output):
        stored["exit"] = output

    handles = [
        levels.entry.register_forward_hook(grab_entry, with_kwargs=True),
        levels.exit.register_forward_hook(grab_exit),
    ]
    with torch.no_grad():
        unet(x, timestep=torch.tensor(source_at), **kwargs)
        for handle in handles:
            handle.remove()
        source = dict(stored)
        handles = [levels.entry.register_forward_hook(grab_entry, with_kwargs=True)]

        def replace(module, args, output):
            if predict is None:
                return source["exit"]
            return predict(source, stored["entry"], stored["embedding"])

        handles.append(levels.exit.register_forward_hook(replace))
        out = unet(x, timestep=torch.tensor(replace_at), **kwargs).sample
        for handle in handles:
            handle.remove()
    return out


@pytest.mark.parametrize(
    "make, inputs", [(small_unet, unet_inputs), (small_conditional_unet, conditional_inputs)]
)
def test_every_step_full_equals_the_uncached_unet(make, inputs):
    unet, (x, kwargs) = make(), inputs()
    plain = trajectory(unet, x, kwargs)
    apply_cache(unet, DeepCache(interval=1))
    cached = trajectory(unet, x, kwargs)
    assert cache_stats(unet)["default"].full_steps == len(TIMES)
    remove_cache(unet)
    assert all(torch.equal(a, b) for a, b in zip(plain, cached))
    assert torch.equal(trajectory(unet, x, kwargs)[0], plain[0])  # hooks are gone


@pytest.mark.parametrize(
    "make, inputs", [(small_unet, unet_inputs), (small_conditional_unet, conditional_inputs)]
)
def test_cheap_step_runs_the_outer_levels_on_the_last_inner_output(make, inputs):
    unet, (x, kwargs) = make(), inputs()
    plain = trajectory(unet, x, kwargs)
    apply_cache(unet, DeepCache(interval=2))
    cached = trajectory(unet, x, kwargs)
    stats = cache_stats(unet)["default"]
    remove_cache(unet)
    assert (stats.full_steps, stats.reuse_steps) == (2, 2)
    assert torch.equal(cached[0], plain[0]) and torch.equal(cached[2], plain[2])
    assert torch.equal(cached[1], substituted(unet, x, kwargs, TIMES[1], TIMES[0]))
    assert torch.equal(cached[3], substituted(unet, x, kwargs, TIMES[3], TIMES[2]))
    assert not torch.allclose(cached[1], plain[1])


def test_deeper_split_keeps_two_outer_levels_running():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    levels = inner_levels(unet, 2)
    assert levels.entry is unet.down_blocks[1] and levels.exit is unet.up_blocks[0]
    assert levels.skipped == (unet.down_blocks[2], unet.mid_block)
    apply_cache(unet, DeepCache(interval=2, depth=2))
    cached = trajectory(unet, x, kwargs)
    remove_cache(unet)
    expected = substituted(unet, x, kwargs, TIMES[1], TIMES[0], depth=2)
    assert torch.equal(cached[1], expected)
    assert not torch.equal(cached[1], substituted(unet, x, kwargs, TIMES[1], TIMES[0]))


def test_untrained_adaptor_is_plain_reuse_and_a_trained_one_is_used_as_is():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    apply_cache(unet, DeepCache(interval=2))
    reused = trajectory(unet, x, kwargs)
    remove_cache(unet)
    adaptor = ClockworkAdaptor(AdaptorRecipe.for_unet(unet, width=8))
    apply_cache(unet, Clockwork(adaptor, interval=2))
    assert all(torch.equal(a, b) for a, b in zip(reused, trajectory(unet, x, kwargs)))
    remove_cache(unet)

    torch.nn.init.normal_(adaptor.out.weight, std=0.1)
    apply_cache(unet, Clockwork(adaptor, interval=2))
    adapted = trajectory(unet, x, kwargs)
    remove_cache(unet)

    def predict(source, entry, embedding):
        return adaptor(source["exit"], entry, source["entry"], embedding, source["embedding"])

    expected = substituted(unet, x, kwargs, TIMES[1], TIMES[0], predict)
    assert torch.equal(adapted[1], expected) and not torch.allclose(adapted[1], reused[1])


def test_a_core_schedule_decides_the_full_steps_of_each_generation():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    plain = trajectory(unet, x, kwargs)
    mask = Profiled([True, False, False, True])
    apply_cache(unet, DeepCache(schedule=mask))
    for _ in range(2):  # a fresh copy of the schedule per generation
        cached = trajectory(unet, x, kwargs)
        stats = cache_stats(unet)["default"]
        assert (stats.full_steps, stats.reuse_steps) == (2, 2)
        assert torch.equal(cached[3], plain[3]) and not torch.allclose(cached[2], plain[2])
    remove_cache(unet)
    with pytest.raises(TypeError, match=r"integrators\.schedules"):
        Clockwork(ClockworkAdaptor(AdaptorRecipe(1, 1, 1)), schedule=[True, False])


def test_a_rising_timestep_starts_a_new_generation_with_a_full_step():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    plain = trajectory(unet, x, kwargs)
    apply_cache(unet, DeepCache(interval=3))
    trajectory(unet, x, kwargs)
    again = trajectory(unet, x, kwargs)
    remove_cache(unet)
    assert torch.equal(again[0], plain[0])


def test_recorder_keeps_one_full_trajectory_per_generation():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    recorder = LowResRecorder()
    apply_cache(unet, recorder)
    trajectory(unet, x, kwargs)
    trajectory(unet, x, kwargs)
    remove_cache(unet)
    assert [len(steps) for steps in recorder.trajectories] == [len(TIMES), len(TIMES)]
    first = recorder.trajectories[0][0]
    assert [step.t for step in recorder.trajectories[1]] == list(map(float, TIMES))
    assert first.entry.shape == (3, 8, 8, 8) and first.exit.shape == (3, 16, 16, 16)
    assert first.embedding.shape == (3, 32) and not first.exit.requires_grad


def synthetic_trajectories(count, steps=8, seed=0):
    """Features whose exit moves with the entry: exit_j - exit_i = up(W (entry_j - entry_i))."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(4, 2, generator=generator)
    trajectories = []
    for _ in range(count):
        entry = torch.randn(4, 2, 4, 4, generator=generator)
        exit_ = torch.randn(4, 4, 8, 8, generator=generator)
        embedding = torch.randn(4, 6, generator=generator)
        steps_ = []
        for i in range(steps):
            step = torch.randn(4, 2, 4, 4, generator=generator)
            change = torch.einsum("oc,bchw->bohw", mixing, step)
            entry, exit_ = (
                entry + step,
                exit_ + change.repeat_interleave(2, 2).repeat_interleave(2, 3),
            )
            steps_.append(LowResFeatures(float(1000 - 100 * i), entry, embedding, exit_))
        trajectories.append(steps_)
    return trajectories


def test_distillation_learns_what_plain_reuse_misses_on_held_out_generations():
    torch.manual_seed(0)
    adaptor = ClockworkAdaptor(
        AdaptorRecipe(entry_channels=2, exit_channels=4, embedding_dim=6, width=16)
    )
    log = distill(adaptor, synthetic_trajectories(6), max_gap=2, steps=400, batch_size=32, lr=3e-3)
    assert log["relative_error"] < 0.3 * log["reuse_relative_error"]
    assert log["held_out_generations"] == 1 and not adaptor.training
    with pytest.raises(ValueError, match="at least two"):
        distill(adaptor, synthetic_trajectories(1), max_gap=1)


def test_adaptor_files_round_trip_and_refuse_another_unet(tmp_path):
    unet = small_unet()
    adaptor = ClockworkAdaptor(AdaptorRecipe.for_unet(unet, width=8))
    torch.nn.init.normal_(adaptor.out.weight)
    save_adaptor(adaptor, tmp_path, unet, {"note": "test"})
    loaded = load_adaptor(tmp_path, unet)
    assert loaded.recipe == adaptor.recipe
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), adaptor.state_dict().values())
    )
    with pytest.raises(ValueError, match="distilled for another UNet"):
        load_adaptor(tmp_path, small_unet(seed=1))
    with pytest.raises(FileNotFoundError, match="distill_clockwork"):
        load_adaptor(tmp_path / "missing")


def test_fingerprint_does_not_depend_on_the_folder_a_unet_was_loaded_from(tmp_path):
    unet = small_unet()
    for name in ("a", "b"):
        unet.save_pretrained(tmp_path / name, safe_serialization=True)
    first, second = (load_unet(tmp_path / name) for name in ("a", "b"))
    assert unet_fingerprint(first) == unet_fingerprint(second) == unet_fingerprint(unet)


def test_an_adaptor_for_other_shapes_is_refused_with_the_fix():
    unet, (x, kwargs) = small_unet(), unet_inputs()
    adaptor = ClockworkAdaptor(AdaptorRecipe(entry_channels=4, exit_channels=16, embedding_dim=32))
    apply_cache(unet, Clockwork(adaptor, interval=2))
    with pytest.raises(ValueError, match="distill one for it"):
        trajectory(unet, x, kwargs)
    remove_cache(unet)


def test_models_that_cannot_be_split_are_refused():
    unet = small_unet()
    with pytest.raises(ValueError, match="depth must be between 1 and 2"):
        apply_cache(unet, DeepCache(depth=3))
    with pytest.raises(ValueError, match="no down_blocks/up_blocks"):
        apply_cache(torch.nn.Linear(2, 2), DeepCache())
    with pytest.raises(ValueError, match="interval"):
        DeepCache(interval=0)
    with pytest.raises(TypeError, match="ClockworkAdaptor"):
        Clockwork(torch.nn.Linear(2, 2))


def test_missing_unet_names_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"integrators\.digits\.train_unet"):
        load_unet(tmp_path)


def test_training_and_distillation_commands_write_models_that_load_back(tmp_path):
    from integrators.digits.distill_clockwork import main as distill_main
    from integrators.digits.train_unet import main as train_main

    small = ["--channels", "8", "16", "16"]
    metadata = train_main(["--steps", "2", "--eval-samples", "2", "--out", str(tmp_path), *small])
    assert metadata["steps_done"] == 2 and 0 <= metadata["sample_accuracy"] <= 1
    unet = load_unet(tmp_path / "digits_unet")
    with pytest.raises(SystemExit, match="--force"):
        train_main(["--out", str(tmp_path), *small])
    options = ["--unet", str(tmp_path / "digits_unet"), "--out", str(tmp_path / "cw")]
    quick = ["--generations", "2", "--batch", "2", "--sampler-steps", "4", "--distill-steps", "3"]
    log = distill_main([*options, *quick, "--width", "8"])
    assert log["max_gap"] == 3 and log["relative_error"] > 0
    assert load_adaptor(tmp_path / "cw", unet).recipe.width == 8
    with pytest.raises(SystemExit, match="--force"):
        distill_main([*options, *quick])
