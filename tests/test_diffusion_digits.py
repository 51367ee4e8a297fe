import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from integrators.digits import (
    NULL_CLASS,
    DiTRecipe,
    denoiser,
    digits,
    frechet_distance,
    load_classifier,
    load_dit,
    psnr,
    ssim,
)
from integrators.digits.models import save_classifier
from integrators.digits.train import (
    TrainConfig,
    evaluate_samples,
    train_classifier,
    train_dit,
)


def test_metrics_order_images_by_distortion():
    images = (digits()[0][:16] + 1) / 2
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    slight, strong = images + 0.01 * noise, images + 0.1 * noise
    assert psnr(images, images) == math.inf
    assert psnr(slight, images) == pytest.approx(40, abs=0.5)
    assert psnr(slight, images) > psnr(strong, images)
    assert ssim(images, images) == 1.0 > ssim(slight, images) > ssim(strong, images)
    a = torch.randn(400, 4, generator=torch.Generator().manual_seed(1))
    b = torch.randn(400, 4, generator=torch.Generator().manual_seed(2))
    assert frechet_distance(a, b) < frechet_distance(a, b * 2 + 1)


def test_training_script_pieces_on_a_tiny_setting(tmp_path):
    images, labels = digits()
    classifier, accuracy = train_classifier(images[:200], labels[:200], epochs=1)
    assert 0.0 <= accuracy <= 1.0
    save_classifier(classifier, tmp_path / "classifier.safetensors", {"accuracy": accuracy})
    loaded = load_classifier(tmp_path / "classifier.safetensors")
    assert torch.equal(loaded(images[:4]), classifier(images[:4]))

    recipe = DiTRecipe(width=16, heads=2, layers=2)
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1, log_every=1)
    dit, log = train_dit(images, labels, recipe, config)
    assert log["steps_done"] == 3 and math.isfinite(log["final_loss"])
    dit.save_pretrained(tmp_path / "dit", safe_serialization=True)
    reloaded = load_dit(tmp_path / "dit")
    x, labels_in = torch.randn(2, 1, 16, 16), torch.tensor([3, NULL_CLASS])
    with torch.no_grad():
        assert torch.equal(denoiser(reloaded)(x, 500, labels_in), denoiser(dit)(x, 500, labels_in))
    assert 0.0 <= evaluate_samples(dit, classifier, samples=4, steps=2) <= 1.0


def test_missing_models_name_the_training_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"integrators\.digits\.train"):
        load_dit(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"integrators\.digits\.train"):
        load_classifier(tmp_path / "none.safetensors")
