import itertools
import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import zo
from zo.data import CIFAR10_FILES, crop_and_flip, load_cifar10
from zo.parallel import owners_by_cost
from zo.stages import model_stages, run_stages
from zo.train import TrainConfig, train, warmup_cosine

TOLERANCE = {torch.float32: 2e-3, torch.float64: 1e-9}


def smooth_model(dtype):
    """Convolution, batch norm and tanh: smooth, with a batch-coupled layer."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh()),
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Tanh()),
        nn.Linear(5, 4),
    ).to(dtype)


def batch(dtype, shape=(6, 2, 4, 4), classes=4):
    return torch.randn(shape, dtype=dtype), torch.randint(0, classes, (shape[0],))


def autograd_gradients(model, inputs, targets):
    model.zero_grad(set_to_none=True)
    with zo.frozen_running_stats(model):
        F.cross_entropy(model(inputs), targets).backward()
    gradients = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return gradients


def estimated_gradients(estimator, inputs, targets):
    estimator.model.zero_grad(set_to_none=True)
    loss = estimator.estimate(inputs, targets)
    gradients = {n: p.grad.clone() for n, p in estimator.model.named_parameters()}
    estimator.model.zero_grad(set_to_none=True)
    return loss, gradients


def relative_error(estimate, exact):
    difference = torch.cat([(estimate[n] - exact[n]).flatten() for n in exact])
    return float(difference.norm() / torch.cat([g.flatten() for g in exact.values()]).norm())


def assert_same_gradients(first, second, atol):
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=atol, msg=name)


def resnet_with_subset(dtype, total=120, seed=0):
    """A ResNet-20 and a fixed random set of ``total`` coordinates across all parameters."""
    model = zo.ResNet20(num_classes=4).to(dtype)
    return model, zo.SparseMask.uniform(model, total, seed)


@pytest.mark.parametrize("query_batch", [1, 8])
def test_cge_matches_autograd_on_a_smooth_float64_model(query_batch):
    model = smooth_model(torch.float64)
    inputs, targets = batch(torch.float64)
    exact = autograd_gradients(model, inputs, targets)
    estimator = zo.CGE(model, F.cross_entropy, mu=1e-6, query_batch=query_batch)
    loss, estimate = estimated_gradients(estimator, inputs, targets)
    assert relative_error(estimate, exact) < 1e-3
    assert estimator.queries == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), zo.frozen_running_stats(model):
        assert loss == F.cross_entropy(model(inputs), targets)


def test_reuse_equals_no_reuse(dtype):
    model, mask = resnet_with_subset(dtype)
    inputs, targets = batch(dtype, (3, 3, 8, 8))
    results = [
        estimated_gradients(
            zo.CGE(model, F.cross_entropy, feature_reuse=reuse, sparsity=mask, query_batch=1),
            inputs,
            targets,
        )
        for reuse in (True, False)
    ]
    assert torch.equal(results[0][0], results[1][0])
    assert_same_gradients(results[0][1], results[1][1], TOLERANCE[dtype])


def test_batched_equals_sequential(dtype):
    model, mask = resnet_with_subset(dtype)
    inputs, targets = batch(dtype, (3, 3, 8, 8))
    sequential, batched = (
        estimated_gradients(
            zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=size), inputs, targets
        )[1]
        for size in (1, 7)
    )
    assert any(bool(g.abs().sum() > 0) for g in sequential.values())
    assert_same_gradients(sequential, batched, TOLERANCE[dtype])


def tune(tuner, key, per_query, largest=16):
    """Feed ``tuner`` calls for ``key`` timed by ``per_query(size)``; return the choice."""
    for _ in range(40):
        size = tuner.size(key, largest)
        if not tuner.measuring(key):
            return size
        tuner.record(key, size, size * per_query(size), size)
    raise AssertionError("the tuner did not settle")


def test_tuner_grows_while_faster_and_keeps_one_unless_clearly_faster():
    tuner = zo.QueryBatchTuner(margin=0.9, samples=2)
    assert tune(tuner, "gpu-like", lambda size: 1 / size) == 16  # faster up to the cap
    assert tune(tuner, "cpu-like", lambda size: 1 + 0.1 * size) == 1  # slower at 2: stop
    assert tune(tuner, "saturates", lambda size: max(1 / size, 0.25)) == 4  # 8 no faster
    assert tune(tuner, "within noise", lambda size: 0.95 if size > 1 else 1.0) == 1
    assert tuner.measurements["cpu-like"] == {1: pytest.approx(1.1), 2: pytest.approx(1.2)}
    assert tuner.settled and tune(tuner, "tiny", lambda size: 1.0, largest=1) == 1
    tuner.record("cpu-like", 2, 1e-9, 2)  # decided keys ignore later calls
    assert tuner.chosen["cpu-like"] == 1


class FavoursBatches(zo.QueryBatchTuner):
    """Times every call as if per-query cost fell with the batch, to exercise batching."""

    def record(self, key, size, seconds, count):
        super().record(key, size, count / size**0.5, count)


def test_measured_query_batch_equals_one_query_at_a_time():
    model, mask = resnet_with_subset(torch.float64, total=300)
    inputs, targets = batch(torch.float64, (3, 3, 8, 8))
    single = estimated_gradients(
        zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=1), inputs, targets
    )[1]
    estimator = zo.CGE(model, F.cross_entropy, sparsity=mask)
    estimator._tuner = FavoursBatches()
    for _ in range(12):  # tuning goes on over estimates, with chunks of every tried size
        assert_same_gradients(estimated_gradients(estimator, inputs, targets)[1], single, 1e-9)
        assert estimator.queries == 300
        if estimator.query_batch_settled:
            break
    assert estimator.query_batch_settled
    assert estimator.query_batches and max(estimator.query_batches.values()) > 1
    measured = zo.CGE(model, F.cross_entropy, sparsity=mask)  # real clock: any choice is fine
    assert_same_gradients(estimated_gradients(measured, inputs, targets)[1], single, 1e-9)


@pytest.mark.parametrize("query_batch", [1, 5])
def test_parameters_bit_identical_and_statistics_updated_once(query_batch):
    model, mask = resnet_with_subset(torch.float32, total=40)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs, targets = batch(torch.float32, (3, 3, 8, 8))
    zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=query_batch).estimate(inputs, targets)
    zo.RGE(model, F.cross_entropy, q=3).estimate(inputs, targets)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name
    assert int(model.stem[1].num_batches_tracked) == 2
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_gradient_accumulates_like_backward():
    model = smooth_model(torch.float64)
    inputs, targets = batch(torch.float64)
    estimator = zo.CGE(model, F.cross_entropy, mu=1e-6)
    _, once = estimated_gradients(estimator, inputs, targets)
    estimator.estimate(inputs, targets)
    estimator.estimate(inputs, targets)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, 2 * once[name])


def test_sparse_cge_estimates_only_the_mask():
    model = smooth_model(torch.float64)
    inputs, targets = batch(torch.float64)
    estimator = zo.CGE(model, F.cross_entropy, mu=1e-6, sparsity=0.75, seed=3)
    _, estimate = estimated_gradients(estimator, inputs, targets)
    exact = autograd_gradients(model, inputs, targets)
    for name, parameter in model.named_parameters():
        chosen = estimator.mask.indices[name]
        selected = torch.zeros(parameter.numel(), dtype=torch.bool)
        selected[chosen] = True
        flat = estimate[name].flatten()
        assert torch.all(flat[~selected] == 0), name
        torch.testing.assert_close(
            flat[chosen], exact[name].flatten()[chosen], rtol=1e-3, atol=1e-6
        )
    assert estimator.queries == estimator.mask.total


def test_sparse_mask_density_and_redraw():
    model = zo.ResNet20()
    sparsity = {"blocks.8.exit.conv.weight": 0.99, "stem.0.weight": 0.5}
    mask = zo.SparseMask.for_model(model, sparsity, seed=0)
    densities = mask.densities()
    parameters = dict(model.named_parameters())
    for name, parameter in parameters.items():
        expected = 1.0 - sparsity.get(name, 0.0) if parameter.dim() > 1 else 1.0
        assert abs(densities[name] - expected) <= 1 / parameter.numel(), name
        assert len(mask.indices[name].unique()) == mask.counts[name]
    uniform = zo.SparseMask.for_model(model, 0.9, seed=0)
    for name, parameter in parameters.items():
        expected = 0.1 if parameter.dim() > 1 else 1.0
        assert abs(uniform.densities()[name] - expected) <= 1 / parameter.numel(), name
    first = {n: i.clone() for n, i in uniform.indices.items()}
    uniform.redraw(1)
    assert not torch.equal(
        first["blocks.8.exit.conv.weight"], uniform.indices["blocks.8.exit.conv.weight"]
    )
    assert torch.equal(first["blocks.8.exit.bn.bias"], uniform.indices["blocks.8.exit.bn.bias"])
    uniform.redraw(0)
    assert all(torch.equal(first[n], uniform.indices[n]) for n in first)


def test_uniform_mask_spreads_coordinates_over_all_parameters():
    model = zo.ResNet20()
    mask = zo.SparseMask.uniform(model, 5000, seed=1)
    assert mask.total == 5000
    largest = max(mask.numels, key=mask.numels.get)
    assert mask.counts[largest] == pytest.approx(5000 * mask.numels[largest] / 269722, rel=0.2)


def test_sparsity_mapping_rejects_biases():
    model = smooth_model(torch.float32)
    with pytest.raises(ValueError, match="always estimated"):
        zo.SparseMask.for_model(model, {"2.bias": 0.5})


def test_zo_grasp_ratios_meet_the_overall_sparsity_and_leave_the_model():
    model = smooth_model(torch.float32)
    inputs, targets = batch(torch.float32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ratios = zo.zo_grasp(model, F.cross_entropy, inputs, targets, sparsity=0.8, q=16)
    weights = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    assert set(ratios) == set(weights)
    pruned = sum(ratios[n] * p.numel() for n, p in weights.items())
    assert pruned == pytest.approx(0.8 * sum(p.numel() for p in weights.values()), abs=0.5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_rge_is_unbiased_with_many_directions():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    inputs, targets = batch(torch.float64, (8, 3), classes=2)
    exact = autograd_gradients(model, inputs, targets)
    _, estimate = estimated_gradients(
        zo.RGE(model, F.cross_entropy, mu=1e-5, q=4000), inputs, targets
    )
    assert relative_error(estimate, exact) < 0.1


def test_first_order_is_backward():
    model = smooth_model(torch.float64)
    inputs, targets = batch(torch.float64)
    with zo.frozen_running_stats(model):
        _, estimate = estimated_gradients(zo.FirstOrder(model, F.cross_entropy), inputs, targets)
    assert relative_error(estimate, autograd_gradients(model, inputs, targets)) == 0


def _distributed_worker(rank, directory, world_size):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world_size
    )
    torch.manual_seed(0)
    model, mask = resnet_with_subset(torch.float64, total=60)
    inputs, targets = batch(torch.float64, (3, 3, 8, 8))
    results = {}
    for query_batch in (1, 4):
        estimator = zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=query_batch)
        results[f"cge{query_batch}"] = estimated_gradients(estimator, inputs, targets)[1]
        results[f"queries{query_batch}"] = estimator.queries
    results["rge"] = estimated_gradients(zo.RGE(model, F.cross_entropy, q=5), inputs, targets)[1]
    torch.save(results, f"{directory}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path), 2), nprocs=2)
    torch.manual_seed(0)
    model, mask = resnet_with_subset(torch.float64, total=60)
    inputs, targets = batch(torch.float64, (3, 3, 8, 8))
    single = estimated_gradients(
        zo.CGE(model, F.cross_entropy, sparsity=mask, query_batch=1), inputs, targets
    )[1]
    single_rge = estimated_gradients(zo.RGE(model, F.cross_entropy, q=5), inputs, targets)[1]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for result in ranks:
        for query_batch in (1, 4):
            assert_same_gradients(result[f"cge{query_batch}"], single, 1e-9)
        assert_same_gradients(result["rge"], single_rge, 1e-9)
    assert ranks[0]["queries1"] > 0 and ranks[1]["queries1"] > 0
    assert ranks[0]["queries1"] + ranks[1]["queries1"] == mask.total


def test_owners_balance_the_cost():
    costs = torch.tensor([9.0] * 10 + [1.0] * 90)
    owners = owners_by_cost(costs, 2)
    assert torch.all(owners[1:] >= owners[:-1])
    shares = [float(costs[owners == rank].sum()) for rank in range(2)]
    assert abs(shares[0] - shares[1]) <= 9.0


@pytest.mark.parametrize("model", [zo.ResNet20(), zo.SmallCNN(3, 32, 10), zo.MLP(3 * 32 * 32, 10)])
def test_models_compose_from_their_stages(model):
    inputs = torch.randn(2, 3, 32, 32)
    zo.check_stages(model, inputs)  # raises if a parameter is missed or the stages differ
    model.eval()
    with torch.no_grad():
        staged = run_stages(model_stages(model), inputs)
        torch.testing.assert_close(staged, model(inputs))


def test_resnet20_size_and_stages():
    model = zo.ResNet20()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.27e6, rel=0.01)
    assert len(zo.model_stages(model)) == 20


def test_stage_profiles_of_resnet20():
    stages = zo.model_stages(zo.ResNet20())
    inputs = torch.randn(2, 3, 32, 32)
    costs = zo.stage_costs(stages, inputs)
    restart = [sum(costs[k:]) for k in range(len(costs))]
    assert all(a > b for a, b in itertools.pairwise(restart))
    with torch.no_grad():
        times = zo.stage_times(stages, zo.stage_inputs(stages, inputs), repeats=1)
    assert len(times) == len(stages) and min(times) > 0


def _write_fake_cifar(directory, images_per_batch=4):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(CIFAR10_FILES):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(index + i) % 10 for i in range(images_per_batch)],
            b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(images_per_batch)],
        }
        with (directory / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def test_cifar_loader_reads_a_tiny_archive(tmp_path):
    _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path)
    assert data.train_images.shape == (20, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (4, 3, 32, 32)
    assert data.train_labels.tolist()[:5] == [0, 1, 2, 3, 1]
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("rb") as handle:
        raw = pickle.load(handle)
    assert torch.equal(data.test_images.reshape(4, -1), torch.from_numpy(raw[b"data"]))
    images, _ = next(data.train_batches(8, torch.Generator().manual_seed(0)))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    _write_fake_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": math.floor}, handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar10(tmp_path)


def test_crop_and_flip_moves_pixels_without_changing_them():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    augmented = crop_and_flip(images, torch.Generator().manual_seed(0), pad=2)
    assert augmented.shape == images.shape
    for original, moved in zip(images, augmented):
        values = moved[moved != 0]
        assert torch.isin(values, original).all() and len(values) >= 3 * 6 * 6


def test_missing_cifar_names_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*cifar-10-batches-py"):
        load_cifar10(tmp_path / "nowhere")


def test_warmup_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1), factor(2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.5)
    assert factor(10) == pytest.approx(0.0)


def test_train_writes_metrics_refuses_overwrite_and_resumes(tmp_path):
    config = dict(out=tmp_path / "run", dataset="digits", model="mlp", batch_size=256, q=4)
    summary = train(TrainConfig(epochs=1, sparsity=0.5, mask_shuffle_interval=1, **config))
    assert summary["epochs"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert set(summary["layer_sparsity"]) == {"0.1.weight", "1.weight"}
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(epochs=2, sparsity=0.5, **config))
    with pytest.raises(ValueError, match="sparsity"):
        train(TrainConfig(epochs=2, resume=True, **config))
    resumed = train(
        TrainConfig(epochs=2, sparsity=0.5, mask_shuffle_interval=1, resume=True, **config)
    )
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert resumed["layer_sparsity"] == summary["layer_sparsity"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 2
