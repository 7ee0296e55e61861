"""Grading the BatchNorm and LayerNorm exercises against ``minidist.nn.functional``.

The reference is the library's own ``F.batch_norm`` / ``F.layer_norm`` run in float64
through autograd (outputs, running statistics updated in place, gradients of
``sum(out * dout)``); a separate case checks the learner's backward against central
differences of the learner's OWN forward. Inputs have per-channel (per-row) offsets and
scales, shapes with N, C, H, W all different, so that statistics over the wrong axes or a
wrong variance show up as a named quantity at a named index.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..autograd.gradcheck import numeric_grad
from ..nn import functional as F
from . import EXERCISES
from .grading import Graded, call, compare, load_solution, run_case, unimplemented, unpack

GRADS = ("dx", "dgamma", "dbeta")
BN_SHAPES = ((6, 3), (4, 5), (4, 3, 5, 6), (2, 4, 3, 5))
LN_SHAPES = ((4, 6), (3, 2, 5), (5, 7))
SETTINGS = ((0, 0.1, 1e-5), (1, 0.3, 0.1))  # (seed, momentum, eps): eps=0.1 shows eps errors
STEPS = 3


def _leaves(*arrays):
    return [Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]


def _batch(rng, shape, axis):
    """Normal data with a different offset and scale along `axis` (channels or rows)."""
    stat_shape = [1] * len(shape)
    stat_shape[axis] = shape[axis]
    loc, scale = rng.uniform(-2, 2, stat_shape), rng.uniform(0.5, 3, stat_shape)
    return loc + scale * rng.standard_normal(shape)


def _learner_forward(module, function, x, gamma, beta, *args, **kwargs):
    value = call(module, function, x.copy(), gamma.copy(), beta.copy(), *args, **kwargs)
    return unpack(value, ("out", "cache"), function)


def _compare_grads(module, function, dout, cache, expected, suffix=""):
    got = unpack(call(module, function, dout.copy(), cache), GRADS, function)
    for name, e, g in zip(GRADS, expected, got):
        compare(name + suffix, e, g)


def _running_hint(name, before, batch, unbiased, momentum):
    """A sentence for the usual wrong running-statistic updates, when `got` is one."""
    def hint(got):
        if np.array_equal(got, before):
            return f"{name} was not changed: update the array in place ({name}[...] = ...)"
        if name == "running_var" and np.allclose(got, (1 - momentum) * before + momentum * batch):
            return "that is the update with the biased batch variance; use var * m / (m - 1)"
        if np.allclose(got, momentum * before + (1 - momentum) * unbiased):
            return "momentum is the wrong way round: (1 - momentum) * running + momentum * batch"
        return None
    return hint


def _check_running(rm, rv, ref_rm, ref_rv, before, x, momentum, suffix):
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    compare("running_mean" + suffix, ref_rm, rm,
            hint=_running_hint("running_mean", before[0], mean, mean, momentum))
    compare("running_var" + suffix, ref_rv, rv,
            hint=_running_hint("running_var", before[1], var, var * m / (m - 1), momentum))


def _reference_batchnorm(x, gamma, beta, rm, rv, dout, **kwargs):
    xt, gt, bt = _leaves(x, gamma, beta)
    out = F.batch_norm(xt, rm, rv, gt, bt, **kwargs)
    out.backward(dout)
    return out.data, (xt.grad, gt.grad, bt.grad)


def _bn_train(module, shape, seed, momentum, eps):
    rng = np.random.default_rng(seed)
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 2, c), rng.standard_normal(c)
    ref_rm, ref_rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    rm, rv = ref_rm.copy(), ref_rv.copy()
    for step in range(1, STEPS + 1):
        x, dout = _batch(rng, shape, 1), rng.standard_normal(shape)
        before = (rm.copy(), rv.copy())
        out_ref, grads_ref = _reference_batchnorm(x, gamma, beta, ref_rm, ref_rv, dout, training=True,
                                                  momentum=momentum, eps=eps)
        out, cache = _learner_forward(module, "batchnorm_forward", x, gamma, beta, rm, rv,
                                      training=True, momentum=momentum, eps=eps)
        compare(f"out at step {step}", out_ref, out)
        _check_running(rm, rv, ref_rm, ref_rv, before, x, momentum, f" after step {step}")
        _compare_grads(module, "batchnorm_backward", dout, cache, grads_ref, f" at step {step}")


def _bn_eval(module, shape, seed, momentum, eps):
    rng = np.random.default_rng(seed + 100)
    c = shape[1]
    gamma, beta = rng.uniform(0.5, 2, c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    x = _batch(rng, shape, 1)
    out_ref, _ = _reference_batchnorm(x, gamma, beta, rm.copy(), rv.copy(), np.ones(shape),
                                      training=False, eps=eps)
    mine_rm, mine_rv = rm.copy(), rv.copy()
    out, _ = _learner_forward(module, "batchnorm_forward", x, gamma, beta, mine_rm, mine_rv,
                              training=False, momentum=momentum, eps=eps)
    compare("out (eval, from the running statistics)", out_ref, out)
    compare("running_mean (eval must leave it unchanged)", rm, mine_rm)
    compare("running_var (eval must leave it unchanged)", rv, mine_rv)


def _finite_differences(module, prefix, shape, seed, axis, forward_kwargs, buffers=()):
    """The learner's backward against central differences of the learner's forward."""
    rng = np.random.default_rng(seed + 200)
    d = shape[axis]
    x, dout = _batch(rng, shape, axis), rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 2, d), rng.standard_normal(d)
    inputs = [x, gamma, beta]

    def loss(_):
        out, _cache = _learner_forward(module, f"{prefix}_forward", *inputs,
                                       *[b.copy() for b in buffers], **forward_kwargs)
        return float(np.sum(np.asarray(out, dtype=np.float64) * dout))

    _, cache = _learner_forward(module, f"{prefix}_forward", *inputs, *[b.copy() for b in buffers],
                                **forward_kwargs)
    got = unpack(call(module, f"{prefix}_backward", dout.copy(), cache), GRADS, f"{prefix}_backward")
    for name, value, g in zip(GRADS, inputs, got):
        compare(f"{name} (vs finite differences of your {prefix}_forward)",
                numeric_grad(loss, value), g, rtol=1e-5, atol=1e-6)


def _kind(shape):
    return "FC" if len(shape) == 2 else "conv"


def batchnorm_cases(module):
    """(case name, body) for every BatchNorm case."""
    cases = []
    for shape in BN_SHAPES:
        for seed, momentum, eps in SETTINGS:
            tag = f"{_kind(shape)} {shape} seed {seed} (momentum {momentum}, eps {eps})"
            cases.append((f"train {tag}, {STEPS} steps",
                          lambda s=shape, a=(seed, momentum, eps): _bn_train(module, s, *a)))
            cases.append((f"eval {tag}", lambda s=shape, a=(seed, momentum, eps): _bn_eval(module, s, *a)))
    for shape in ((4, 3), (3, 2, 2, 3)):
        c = shape[1]
        kwargs = dict(training=True, momentum=0.1, eps=1e-5)
        cases.append((f"gradients vs finite differences {_kind(shape)} {shape}",
                      lambda s=shape, k=kwargs, b=(np.zeros(c), np.ones(c)):
                      _finite_differences(module, "batchnorm", s, 0, 1, k, b)))
    return cases


def _ln_case(module, shape, seed, eps):
    rng = np.random.default_rng(seed)
    d = shape[-1]
    gamma, beta = rng.uniform(0.5, 2, d), rng.standard_normal(d)
    x, dout = _batch(rng, shape, 0), rng.standard_normal(shape)
    xt, gt, bt = _leaves(x, gamma, beta)
    ref = F.layer_norm(xt, (d,), gt, bt, eps=eps)
    ref.backward(dout)
    out, cache = _learner_forward(module, "layernorm_forward", x, gamma, beta, eps=eps)
    compare("out", ref.data, out)
    _compare_grads(module, "layernorm_backward", dout, cache, (xt.grad, gt.grad, bt.grad))


def layernorm_cases(module):
    cases = []
    for shape in LN_SHAPES:
        for seed, _momentum, eps in SETTINGS:
            cases.append((f"{shape} seed {seed} (eps {eps})",
                          lambda s=shape, a=(seed, eps): _ln_case(module, s, *a)))
    for shape in ((3, 4), (2, 2, 3)):
        cases.append((f"gradients vs finite differences {shape}",
                      lambda s=shape: _finite_differences(module, "layernorm", s, 0, -1, {"eps": 1e-5})))
    return cases


def grade(name: str, path, cases_of) -> Graded:
    """Load `path` and run every case of the exercise `name`; an import failure is one
    failed case."""
    holder = {}
    result = run_case(name, f"import {path}", lambda: holder.update(
        module=load_solution(path, f"_minidist_exercise_{name}")))
    if not result.passed:
        return Graded([result])
    module = holder["module"]
    return Graded([run_case(name, case, body) for case, body in cases_of(module)],
                  unimplemented(module, EXERCISES[name][1]))


def grade_batchnorm(path) -> Graded:
    return grade("batchnorm", path, batchnorm_cases)


def grade_layernorm(path) -> Graded:
    return grade("layernorm", path, layernorm_cases)
