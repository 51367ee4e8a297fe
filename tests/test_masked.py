import math

import pytest
import torch

from integrators.digits.tokens import (
    MaskedTokenModel,
    TokenRecipe,
    detokenise,
    load_masked_model,
    tokenise,
)
from integrators.masked import MaskGIT, masked_counts
from integrators.schedules import Periodic


def tiny_model(dtype=torch.float64):
    torch.manual_seed(0)
    return MaskedTokenModel(TokenRecipe(width=16, layers=2, heads=2)).to(dtype).eval()


def test_masked_counts_follow_the_cosine_schedule_and_decode_every_step():
    for positions, steps in ((256, 16), (256, 4), (10, 10), (7, 1)):
        counts = masked_counts(positions, steps)
        assert len(counts) == steps and counts[-1] == 0
        assert all(a > b for a, b in zip([positions, *counts], counts, strict=False))
    targets = [math.floor(256 * math.cos(math.pi / 2 * (t + 1) / 16)) for t in range(16)]
    assert masked_counts(256, 16) == targets
    with pytest.raises(ValueError, match="steps <= positions"):
        masked_counts(3, 4)


def test_tokens_round_trip_to_level_centres():
    images = torch.linspace(-1, 1, 256).view(1, 1, 16, 16)
    tokens = tokenise(images, levels=4)
    assert tokens.min() == 0 and tokens.max() == 3
    assert (detokenise(tokens, levels=4) - images).abs().max() <= 1 / 4 + 1e-6


def test_partial_pass_equals_full_pass_when_the_context_is_unchanged():
    model = tiny_model()
    tokens = torch.randint(0, model.mask_id + 1, (3, 256))
    labels = torch.tensor([0, 4, 9])
    positions = torch.stack([torch.randperm(256)[:12] for _ in range(3)])
    with torch.no_grad():
        logits, cache = model.full(tokens, labels)
        stale = [(k.clone().zero_(), v.clone().zero_()) for k, v in cache]
        for (k, v), (k0, v0) in zip(stale, cache, strict=True):  # all but `positions` kept
            k.copy_(k0), v.copy_(v0)
            rows = torch.arange(3)[:, None]
            k[rows, :, positions + 1] = 0.0
            v[rows, :, positions + 1] = 0.0
        partial = model.partial(tokens, labels, positions, stale)
    expected = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
    assert torch.allclose(partial, expected, atol=1e-12)
    for (k, v), (k0, v0) in zip(stale, cache, strict=True):  # the cache was refreshed there
        assert torch.allclose(k, k0, atol=1e-12) and torch.allclose(v, v0, atol=1e-12)


@pytest.mark.parametrize("every", [1, 2, 5, 100])
def test_maskgit_decodes_every_position_on_schedule(every):
    model, steps = tiny_model(torch.float32), 8
    sampler = MaskGIT(steps)
    with torch.no_grad():
        tokens = sampler.sample(
            model, torch.tensor([1, 2, 3]), 256, Periodic(every), torch.Generator().manual_seed(0)
        )
    assert bool((tokens >= 0).all() and (tokens < model.mask_id).all())
    full = math.ceil(steps / every)
    assert (sampler.stats.full_steps, sampler.stats.cheap_steps) == (full, steps - full)
    decoded = [256 - c for c in masked_counts(256, steps)]
    per_step = [b - a for a, b in zip([0, *decoded], decoded, strict=False)]
    cheap_tokens = sum(per_step[t - 1] + per_step[t] for t in range(steps) if t % every != 0)
    expected = (full * 256 + cheap_tokens) / (256 * steps)
    assert sampler.stats.token_fraction == pytest.approx(expected)


def test_same_seed_same_samples_and_cheap_steps_differ_from_full_ones():
    model = tiny_model(torch.float32)
    labels = torch.tensor([5, 6])

    def run(every):
        with torch.no_grad():
            return MaskGIT(8).sample(
                model, labels, 256, Periodic(every), torch.Generator().manual_seed(3)
            )

    assert torch.equal(run(1), run(1))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(1), run(3))


def test_missing_masked_model_names_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"integrators\.digits\.train_tokens"):
        load_masked_model(tmp_path)


def test_training_command_writes_a_model_that_loads_back(tmp_path):
    from integrators.digits.train_tokens import main

    metadata = main(
        [
            "--steps",
            "3",
            "--width",
            "16",
            "--layers",
            "1",
            "--eval-samples",
            "4",
            "--out",
            str(tmp_path / "masked"),
        ]
    )
    assert metadata["steps_done"] == 3 and 0 <= metadata["sample_accuracy"] <= 1
    model = load_masked_model(tmp_path / "masked")
    assert model.recipe.width == 16 and not model.training
