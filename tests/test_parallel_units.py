"""Single-process tests of minidist.parallel: sharding, bucket assignment, SyncBatchNorm at
one rank against torch, the wrappers' argument errors, models, memory, drift digests and
the trainer. (The multi-rank behaviour is in test_parallel_equivalence/features/errors.)"""
import numpy as np
import pytest
from hypothesis import assume, given, settings

import minidist.nn as nn
from minidist import Tensor
from minidist.comm import Communicator
from minidist.data import DataLoader, spirals
from minidist.nn import functional as F
from minidist.optim import SGD
from minidist.parallel import (MLP, DistributedSampler, SmallCNN, SyncBatchNorm, Trainer, build_model,
                               distributed_loader, local_shard, parameter_digest, shard_bounds,
                               shard_sizes, wrap)
from minidist.parallel.buckets import assign_buckets
from strategies import sharding_problems


@pytest.fixture(scope="module")
def comm():
    return Communicator()  # a world of one rank


# ---- sharding ------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(sharding_problems())
def test_contiguous_shards_tile_the_batch(problem):
    n, ranks, _, _ = problem
    sizes = shard_sizes(n, ranks)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= (1 if n else 0)
    assert list(sizes) == sorted(sizes, reverse=True)  # the first n % R ranks get one more
    x = np.arange(n)
    pieces = [local_shard(x, rank=r, num_replicas=ranks) for r in range(ranks)]
    assert np.array_equal(np.concatenate(pieces), x)
    assert [shard_bounds(n, ranks, r)[1] - shard_bounds(n, ranks, r)[0] for r in range(ranks)] == list(sizes)


@settings(max_examples=60, deadline=None)
@given(sharding_problems())
def test_distributed_sampler_covers_the_epoch_as_documented(problem):
    n, ranks, _, seed = problem
    for drop_last, pad in ((False, True), (False, False), (True, True)):
        if pad and not drop_last and n == 0:
            continue
        samplers = [DistributedSampler(n, ranks, r, seed=seed, drop_last=drop_last, pad=pad) for r in range(ranks)]
        per_rank = [s.indices() for s in samplers]
        lengths = [len(i) for i in per_rank]
        assert lengths == [len(s) for s in samplers]
        together = np.concatenate(per_rank) if per_rank else np.array([])
        if drop_last:
            assert lengths == [n // ranks] * ranks and len(set(together.tolist())) == len(together)
        elif pad:
            assert lengths == [-(-n // ranks)] * ranks and set(together.tolist()) == set(range(n))
        else:
            assert sorted(together.tolist()) == list(range(n))  # every sample exactly once
            assert max(lengths) - min(lengths) <= 1


def test_sampler_epochs_reshuffle_identically_on_every_rank():
    a = [DistributedSampler(50, 3, r, seed=4) for r in range(3)]
    first = [s.indices().copy() for s in a]
    for s in a:
        s.set_epoch(1)
    second = [s.indices() for s in a]
    assert not np.array_equal(first[0], second[0])
    assert all(np.array_equal(s.global_order(), a[0].global_order()) for s in a)


@settings(max_examples=30, deadline=None)
@given(sharding_problems())
def test_rank_batches_together_are_the_single_process_global_batch(problem):
    """Per-rank loaders of batch b over DistributedSampler(pad=False) see, at each step, the
    same samples as one process with batch b * R and the same seed."""
    n, ranks, b, seed = problem
    X = np.arange(n, dtype=np.float64)[:, None]
    y = np.arange(n)
    samplers = [DistributedSampler(n, ranks, r, seed=seed, pad=False) for r in range(ranks)]
    try:
        steps = samplers[0].num_batches(b)
    except ValueError as refusal:  # ranks would disagree: every rank's sampler refuses alike
        for other in samplers[1:]:
            with pytest.raises(ValueError) as same:
                other.num_batches(b)
            assert str(same.value) == str(refusal)
        steps = None
    assume(steps is not None)
    loaders = [list(DataLoader(X, y, batch_size=b, sampler=s)) for s in samplers]
    single = list(DataLoader(X, y, batch_size=b * ranks, shuffle=True, seed=seed))
    assert all(len(batches) == steps for batches in loaders)
    for t in range(steps):
        union = sorted(int(v) for batches in loaders for v in batches[t][1])
        assert union == sorted(single[t][1].tolist())


def test_num_batches_refuses_when_ranks_would_run_different_step_counts():
    sampler = DistributedSampler(9, 4, 0, pad=False)  # shares 3, 2, 2, 2
    with pytest.raises(ValueError, match=r"different numbers of steps \(\[1, 2\]\)"):
        sampler.num_batches(2)
    assert sampler.num_batches(3) == 1


def test_sampler_and_shard_errors_name_the_values():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\] for num_replicas=3 \(got 3\)"):
        DistributedSampler(10, 3, 3)
    with pytest.raises(ValueError, match="same number of rows"):
        local_shard((np.zeros(3), np.zeros(4)), rank=0, num_replicas=2)


# ---- buckets -------------------------------------------------------------------------------------
def test_buckets_follow_reverse_order_and_the_size_limits():
    net = MLP(4, 8, 3, depth=2, rng=0, dtype=np.float64)  # sizes in bytes: 256 64 512 64 192 24
    params = list(net.parameters())
    buckets = assign_buckets(params, bucket_bytes=300, first_bucket_bytes=100)
    order = [p for b in buckets for p in b]
    assert order == params[::-1]
    assert [sum(p.data.nbytes for p in b) for b in buckets] == [24 + 192, 64 + 512, 64 + 256]
    assert len(assign_buckets(params, 10**9, 10**9)) == 1


def test_buckets_never_mix_dtypes():
    a, b = nn.Linear(3, 3, dtype=np.float32), nn.Linear(3, 3, dtype=np.float64)
    buckets = assign_buckets(list(a.parameters()) + list(b.parameters()), 10**9, 10**9)
    assert sorted(len(x) for x in buckets) == [2, 2]
    assert all(len({p.data.dtype for p in x}) == 1 for x in buckets)


# ---- SyncBatchNorm on one rank against torch --------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 3), (5, 3, 4), (4, 3, 5, 5)])
def test_syncbn_on_one_rank_is_torch_batchnorm(torch, comm, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    dy = rng.standard_normal(shape)
    bn = SyncBatchNorm(3, comm, momentum=0.3, dtype=np.float64)
    bn.weight.data[:] = [0.5, 2.0, -1.0]
    xt = Tensor(x, requires_grad=True)
    out = bn(xt)
    out.backward(dy)
    ref = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](
        3, momentum=0.3).double()
    with torch.no_grad():
        ref.weight[:] = torch.tensor([0.5, 2.0, -1.0])
    x_t = torch.tensor(x, requires_grad=True)
    out_t = ref(x_t)
    out_t.backward(torch.tensor(dy))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xt.grad, x_t.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, ref.weight.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, ref.bias.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.running_mean.data, ref.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn.running_var.data, ref.running_var.numpy(), atol=1e-12)


def test_syncbn_eval_mode_uses_running_stats_and_sends_nothing(comm):
    bn = SyncBatchNorm(2, comm, dtype=np.float64)
    bn.running_mean.data[:] = [1.0, -1.0]
    bn.running_var.data[:] = [4.0, 0.25]
    bn.eval()
    before = comm.ledger.totals("syncbn")["messages_sent"]
    out = bn(Tensor(np.array([[3.0, 0.0]])))
    np.testing.assert_allclose(out.data, [[2 / np.sqrt(4 + 1e-5), 1 / np.sqrt(0.25 + 1e-5)]])
    assert comm.ledger.totals("syncbn")["messages_sent"] == before


def test_convert_sync_batchnorm_shares_parameters_and_buffers(comm):
    net = SmallCNN(1, 10, 8, channels=(3, 4), norm="batch", rng=0, dtype=np.float64)
    net.eval()
    old = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    converted = SyncBatchNorm.convert_sync_batchnorm(net, comm)
    new = [m for m in converted.modules() if isinstance(m, SyncBatchNorm)]
    assert len(new) == 2 and not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    for a, b in zip(old, new):
        assert a.weight is b.weight and a.running_var is b.running_var and not b.training
    single = SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(5), comm)
    assert isinstance(single, SyncBatchNorm) and single.num_features == 5


# ---- wrappers: errors and the one-rank case -------------------------------------------------------------
def test_wrap_rejects_unknown_strategies_and_options(comm):
    net = MLP(2, 4, 2)
    with pytest.raises(ValueError, match=r"unknown strategy 'allreduce'; expected one of \['local', 'dp'"):
        wrap(net, "allreduce", comm)
    with pytest.raises(ValueError, match="strategy 'ddp' needs a communicator"):
        wrap(net, "ddp")
    with pytest.raises(ValueError, match=r"average must be one of \('samples', 'ranks'\) \(got 'mean'\)"):
        wrap(net, "hub", comm, average="mean")
    with pytest.raises(ValueError, match="comm_hook='fp16' needs algorithm='ring'"):
        wrap(net, "ddp", comm, comm_hook="fp16", algorithm="rabenseifner")
    with pytest.raises(ValueError, match="comm_hook='fp16' averages over ranks.*average='ranks'"):
        wrap(net, "ddp", comm, comm_hook="fp16")
    with pytest.raises(RuntimeError, match="loss_on_root=True"):
        wrap(net, "dp", comm).loss(F.cross_entropy, None, None)


@pytest.mark.parametrize("strategy, bad", [("ddp", {"bucket_cap_mb": 0}), ("ddp", {"average": "mean"}),
                                           ("dp", {"broadcast": "ring"}), ("hub", {"reduce": "tree"}),
                                           ("hub", {"nonfinite": "warn"})])
def test_a_rejected_option_takes_no_model_id(comm, strategy, bad):
    """Model ids count the models wrapped on a communicator, the same on every rank: an
    option refused on construction must not advance the count."""
    net = MLP(2, 4, 2)
    before = wrap(net, strategy, comm).model_id
    with pytest.raises(ValueError):
        wrap(net, strategy, comm, **bad)
    assert wrap(net, strategy, comm).model_id == before + 1


def test_every_strategy_on_one_rank_is_the_local_step(comm):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 2)), rng.integers(0, 3, 16)
    finals = {}
    for strategy in ("local", "dp", "hub", "ddp"):
        net = MLP(2, 8, 3, norm="batch", rng=2, dtype=np.float64)
        model = wrap(net, strategy, comm)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            loss = F.cross_entropy(model(Tensor(x)), y)
            model.zero_grad()
            loss.backward()
            model.step(opt)
        finals[strategy] = np.concatenate([p.data.ravel() for p in net.parameters()])
        assert model.steps == 3 and model.memory.parameters == 8 * finals[strategy].size
    for strategy in ("dp", "hub", "ddp"):
        np.testing.assert_allclose(finals[strategy], finals["local"], rtol=0, atol=1e-12)


def test_step_buffers_are_kept_across_steps(comm, monkeypatch):
    """The fp16 hook's float16 copy of a bucket is one array of the bucket's, the same
    step after step (its memory accounting calls it persistent), and the message hub
    reduces is one array, the same every step."""
    import minidist.parallel.hub as hub_module

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 2)).astype(np.float32), rng.integers(0, 3, 8)
    reduced = []
    real_reduce = hub_module.reduce_to_root
    monkeypatch.setattr(hub_module, "reduce_to_root", lambda c, flat, *a: reduced.append(flat) or real_reduce(c, flat, *a))
    for strategy, options in (("ddp", {"comm_hook": "fp16", "average": "ranks"}), ("hub", {})):
        model = wrap(MLP(2, 8, 3, rng=2, dtype=np.float32), strategy, comm, **options)
        opt = SGD(model.parameters(), lr=0.1)
        held = []
        for _ in range(3):
            loss = F.cross_entropy(model(Tensor(x)), y)
            model.zero_grad()
            loss.backward()
            model.step(opt)
            held.append([b.half for b in model.buckets] if strategy == "ddp" else reduced[-1:])
        assert held[0] and all(h.dtype == (np.float16 if strategy == "ddp" else np.float32) for h in held[0])
        assert all(len(h) == len(held[0]) and all(a is b for a, b in zip(h, held[0])) for h in held), strategy
    assert len(reduced) == 3


def test_parameter_digest_sees_a_single_changed_bit():
    net = MLP(2, 4, 2, rng=0, dtype=np.float64)
    before = parameter_digest(net)
    net[0].weight.data[0, 0] = np.nextafter(net[0].weight.data[0, 0], np.inf)
    assert parameter_digest(net) != before


# ---- models and the trainer ------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["none", "batch", "layer", "sync"])
def test_models_build_with_every_norm(comm, norm):
    mlp = build_model("mlp", norm=norm, comm=comm, in_features=3, hidden=6, out_features=2)
    assert mlp(Tensor(np.zeros((4, 3), np.float32))).shape == (4, 2)
    cnn = build_model("cnn", norm=norm, comm=comm, image_size=8, channels=(2, 3))
    assert cnn(Tensor(np.ones((2, 1, 8, 8), np.float32))).shape == (2, 10)
    kinds = {type(m).__name__ for m in cnn.modules()}
    expected = {"none": set(), "batch": {"BatchNorm2d"}, "layer": {"LayerNorm"}, "sync": {"SyncBatchNorm"}}[norm]
    assert kinds & {"BatchNorm2d", "LayerNorm", "SyncBatchNorm"} == expected


def test_model_errors():
    with pytest.raises(ValueError, match="norm='sync' needs the communicator"):
        MLP(2, 4, 2, norm="sync")
    with pytest.raises(ValueError, match=r"norm must be one of .* \(got 'group'\)"):
        MLP(2, 4, 2, norm="group")
    with pytest.raises(ValueError, match="image_size=10 must be divisible by 2\\*\\*2"):
        SmallCNN(image_size=10)


def test_trainer_learns_spirals(comm):
    X, y = spirals(60, 3, seed=0)
    net = MLP(2, 32, 3, rng=0)
    model = wrap(net, "ddp", comm)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1, momentum=0.9), comm=comm, progress=False)
    history = trainer.fit(distributed_loader(X, y, 30, comm, seed=1), epochs=25, eval_data=(X, y))
    assert len(history) == 25 and history[-1]["steps"] == 6
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.6


# ---- SyncBatchNorm's statistics, one process --------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 1e3, -1e4])
def test_gathered_statistics_combine_to_the_global_batch_far_from_zero(offset):
    """Per-shard (count, mean, M2) rows, one shard empty, combine to the mean and biased
    variance of the whole batch, to round-off, where E[x^2] - E[x]^2 would not."""
    from minidist.nn.syncbn import batch_norm_gather_stats_with_counts, batch_norm_local_stats

    rng = np.random.default_rng(4)
    x = offset + 0.01 * rng.standard_normal((13, 3, 2))
    shards = np.split(x, [5, 5, 9])  # sizes 5, 0, 4, 4
    rows = [np.concatenate([[n], m, m2]) for n, m, m2 in map(batch_norm_local_stats, shards)]
    running_mean, running_var = np.zeros(3), np.ones(3)
    mean, invstd, n = batch_norm_gather_stats_with_counts(np.stack(rows), running_mean, running_var,
                                                           momentum=0.5, eps=0.0)
    want_mean, want_var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    assert n == 26
    np.testing.assert_allclose(mean, want_mean, rtol=1e-15)
    np.testing.assert_allclose(1.0 / invstd ** 2, want_var, rtol=1e-9)
    np.testing.assert_allclose(running_var, 0.5 + 0.5 * want_var * 26 / 25, rtol=1e-9)
    one_pass = (x ** 2).mean(axis=(0, 2)) - want_mean ** 2
    if offset:  # what the previous formula lost
        assert np.abs(one_pass / want_var - 1).max() > 1e-6


def test_gathered_statistics_need_two_values_per_channel():
    from minidist.nn.syncbn import batch_norm_gather_stats_with_counts

    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_gather_stats_with_counts(np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]))


def test_syncbn_message_counts_are_the_two_collectives():
    from minidist.cost import message_counts
    from minidist.cost import syncbn_message_counts

    assert syncbn_message_counts(8, 1, 0) == dict.fromkeys(
        ("messages_sent", "messages_received", "bytes_sent", "bytes_received"), 0)
    got = syncbn_message_counts(8, 4, 1)
    assert got["messages_sent"] == 3 * 3  # (N-1) all-gather steps, 2(N-1) all-reduce steps
    ring = message_counts("ring_allreduce", 4, 1, 16, 8)
    assert got["bytes_sent"] == 3 * 17 * 8 + ring["bytes_sent"]


def test_train_step_runs_the_standard_loop(comm):
    from minidist.parallel.trainer import train_step

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 2)), rng.integers(0, 3, 6)
    nets = [MLP(2, 5, 3, rng=1, dtype=np.float64) for _ in range(2)]
    by_hand, helped = wrap(nets[0], "local"), wrap(nets[1], "ddp", comm)
    opts = [SGD(m.parameters(), lr=0.1) for m in (by_hand, helped)]
    loss = F.cross_entropy(by_hand(Tensor(x)), y)
    by_hand.zero_grad()
    loss.backward()
    by_hand.step(opts[0])
    out, y_local, loss2 = train_step(helped, opts[1], x, y)
    assert y_local is y and out.shape == (6, 3) and loss2.item() == loss.item()
    for a, b in zip(*(n.parameters() for n in nets)):
        assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("strategy", ["dp", "hub", "ddp"])
def test_step_before_any_forward_says_so(comm, strategy):
    model = wrap(MLP(2, 3, 2, rng=0, dtype=np.float64), strategy, comm)
    with pytest.raises(RuntimeError, match=f"{strategy if strategy != 'ddp' else 'DDP'}: no rank saw any sample"):
        model.step(SGD(model.parameters(), lr=0.1))


class _MaybeHeaded(nn.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.body = nn.Linear(2, 3, rng=rng, dtype=np.float64)
        self.head = nn.Linear(3, 3, rng=rng, dtype=np.float64)
        self.use_head = False

    def forward(self, x):
        h = self.body(x)
        return self.head(h) if self.use_head else h


def test_static_graph_refuses_a_later_iteration_that_changes_the_order(comm):
    net = _MaybeHeaded()
    model = wrap(net, "ddp", comm, static_graph=True, bucket_cap_mb=1e-6)
    opt = SGD(model.parameters(), lr=0.1)
    x, y = np.ones((4, 2)), np.array([0, 1, 2, 0])
    for use_head in (False, False):  # the first iteration fixes the order, the second follows it
        net.use_head = use_head
        loss = F.cross_entropy(model(Tensor(x)), y)
        model.zero_grad()
        loss.backward()
        model.step(opt)
    net.use_head = True
    loss = F.cross_entropy(model(Tensor(x)), y)
    model.zero_grad()
    with pytest.raises(RuntimeError, match=r"on rank 0, gradient #0 of this iteration is 'head\.(weight|bias)', "
                                           r"but the first iteration had 'body\.(weight|bias)' there"):
        loss.backward()


@pytest.mark.parametrize("strategy", ["local", "ddp"])
def test_a_step_that_raises_leaves_no_samples_for_the_next_one(strategy, comm):
    """A caught NonFiniteGradientError must not carry this step's sample count into the next."""
    from minidist.parallel import NonFiniteGradientError

    net = MLP(2, 4, 2, rng=0, dtype=np.float64)
    model = wrap(net, strategy, None if strategy == "local" else comm)
    opt = SGD(model.parameters(), lr=0.1)
    x = np.array([[np.nan, 1.0], [0.0, 1.0]])
    loss = F.cross_entropy(model(Tensor(x)), np.array([0, 1]))
    model.zero_grad()
    loss.backward()
    with pytest.raises(NonFiniteGradientError):
        model.step(opt)
    assert model._samples == 0

