"""--accumulate N: N micro-batches per optimizer step give the step of their union.

What the equivalence tests fix: the batches (one seeded set of 32 token sequences of different lengths
with labels, the micro-batches its four consecutive slices of 8), dropout (off: the model in eval
mode), the initial weights (one seeded tiny BERT copied for each run), the optimizer (plain SGD, no
clipping: AdamW's normalised update and clipping would hide a gradient N times too large) and the LR
schedule (warm-up then linear decay over the run's optimizer steps). With those fixed, batch 32 and
4 x 8 differ only in the order of the floating-point sums, so the weights must agree to fp32 rounding
(1e-5 here, with steps that move them by more than 1e-2).
"""
import copy

import pytest
import torch

from minbert import BertModel
from training.multitask import recipe, options
from training import run_multitask
from training.engine.distributed import World
from training.engine.loop import Loop, Phase, Player, Precision, Report, fit
from training.engine.optim import warmup_linear

B, N, STEPS, TOL = 32, 4, 3, 1e-5


class TwoHeads(torch.nn.Module):
    """A tiny BERT and two task heads on its [CLS] vector."""

    def __init__(self, encoder: BertModel):
        super().__init__()
        self.encoder = encoder
        self.heads = torch.nn.ModuleList([torch.nn.Linear(encoder.config.hidden_size, 5) for _ in range(2)])

    def forward(self, k: int, ids, mask):
        h = self.encoder(ids, mask, torch.zeros_like(ids))["last_hidden_state"][:, 0]  # (B, C) [CLS]
        return self.heads[k](h)  # (B, 5)


@pytest.fixture(scope="module")
def base(tiny_checkpoint):
    torch.manual_seed(0)
    return TwoHeads(BertModel.from_pretrained(tiny_checkpoint))


def fixed_batches(seed: int):
    """STEPS full batches of B examples: token ids (B, T), a mask with lengths 3..T, labels (B,)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        ids = torch.randint(1000, 2000, (B, 12), generator=g)  # (B, T)
        lengths = torch.randint(3, 13, (B,), generator=g)
        mask = (torch.arange(12)[None, :] < lengths[:, None]).long()  # (B, T)
        out.append((ids * mask, mask, torch.randint(0, 5, (B,), generator=g)))
    return out


def train(base, batch: int, accumulate: int, pcgrad: bool = False, world: World = World(), no_sync=None):
    """STEPS optimizer steps of the loop on the fixed batches, micro-batches of `batch`; the final weights
    and the LR of every step."""
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    player = Player(opt, warmup_linear(opt, 1, STEPS), list(model.parameters()))
    data = {k: fixed_batches(k) for k in range(2)}  # task k's batches
    drawn = {k: 0 for k in range(2)}  # micro-batches drawn per task

    def losses(step_tasks):
        out = {}
        for t in step_tasks:
            k = int(t)
            i = drawn[k]
            ids, mask, y = data[k][i * batch // B]
            part = slice(i * batch % B, i * batch % B + batch)
            drawn[k] += 1
            out[t] = torch.nn.functional.cross_entropy(model(k, ids[part], mask[part]), y[part])
        return out

    lrs = []
    tasks = {"0": STEPS, "1": STEPS} if pcgrad else {"0": STEPS}
    own = [list(h.parameters()) for h in model.heads]
    pc = (list(model.encoder.parameters()), own, torch.Generator().manual_seed(0)) if pcgrad else None
    precision = Precision(accumulate=accumulate, **({"no_sync": no_sync} if no_sync else {}))
    fit(Loop(model, [player], [Phase("p", tasks, STEPS)], losses, train_mode=model.eval, pcgrad=pc,
             clip=0, world=world, precision=precision, report=Report(say=lambda *a: None),
             on_step=lambda step, values: lrs.append(opt.param_groups[0]["lr"])))
    return model.state_dict(), lrs


def assert_close(a: dict, b: dict, tol: float = TOL):
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < tol, f"the weights differ by {worst}"


def moved(base, sd) -> float:
    return max((sd[k] - v).abs().max().item() for k, v in base.state_dict().items())


def test_four_micro_batches_of_8_equal_one_batch_of_32(base):
    full, full_lrs = train(base, B, 1)
    acc, acc_lrs = train(base, B // N, N)
    assert moved(base, full) > 1e-2, "training should move the weights"
    assert acc_lrs == full_lrs, "the LR schedule counts optimizer steps"
    assert_close(full, acc)
    small, _ = train(base, B // N, 1)  # batch 8 alone: a different run, far outside the tolerance
    assert max((small[k] - full[k]).abs().max().item() for k in full) > 100 * TOL


def test_pcgrad_accumulates_each_task_and_projects_once_at_the_full_batch(base):
    full, _ = train(base, B, 1, pcgrad=True)
    acc, _ = train(base, B // N, N, pcgrad=True)
    assert moved(base, full) > 1e-2
    assert_close(full, acc)


def test_ddp_and_distributed_pcgrad_reduce_once_per_optimizer_step(base, monkeypatch):
    """The micro-batches before the last run under no_sync (no DDP all-reduce); distributed PCGrad
    all-reduces its summed task gradients once per optimizer step. Two ranks are simulated: every
    all_reduce sums two identical shards (x 2), so the result must equal one process."""
    calls = []

    def all_reduce(t, *a, **k):
        calls.append(t.numel())
        t.mul_(2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    entered = []

    class NoSync:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    single, _ = train(base, B // N, N, pcgrad=True)
    two, _ = train(base, B // N, N, pcgrad=True, world=World(0, 2), no_sync=NoSync)
    assert_close(single, two, 1e-6)
    n_params = sum(p.numel() for p in base.parameters())
    gradient_reductions = [n for n in calls if n >= n_params // 2]  # agree() reduces a few scalars
    assert len(gradient_reductions) == STEPS, f"one gradient all-reduce per optimizer step, got {len(calls)} calls"
    assert len(entered) == STEPS * (N - 1), "no_sync around every micro-batch but the last"


def test_run_multitask_accumulate_keeps_the_epoch_and_counts_optimizer_steps(tiny_checkpoint, tmp_path, monkeypatch):
    """--batch-size 2 --accumulate 2 has the optimizer steps, schedule and examples per epoch of
    --batch-size 4, and each optimizer step draws 2 micro-batches."""
    from reliability_cases import FIXTURE_DATA, base_argv

    def argv(*extra):
        return base_argv(tiny_checkpoint, FIXTURE_DATA, tmp_path / "run") + ["--epochs", "2", *extra]
    four = recipe.build(options.parse_args(argv("--batch-size", "4")))
    two = recipe.build(options.parse_args(argv("--batch-size", "2", "--accumulate", "2")))
    assert two.n_batches == four.n_batches and two.total_steps == four.total_steps
    assert [two.player.sched.lr_lambdas[0](s) for s in range(two.total_steps)] == [
        four.player.sched.lr_lambdas[0](s) for s in range(four.total_steps)]
    draws = []
    real_loss = run_multitask.tasks.task_loss

    def task_loss(t, a):
        draws.append(t)
        return real_loss(t, a)
    monkeypatch.setattr(run_multitask.tasks, "task_loss", task_loss)
    result = run_multitask.main(argv("--batch-size", "2", "--accumulate", "2"))
    steps = result["history"][-1]["step"]
    assert steps == two.total_steps and len(draws) == 2 * steps


def test_two_process_torchrun_with_accumulate_matches_one_process(tmp_path):
    """Real DDP (gloo, 2 processes, batch 2, --accumulate 2) against one process (batch 4, --accumulate 2):
    each micro-batch is the same global batch of 4 in both, so the weights must agree to 1e-6. The run
    has PCGrad epochs (task gradients summed, all-reduced once per optimizer step by hand) and sst epochs
    through DDP (no_sync on the first micro-batch): a reduction missed or doubled, or PCGrad projecting
    before the sum, breaks the equality. (A reduction per micro-batch would not: the sum is linear; that
    the reductions happen once per optimizer step is the test above's.)"""
    from reliability_cases import FIXTURE_DATA, base_argv, make_tiny_checkpoint
    from test_distributed import MODE, assert_same_weights, torchrun

    ckpt = make_tiny_checkpoint(tmp_path / "tiny", dropout=0.0)
    single = tmp_path / "single"
    run_multitask.main(base_argv(ckpt, FIXTURE_DATA, single) + MODE + ["--batch-size", "4", "--accumulate", "2"])
    p = torchrun(ckpt, tmp_path / "ddp", "--accumulate", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert_same_weights(single, tmp_path / "ddp")
