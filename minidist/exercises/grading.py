"""What every exercise's grader shares: loading the learner's file, calling the learner's
functions, comparing arrays, and one result per case.

A case either passes or carries its first problem as one sentence: a `Mismatch` names the
quantity, the index, the expected and the learner's value; `NotImplementedYet` names a
function whose body still raises NotImplementedError; `LearnerError` is any other
exception of the learner's code, with its message (never a traceback).
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class Problem(Exception):
    """Why a case failed, as one sentence (the exception's message)."""


class Mismatch(Problem):
    """The learner's `quantity` disagrees with the reference (first bad element)."""

    def __init__(self, quantity: str, detail: str):
        super().__init__(f"{quantity}{detail}")
        self.quantity = quantity


class NotImplementedYet(Problem):
    def __init__(self, function: str):
        super().__init__(f"{function}: not implemented (it still raises NotImplementedError)")
        self.function = function


class LearnerError(Problem):
    """The learner's code raised (or a function is missing)."""


@dataclass
class CaseResult:
    exercise: str
    case: str
    problem: str | None = None          # None: the case passes
    not_implemented: str | None = None  # the function still raising NotImplementedError

    @property
    def passed(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"  pass  {self.case}" if self.passed else f"  FAIL  {self.case}: {self.problem}"


@dataclass
class Graded:
    """One exercise's results, and the functions whose bodies still raise
    NotImplementedError (found by `unimplemented`, whether or not a case reached them)."""
    results: list = field(default_factory=list)
    not_implemented: list = field(default_factory=list)


def unimplemented(module, functions) -> list[str]:
    """The `functions` of `module` that raise NotImplementedError when called with None for
    every required argument (a scaffold's body raises before it looks at them)."""
    names = []
    for name in functions:
        fn = getattr(module, name, None)
        try:
            sig = inspect.signature(fn)
            required = [p for p in sig.parameters.values() if p.default is inspect.Parameter.empty
                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            fn(*[None for p in required if p.kind != p.KEYWORD_ONLY],
               **{p.name: None for p in required if p.kind == p.KEYWORD_ONLY})
        except NotImplementedError:
            names.append(name)
        except Exception:  # implemented (it choked on the None arguments), or not callable
            pass
    return names


def run_case(exercise: str, case: str, body) -> CaseResult:
    """Run `body()` (which raises a Problem on the first disagreement) as one case."""
    try:
        body()
    except NotImplementedYet as e:
        return CaseResult(exercise, case, str(e), e.function)
    except Problem as e:
        return CaseResult(exercise, case, str(e))
    except Exception as e:  # what the learner returned broke the grading itself (odd types)
        return CaseResult(exercise, case, f"could not grade the values returned ({type(e).__name__}: {e})")
    return CaseResult(exercise, case)


def load_solution(path: Path, module_name: str):
    """Import the learner's file `path` as a fresh module (its folder on sys.path while it
    imports, for the learner's own helpers). Raises LearnerError if it does not import."""
    path = Path(path).resolve()
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a learner's SyntaxError, ImportError, ...: one line, no traceback
        raise LearnerError(f"importing {path.name} raised {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def call(module, function: str, *args, **kwargs):
    """``module.function(*args, **kwargs)``, its failures turned into Problems."""
    fn = getattr(module, function, None)
    if not callable(fn):
        raise LearnerError(f"{Path(module.__file__).name} defines no function {function}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet(function) from None
    except Problem:
        raise
    except Exception as e:
        raise LearnerError(f"{function} raised {type(e).__name__}: {e}") from None


def unpack(value, names: tuple[str, ...], function: str):
    """The learner's return value as a tuple of len(names), or a LearnerError saying so."""
    if not isinstance(value, (tuple, list)) or len(value) != len(names):
        raise LearnerError(f"{function} must return a tuple ({', '.join(names)}); "
                           f"got {type(value).__name__}"
                           + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
    return tuple(value)


def _fmt(v) -> str:
    return f"{v:.10g}" if isinstance(v, (float, np.floating)) else str(v)


def compare(quantity: str, expected: np.ndarray, got, *, rtol: float = 1e-6, atol: float = 1e-9,
            hint=None) -> None:
    """Raise a Mismatch naming `quantity` and its first wrong element unless `got` equals
    `expected` (shape, then values to rtol/atol; exact for integers). `hint(got)` may
    return a sentence to append (e.g. "unchanged: update it in place")."""
    expected = np.asarray(expected)
    if got is None:
        raise Mismatch(quantity, " is None: return an array")
    try:
        got = np.asarray(got, dtype=np.float64 if expected.dtype.kind == "f" else None)
    except (TypeError, ValueError) as e:
        raise Mismatch(quantity, f" is not an array of numbers ({type(got).__name__}: {e})") from None
    if got.shape != expected.shape:
        raise Mismatch(quantity, f" has shape {got.shape}, expected {expected.shape}")
    if expected.dtype.kind == "f":
        bad = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    else:
        bad = got != expected
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f" at {list(index)}" if index else ""
    extra = hint(got) if hint is not None else None
    raise Mismatch(quantity, f"{where}: expected {_fmt(expected[index])}, got {_fmt(got[index])}"
                   f" ({int(bad.sum())} of {bad.size} elements differ)" + (f"; {extra}" if extra else ""))
