"""Refuse library shortcuts while a graded step's test runs (used by the probes, course/probes.py).

Each graded step asks the student to write one computation by hand. While one test of a step runs
(`with refuse_shortcuts(step):`), the library calls that would do that computation wholesale raise
ShortcutRefused, with a message that names the call and the rule:

- step 1 (multi-head self-attention): F.scaled_dot_product_attention by every route (torch.nn.functional,
  torch._C._nn, torch.ops.aten, OpOverload objects) and the aten kernels behind it (any op whose name
  contains scaled_dot_product, flash_attention, efficient_attention or cudnn_attention), flex_attention,
  nn.MultiheadAttention (its forward, F.multi_head_attention_forward, torch._native_multi_head_attention)
  and the fused encoder layer torch._transformer_encoder_layer_fwd.
- step 6 (AdamW): torch.optim.Adam and torch.optim.AdamW (constructing or stepping), every function of
  torch.optim.adam and torch.optim.adamw (adam, adamw, _single_tensor_adam, _multi_tensor_adam,
  _fused_adam ...) and torch's fused Adam and AdamW kernels (torch._fused_adam_ and its twin) by every route.
- every step: transformers and sentence_transformers cannot be imported (a sys.meta_path finder), and
  a test fails if either is in sys.modules when it ends (imported before the guard went up, or by a
  route around the finder).
Everything else is allowed: torch.softmax, torch.matmul, @, torch.einsum, F.linear, F.layer_norm,
F.dropout, torch.zeros_like, the _foreach_ ops, torch.optim.Optimizer as a base class, ...

How: a torch.overrides.TorchFunctionMode sees every torch call (functions, Tensor methods, torch.ops)
made while the guard is up, whatever name or saved reference the student used. It refuses an op by
its name, and for Python-level library code that calls only generic tensor ops (torch.optim.Adam.step
is add_/lerp_/addcdiv_...) it looks up the Python call stack (sys._getframe) for a frame whose code
lives in a refused file (torch/optim/adam.py, adamw.py, torch/nn/attention/flex_attention.py) or is a
refused function (MultiheadAttention.forward). The walk stops at the frame that entered the guard, so
it costs a few frames per op. A refused call that the student's code catches still fails the test
when the guard exits.

What can still get through (the probe's guard_intact() and the exit checks catch the first two when
the change outlives the call; the rest only a reader catches):
- code that pops or bypasses the mode (torch._C.DisableTorchFunction, torch.overrides._pop_mode);
- code run in another thread (the mode stack is per thread) or in another process;
- TorchScript (a torch.jit.script function runs its ops in C++, unseen by the mode), C/C++ extensions
  and ctypes;
- library source copied by hand into the student's files (the finder refuses the import, not the code),
  and transformers loaded by file path under another module name;
- code that inserts its own finder ahead of this one, or deletes transformers from sys.modules again
  before the test ends.
This module contains no implementation of any graded computation: it ships to students.
"""
from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

import torch
import torch.nn.functional as F
import torch.optim.adam as _adam  # torch.optim deletes these names; the modules stay in sys.modules
import torch.optim.adamw as _adamw
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode

RULE = ("a library call that does the step for you (rule: write the step yourself; "
        "torch.softmax, torch.matmul and the like are fine)")
FORBIDDEN_MODULES = ("transformers", "sentence_transformers")


class ShortcutRefused(RuntimeError):
    """A call, import or change that the graded step does not allow."""


class ImportRefused(ShortcutRefused, ImportError):
    """Also an ImportError, so library code that probes for an optional package (try: import ...
    except ImportError) goes on as if the package were missing."""


class Rule:
    """What one step refuses: op names (substrings), whole source files, single functions."""

    def __init__(self, names: tuple[str, ...] = (), files: dict[str, str] | None = None,
                 codes: dict[CodeType, str] | None = None):
        self.names, self.files, self.codes = names, files or {}, codes or {}


def _code(fn) -> CodeType:
    return getattr(fn, "__wrapped__", fn).__code__


# By path, not imported: importing flex_attention pulls in the compiler stack (slow, and not needed).
_FLEX_FILE = os.path.join(os.path.dirname(torch.nn.__file__), "attention", "flex_attention.py")

RULES: dict[int, Rule] = {
    1: Rule(names=("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention",
                   "flex_attention", "multi_head_attention", "_transformer_encoder_layer_fwd"),
            files={_FLEX_FILE: "torch.nn.attention.flex_attention"},
            codes={_code(torch.nn.MultiheadAttention.forward): "torch.nn.MultiheadAttention.forward",
                   _code(F.multi_head_attention_forward): "torch.nn.functional.multi_head_attention_forward"}),
    6: Rule(names=("fused_adam",),  # torch._fused_adam_, its AdamW twin and their overloads
            files={_adam.__file__: "torch.optim.adam", _adamw.__file__: "torch.optim.adamw"}),
}

# How a refused op is named in the message: the public module rather than the binding's.
_MODULE_NAMES = {"torch._C._nn": "torch.nn.functional", "torch._C._VariableFunctions": "torch",
                 "torch._ops.aten": "torch.ops.aten"}


def _describe(func) -> str:
    if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return f"torch.ops.{func}"  # aten.scaled_dot_product_attention.default
    module = getattr(func, "__module__", None) or "torch"
    return f"{_MODULE_NAMES.get(module, module)}.{getattr(func, '__name__', func)}"


def _refusal(step: int, what: str) -> ShortcutRefused:
    return ShortcutRefused(f"step {step} refuses {what}: {RULE}")


class _ImportGuard:
    """A sys.meta_path finder that refuses transformers and sentence_transformers (and submodules)."""

    def find_spec(self, name: str, path=None, target=None):
        if name.partition(".")[0] in FORBIDDEN_MODULES:
            raise ImportRefused(f"importing {name} is refused while the course grades a step: the steps are "
                                f"written by hand, and the graded code never needs transformers")
        return None  # not ours: the next finder looks


_IMPORT_GUARD = _ImportGuard()


def install_import_guard() -> bool:
    """Put the finder first on sys.meta_path (once). True when this call installed it. The runner may
    call it at start-up to keep it for the whole process; refuse_shortcuts installs it for one test."""
    if _IMPORT_GUARD in sys.meta_path:
        return False
    sys.meta_path.insert(0, _IMPORT_GUARD)
    return True


def remove_import_guard() -> None:
    while _IMPORT_GUARD in sys.meta_path:
        sys.meta_path.remove(_IMPORT_GUARD)


def forbidden_loaded() -> list[str]:
    """The forbidden packages (top level) that are in sys.modules."""
    return sorted({k.partition(".")[0] for k in list(sys.modules) if k.partition(".")[0] in FORBIDDEN_MODULES})


class _RefuseMode(TorchFunctionMode):
    """Sees every torch call made while the guard is up; refuses those of the step's rule."""

    def __init__(self, guard: "refuse_shortcuts", rule: Rule):
        super().__init__()
        self.guard, self.rule = guard, rule
        self.seen: dict[str, bool] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        refused = self.seen.get(name)
        if refused is None:  # a few hundred distinct names at most: remember the answer
            refused = self.seen[name] = any(n in name for n in self.rule.names)
        if refused:
            self.guard.refuse(_describe(func))
        if self.rule.files or self.rule.codes:
            self.check_stack(sys._getframe(1))
        return func(*args, **(kwargs or {}))

    def check_stack(self, frame: FrameType | None) -> None:
        # Up to the frame that entered the guard: what lies below it is the grader, not the test.
        # The outermost refused frame names the call the test made (Adam.step, not Adam._init_group).
        files, codes, stop = self.rule.files, self.rule.codes, self.guard.entry
        found = None
        while frame is not None and frame is not stop:
            code = frame.f_code
            if code in codes:
                found = codes[code]
            elif code.co_filename in files:
                found = f"{files[code.co_filename]}.{getattr(code, 'co_qualname', code.co_name)}"
            frame = frame.f_back
        if found is not None:
            self.guard.refuse(found)


_ACTIVE: list["refuse_shortcuts"] = []  # the guards now up, innermost last


class refuse_shortcuts:
    """`with refuse_shortcuts(step):` around one test of graded step `step`. On exit it raises
    ShortcutRefused when the test's code removed the guard, imported transformers, or caught a refusal."""

    def __init__(self, step: int):
        self.step = step
        self.rule = RULES.get(step)
        self.mode: _RefuseMode | None = None
        self.entry: FrameType | None = None
        self.refused: list[str] = []
        self.installed_finder = False
        self.preloaded: list[str] = []

    def refuse(self, what: str) -> None:
        error = _refusal(self.step, what)
        self.refused.append(str(error))
        raise error

    def intact(self) -> bool:
        if _IMPORT_GUARD not in sys.meta_path:
            return False
        if self.mode is None:
            return True
        return (torch._C._is_torch_function_mode_enabled()
                and any(m is self.mode for m in _get_current_function_mode_stack()))

    def __enter__(self) -> "refuse_shortcuts":
        self.entry = sys._getframe(1)
        # Only what the test loads counts: a debugging pytest process may hold transformers already
        # (the runner, a fresh process with the finder installed at start, never does).
        self.preloaded = forbidden_loaded()
        self.installed_finder = install_import_guard()
        if self.rule is not None:  # steps without a rule pay nothing per op
            self.mode = _RefuseMode(self, self.rule)
            self.mode.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        intact = self.intact()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self.mode is not None and any(m is self.mode for m in _get_current_function_mode_stack()):
            # Modes the test pushed on top of ours and left there would outlive it: drop them too.
            while _pop_mode() is not self.mode:
                pass
        if self.installed_finder:
            remove_import_guard()
        self.entry = None  # no reference cycle through the test's frames
        if exc_type is not None and issubclass(exc_type, ShortcutRefused):
            return False  # already the reason the test fails
        loaded = [m for m in forbidden_loaded() if m not in self.preloaded]
        if not intact:
            problem = (f"step {self.step}: the test's code switched off the shortcut guard (its torch "
                       f"function mode or its import finder was removed)")
        elif loaded:
            problem = f"step {self.step}: {', '.join(loaded)} was imported; {RULE}"
        elif self.refused:
            problem = f"{self.refused[0]} (the refusal was caught by the test's code)"
        else:
            return False
        raise ShortcutRefused(problem)


def guard_intact() -> bool:
    """True while the innermost guard is up with its torch function mode on the mode stack (and torch
    function modes enabled) and its import finder on sys.meta_path; False outside any guard."""
    return bool(_ACTIVE) and _ACTIVE[-1].intact()
