"""How a checkpoint is laid out, read and checked (`minidist.checkpoint` drives it).

Arrays: ``model/<state_dict key>``, ``optim/<parameter index>/<state name>``,
``extra/<name>``. Everything else is one JSON document in the 0-d string array
``__minidist__``: format and version, the step, each model key's shape and dtype, the
optimizer's class, param_groups and numeric state, the strategy's state, the RNG states
(the process-wide generator of `minidist.manual_seed` and every Generator held by a
module) and how each `extra` entry was stored. Reading uses ``allow_pickle=False`` and
reads every array before anything is used, so a pickled, truncated or corrupt file is
refused as a `CheckpointError` naming the file, never executed.
"""
from __future__ import annotations

import json
import zipfile
import zlib

import numpy as np

from .nn import init

FORMAT, VERSION, META_KEY = "minidist-checkpoint", 1, "__minidist__"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not match the model/optimizer."""


def _plain(value):
    """JSON's `default=`: NumPy scalars and arrays (in RNG states) as plain values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    raise TypeError(f"{type(value).__name__} is not a number, string, list or array")


def _unplain(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        return {k: _unplain(v) for k, v in value.items()}
    return value


def _rng_state(generator) -> dict:
    return json.loads(json.dumps(generator.bit_generator.state, default=_plain))


def set_generator_state(generator, state: dict) -> None:
    generator.bit_generator.state = _unplain(state)


def generator_from_state(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    generator = np.random.Generator(bit_generator)
    set_generator_state(generator, state)
    return generator


def module_generators(module) -> dict:
    """``{"<module name>.<attribute>": Generator}`` for every Generator a module holds."""
    return {f"{name}.{attr}" if name else attr: value
            for name, m in module.named_modules() for attr, value in vars(m).items()
            if isinstance(value, np.random.Generator)}


# ---- writing ---------------------------------------------------------------------------------
def encode(model, optimizer, step: int, extra) -> tuple[dict, dict]:
    """``(metadata, arrays)``; `arrays` already holds the metadata under META_KEY."""
    module = getattr(model, "module", model)
    arrays = {f"model/{k}": v for k, v in module.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "step": step,
            "model": {k[len("model/"):]: [list(v.shape), v.dtype.str] for k, v in arrays.items()},
            "optimizer": None if optimizer is None else _encode_optimizer(optimizer, arrays),
            "strategy": _encode_strategy(model),
            "rng": {"default": _rng_state(init._default_generator),
                    "modules": {k: _rng_state(g) for k, g in module_generators(module).items()}},
            "extra": _encode_extra(extra, arrays)}
    arrays[META_KEY] = np.array(json.dumps(meta, default=_plain))
    return meta, arrays


def _encode_optimizer(optimizer, arrays: dict) -> dict:
    saved = optimizer.state_dict()
    state = {}
    for index, entry in saved["state"].items():
        numbers, names = {}, []
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{index}/{name}"] = value
                names.append(name)
            else:
                numbers[name] = value.item() if isinstance(value, np.generic) else value
        state[str(index)] = {"arrays": names, "numbers": numbers}
    return {"type": type(optimizer).__name__, "param_groups": saved["param_groups"], "state": state}


def _encode_strategy(model):
    return model.strategy_state() if hasattr(model, "strategy_state") else None


def _encode_extra(extra, arrays: dict) -> dict:
    if extra is None:
        return {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise TypeError(f"save_checkpoint: extra must be a dict with str keys (got {type(extra).__name__})")
    out = {}
    for name, value in extra.items():
        if isinstance(value, np.random.Generator):
            out[name] = {"kind": "generator", "state": _rng_state(value)}
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"save_checkpoint: extra[{name!r}] is an object array; save numbers")
            arrays[f"extra/{name}"] = value
            out[name] = {"kind": "array"}
        elif hasattr(value, "set_epoch") and hasattr(value, "epoch"):
            out[name] = {"kind": "sampler", "epoch": int(value.epoch)}
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"save_checkpoint: extra[{name!r}] of type {type(value).__name__} cannot be "
                                f"saved ({exc}); use JSON values, arrays, Generators or samplers") from None
            out[name] = {"kind": "json", "value": value}
    return out


# ---- reading and checking --------------------------------------------------------------------
def read_file(path: str) -> tuple[dict, dict]:
    """``(metadata, arrays)`` of the checkpoint at `path`, every array read into memory."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, AttributeError) as exc:
        raise CheckpointError(f"{path!r} is not a readable minidist checkpoint ({type(exc).__name__}: "
                              f"{exc}): it is truncated, corrupt, pickled or not a checkpoint; "
                              "nothing was loaded") from None
    raw = arrays.pop(META_KEY, None)
    try:
        meta = json.loads(str(raw[()]))
        assert meta["format"] == FORMAT and meta["version"] == VERSION
    except Exception:
        raise CheckpointError(f"{path!r} has no valid minidist metadata (array {META_KEY!r}; "
                              f"format {FORMAT!r} version {VERSION}): not a minidist checkpoint") from None
    return meta, arrays


def verify(path: str, loaded: tuple, model, optimizer, extra) -> None:
    """Raise CheckpointError listing every key, shape and dtype that does not match."""
    meta, arrays = loaded
    module = getattr(model, "module", model)
    problems = _model_problems(meta["model"], arrays, module)
    if optimizer is not None:
        problems += _optimizer_problems(meta.get("optimizer"), arrays, optimizer)
    saved_rngs, own_rngs = set(meta["rng"]["modules"]), set(module_generators(module))
    if saved_rngs != own_rngs:
        problems.append(f"module generators differ: the file has {sorted(saved_rngs)}, "
                        f"the model has {sorted(own_rngs)}")
    for name, value in (extra or {}).items():
        if name not in meta["extra"]:
            problems.append(f"extra[{name!r}] is not in the file (it has {sorted(meta['extra'])})")
            continue
        saved, given = meta["extra"][name]["kind"], _restorable_kind(value)
        if saved in ("generator", "sampler") and given != saved:
            problems.append(f"extra[{name!r}] was saved as a {saved}, but a {given or type(value).__name__} "
                            "was passed to restore it into")
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not match:\n  " + "\n  ".join(problems)
                              + "\nbuild the model and optimizer the checkpoint was saved from")


def _model_problems(saved: dict, arrays: dict, module) -> list:
    own = module._state_tensors()
    problems = [f"missing key {k!r} (the model has it, the file does not)" for k in own if k not in saved]
    problems += [f"unexpected key {k!r} (in the file, not in the model)" for k in saved if k not in own]
    for key, (shape, dtype) in saved.items():
        array = arrays.get(f"model/{key}")
        if array is None or list(array.shape) != shape or array.dtype.str != dtype:
            problems.append(f"array 'model/{key}' is missing or not the {tuple(shape)} {dtype} it should be")
        elif key in own and (own[key].data.shape != array.shape or own[key].data.dtype != array.dtype):
            problems.append(f"{key!r}: the file has shape {array.shape} dtype {array.dtype}, the model has "
                            f"shape {own[key].data.shape} dtype {own[key].data.dtype}")
    return problems


def _optimizer_problems(saved, arrays: dict, optimizer) -> list:
    if saved is None:
        return ["the file holds no optimizer state (saved with optimizer=None)"]
    if saved["type"] != type(optimizer).__name__:
        return [f"the optimizer is {type(optimizer).__name__}, the file's is {saved['type']}"]
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    own_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != own_sizes:
        return [f"optimizer parameter groups hold {own_sizes} parameters, the file's hold {sizes}"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    problems = []
    for saved_group, own in zip(saved["param_groups"], optimizer.param_groups):
        try:
            optimizer._check_hyperparameters({**own, **saved_group})
        except (TypeError, ValueError) as exc:
            problems.append(f"optimizer hyper-parameters: {exc}")
    for index, entry in saved["state"].items():
        for name in entry["arrays"]:
            array = arrays.get(f"optim/{index}/{name}")
            want = params[int(index)] if int(index) < len(params) else None
            if array is None or want is None or array.shape != want.shape or array.dtype != want.dtype:
                problems.append(f"optimizer state {name!r} of parameter {index}: the file has "
                                f"{None if array is None else (array.shape, str(array.dtype))}, the parameter is "
                                f"{None if want is None else (want.shape, str(want.dtype))}")
    return problems


def restore_rngs(module, saved: dict) -> None:
    if init._default_generator.bit_generator.state["bit_generator"] == saved["default"]["bit_generator"]:
        set_generator_state(init._default_generator, saved["default"])
    else:
        init._default_generator = generator_from_state(saved["default"])
    for name, generator in module_generators(module).items():
        set_generator_state(generator, saved["modules"][name])


def decode_extra(saved: dict, arrays: dict, given) -> dict:
    """The saved `extra`; Generators and samplers in `given` are restored in place."""
    given, out = given or {}, {}
    for name, entry in saved.items():
        kind, target = entry["kind"], given.get(name)
        if kind == "array":
            out[name] = arrays[f"extra/{name}"]
        elif kind == "json":
            out[name] = entry["value"]
        elif kind == "generator" and isinstance(target, np.random.Generator):
            set_generator_state(target, entry["state"])
            out[name] = target
        elif kind == "generator":
            out[name] = generator_from_state(entry["state"])
        elif target is not None:  # a sampler
            target.set_epoch(entry["epoch"])
            out[name] = target
        else:
            out[name] = entry["epoch"]
    return out


def _restorable_kind(value) -> str | None:
    """What `extra` restores in place: "generator", "sampler", or None (anything else)."""
    if isinstance(value, np.random.Generator):
        return "generator"
    return "sampler" if hasattr(value, "set_epoch") and hasattr(value, "epoch") else None
