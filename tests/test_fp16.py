"""--amp fp16: fp16 autocast with dynamic loss scaling (torch.amp.GradScaler), tested on the CPU, where
torch runs both (emulated: slow, so the runs here are tiny).

- every trainer still learns (tests/test_learning.py's four tests again, each run with --amp fp16
  appended to its command line, and the scaler seen at work);
- an overflow injected into the gradient is the scaler's skip: no update, the scale halves, the step is
  logged as such and never stops the run, while the guard's own skips are counted apart;
- a run killed and resumed under fp16 ends bit-identical to an uninterrupted one, its scale included;
- PCGrad under fp16 matches PCGrad in fp32 on a tiny model within a stated tolerance.
"""
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

import test_learning
from test_learning import (step_losses, task_dir, test_distillation_teachers_and_student_learn,  # noqa: F401
                           test_gan_bert_discriminator_learns, test_multitask_learns_every_task,
                           test_single_task_classifier_learns)
from training.engine import loop as loop_module
from training import run_classifier, run_distill, run_gan, run_multitask
from training.engine.checkpointing import RunFolder
from training.engine.loop import Guard, Loop, Phase, Player, Precision, Report, fit


@pytest.fixture(autouse=True)
def fp16(request, monkeypatch):
    """The learning tests imported above, each trainer's command line + --amp fp16 (argparse: the last
    --amp wins); yields the scale of every GradScaler.update() the run made."""
    if request.function.__module__ != test_learning.__name__:
        yield None
        return
    for module in (run_multitask, run_classifier, run_distill, run_gan):
        real = module.main
        monkeypatch.setattr(module, "main", lambda argv, real=real: real([*argv, "--amp", "fp16"]))
    updates = []
    real_update = torch.amp.GradScaler.update

    def update(self, *a, **k):
        updates.append(self.get_scale())
        return real_update(self, *a, **k)
    monkeypatch.setattr(torch.amp.GradScaler, "update", update)
    yield updates
    assert updates, "the run did not go through the fp16 loss scaler"


# ---- the loop's scaler on a tiny model: a shared trunk and a head per task, plain SGD (AdamW would hide a
# wrongly scaled gradient: its update barely depends on the gradient's scale). The scale starts at 2^10,
# not 2^16: at 2^16 this model's fp16 gradients overflow on their own in the first step ----

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(8, 16)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(16, 1), torch.nn.Linear(16, 1)])
        self.heads[1].load_state_dict(self.heads[0].state_dict())  # equal heads: the tasks' trunk gradients conflict


X = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))  # (B, 8)
TARGETS = [X[:, :4].sum(1), -X[:, :4].sum(1) + 2 * X[:, 4]]  # two nearly opposite tasks, (B,) each


def task_loss(model, k: int, h_hook=None, amp: bool = True) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
        h = torch.relu(model.trunk(X))  # (B, 16)
        if h_hook is not None:
            h.register_hook(h_hook)
        out = model.heads[k](h).float().squeeze(-1)  # (B,)
    return torch.nn.functional.mse_loss(out, TARGETS[k])


def tiny_loop(precision: Precision, losses, steps: int, model=None, pcgrad: bool = False, clip: float = 1.0, **kw):
    """A Loop over `steps` steps of the tiny model; returns (loop, log rows, weights after each step, scales)."""
    model = model or Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    player = Player(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), list(model.parameters()))
    tasks = {"a": steps, "b": steps} if pcgrad else {"a": steps}
    weights, scales = [], []

    def on_step(step, values):
        weights.append([p.detach().clone() for p in model.parameters()])
        scales.append(precision.scaler.get_scale() if precision.scaler else None)

    shared = pcgrad and (list(model.trunk.parameters()), [list(h.parameters()) for h in model.heads],
                         torch.Generator().manual_seed(0))
    class Log:  # log.jsonl in memory: its rows
        rows: list = []

        def write(self, line):
            self.rows.append(json.loads(line))

        def flush(self):
            pass

        def tell(self):
            return 0
    log = Log()
    log.rows = []
    # a run folder for its log (the skip rows); last/ is written into a temporary folder at the end
    folder = RunFolder(Path(tempfile.mkdtemp()), {}, save_every=10**9, log=log)
    loop = Loop(model, [player], [Phase("p", tasks, steps)], lambda t: losses(model, t), on_step=on_step,
                precision=precision, pcgrad=shared or None, clip=clip, guard=Guard(**kw), report=Report(say=lambda *a: None),
                run=folder)
    return fit(loop), log.rows, weights, scales


def test_an_injected_overflow_is_the_scalers_skip_and_halves_the_scale():
    inject, nan = 3, 6  # step 3: an inf in the fp16 activations' gradient; step 6: a NaN loss (the guard's)
    calls = []

    def losses(model, tasks):
        calls.append(1)
        hook = (lambda g: torch.full_like(g, math.inf)) if len(calls) == inject else None
        loss = task_loss(model, 0, hook)
        return {"a": loss * math.nan if len(calls) == nan else loss}

    precision = Precision(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10))
    start = precision.scaler.get_scale()
    result, rows, weights, scales = tiny_loop(precision, losses, 8, on_nonfinite="skip", max_skips=1)
    skips = {r["step"]: r["skipped"] for r in rows if "skipped" in r}
    assert skips == {inject: "fp16 overflow", nan: "non-finite"}, rows
    assert result["overflows"] == 1 and result["step"] == 8  # counted apart: max_skips 1 is not exceeded
    for k in (inject, nan):  # no update at a skipped step (step k's weights are weights[k - 1])
        assert all(torch.equal(a, b) for a, b in zip(weights[k - 1], weights[k - 2])), k
    for k in range(2, 9):
        if k not in (inject, nan):  # every other step moved the weights
            assert not all(torch.equal(a, b) for a, b in zip(weights[k - 1], weights[k - 2])), k
    backoff = precision.scaler.get_backoff_factor()
    assert scales[:inject - 1] == [start] * (inject - 1)
    assert scales[inject - 1] == start * backoff, "an overflow must back the scale off"
    assert rows[[r.get("skipped") for r in rows].index("fp16 overflow")]["scale"] == start


def test_an_overflow_never_stops_a_run_that_stops_on_nonfinite_values():
    calls = []

    def losses(model, tasks):
        calls.append(1)
        return {"a": task_loss(model, 0, (lambda g: torch.full_like(g, math.inf)) if len(calls) == 2 else None)}

    result, rows, _, _ = tiny_loop(Precision(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)), losses, 4, on_nonfinite="stop")
    assert result["step"] == 4 and result["overflows"] == 1
    with pytest.raises(SystemExit, match="not finite"):  # without the scaler, the same inf is the guard's: stop
        tiny_loop(Precision(), lambda m, t: {"a": task_loss(m, 0, (lambda g: torch.full_like(g, math.inf)))}, 4,
                  on_nonfinite="stop")


def test_fp16_updates_equal_fp32_ones_with_clipping_on_the_unscaled_gradients():
    """One step each: the fp16 update (after unscaling and clipping to 0.5) is the fp32 one to fp16's
    rounding; clipping the scaled gradients would shrink it by the scale (65536)."""
    moved = {}
    for name, precision, amp in (("fp16", Precision(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)), True), ("fp32", Precision(), False)):
        model = Tiny()
        before = [p.detach().clone() for p in model.parameters()]
        _, _, weights, _ = tiny_loop(precision, lambda m, t: {"a": task_loss(m, 0, amp=amp)}, 1, model=model, clip=0.5)
        moved[name] = torch.cat([(w - b).reshape(-1) for w, b in zip(weights[0], before)])
    assert moved["fp32"].norm() > 1e-3, "the step must move the weights"
    assert torch.allclose(moved["fp16"], moved["fp32"], rtol=1e-2, atol=1e-2 * moved["fp32"].abs().max().item())


def test_pcgrad_under_fp16_matches_fp32_within_fp16_rounding():
    """10 PCGrad steps on two conflicting tasks: the fp16 weights (both tasks' gradients under one loss
    scale) stay within 1% of the distance fp32 training moved them; plain summed gradients (no
    projection) end much further away, so the tolerance tells PCGrad from no PCGrad."""
    def losses(amp):
        return lambda model, tasks: {t: task_loss(model, k, amp=amp) for k, t in enumerate(tasks)}

    end, start = {}, [p.detach().clone() for p in Tiny().parameters()]
    for name, precision, amp, pc in (("fp16", Precision(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)), True, True),
                                     ("fp32", Precision(), False, True), ("sum", Precision(), False, False)):
        model = Tiny()
        if pc:
            _, _, weights, _ = tiny_loop(precision, losses(amp), 10, model=model, pcgrad=True, clip=0)
        else:  # both tasks every step, their gradients summed
            _, _, weights, _ = tiny_loop(precision, lambda m, t: {"ab": task_loss(m, 0, amp=False)
                                                                  + task_loss(m, 1, amp=False)}, 10, model=model,
                                         clip=0)
        end[name] = torch.cat([w.reshape(-1) for w in weights[-1]])
    travelled = (end["fp32"] - torch.cat([s.reshape(-1) for s in start])).norm()
    assert (end["fp16"] - end["fp32"]).norm() < 0.01 * travelled
    assert (end["sum"] - end["fp32"]).norm() > 0.1 * travelled, "the tasks must conflict for the test to mean anything"


def test_an_fp16_run_stopped_and_resumed_ends_bit_identical_its_scale_included(tmp_path, monkeypatch):
    """run_multitask under fp16 (PCGrad: both tasks' losses scaled, so the skips depend on the scale),
    stopped (Ctrl-C) after its checkpoint of step 4 and resumed, against one never stopped: the same
    weights, optimizer, loss scale, logs and predictions, bit for bit. The tiny model's gradients overflow
    the starting scale (2^16), so the saved scale differs from a fresh scaler's: a resume that forgot it
    would skip other steps."""
    from reliability_cases import FIXTURE_DATA, base_argv, make_tiny_checkpoint
    from test_resume import assert_same, outcome
    from training.engine import checkpointing, memory

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", dropout=0.1)
    argv = lambda out, *extra: base_argv(ckpt, FIXTURE_DATA, out) + [  # noqa: E731
        "--epochs", "3", "--save-every", "2", "--amp", "fp16", "--pcgrad", *extra]
    run_multitask.main(argv(tmp_path / "whole"))
    whole = outcome(tmp_path / "whole")
    real_release = memory.release

    def release(step=None):  # Ctrl-C just after the step after the checkpoint of step 4
        if step == 5:
            raise KeyboardInterrupt
        return real_release(step)
    monkeypatch.setattr(loop_module.memory, "release", release)
    with pytest.raises(SystemExit) as stop:
        run_multitask.main(argv(tmp_path / "stopped"))
    assert stop.value.code == 130
    monkeypatch.setattr(loop_module.memory, "release", real_release)
    state, _ = checkpointing.load(tmp_path / "stopped" / "last")
    assert state["step"] == 4 and state["scaler"]["scale"] != torch.amp.GradScaler("cpu").get_scale()
    assert state["overflows"] > 0
    run_multitask.main(argv(tmp_path / "stopped", "--resume"))
    assert_same(whole, outcome(tmp_path / "stopped"))
    assert checkpointing.load(tmp_path / "stopped" / "last")[0]["scaler"] == checkpointing.load(
        tmp_path / "whole" / "last")[0]["scaler"]
