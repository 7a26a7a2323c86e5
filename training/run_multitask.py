"""Fine-tune one BERT on three tasks at once: SST-5 sentiment, Quora paraphrase, STS similarity.

    python training/run_multitask.py                  # full default, embedded all-MiniLM-L6-v2, CPU
    python training/run_multitask.py --preset quick   # a few minutes, for a smoke run
    python training/run_multitask.py --resume         # continue a stopped run from runs/multitask/last
    torchrun --nproc-per-node 4 training/run_multitask.py --device cuda   # 4 GPUs (see docs/RELIABILITY.md)
    python training/run_multitask.py --help

Reads the CS224N files (--data-dir or $MINBERT_DATA_DIR, default ../shared/data), evaluates on dev
after every epoch, keeps the best checkpoint by the dev overall score, and writes the course's
prediction files predictions/{sst,para,sts}-{dev,test}-output.csv from that best checkpoint.
Crash-safe checkpoints in out_dir/last/, --resume, and errors for bad input: docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from data.datasets import all_files, find_data_dir
from minbert import CheckpointNotFound
from minbert.safetensors import DiskFullError
from training.engine import checkpointing, distributed
from training.engine.checkpointing import RunFolder
from training.engine.loop import Loop, fit, stop_on_sigterm
from training.engine.profiling import step_profiler
from training.multitask import options, tasks
from training.multitask.recipe import batch_loss, build, dev_score, loop_settings, write_predictions


def parse_args(argv=None):
    """The options (training/multitask/options.py), checked: a bad one exits with a message naming it."""
    return options.parse_args(argv, description=__doc__)


def prepare(args, world):
    """Read and check every input (options, data, checkpoint, resume state) and build the run.
    Nothing is written here, so a bad input leaves no half-made output behind."""
    checkpointing.check_out_dir(args.out_dir, args.predictions_dir, args.resume, args.overwrite)
    find_data_dir(args.data_dir, required=all_files([tasks.TASKS[t].data for t in args.tasks]))  # every missing file
    say = print if world.is_main else (lambda *a, **k: None)
    say(f"loading {args.model} and the data ({', '.join(args.tasks)}) ...")
    run = build(args, world, say)  # its fp16 scaler: --resume restores the scale below
    last = Path(args.out_dir) / "last"

    def restore_streams(state: dict) -> None:
        for t in args.tasks:
            run.streams[t].load_state_dict(state["streams"][t])

    if args.resume and checkpointing.exists(last):
        state = checkpointing.load_last(last, run.model, run.player, {"pcgrad": run.pcgrad_gen}, world, vars(args),
                                        options.RUNTIME_OPTIONS, restore_streams, options.defaults(), run.ema,
                                        run.precision.scaler)
        run = replace(run, state=state)
        say(f"resuming from {last} at step {run.state['step']}")
    elif args.resume:
        say(f"--resume: no checkpoint in {last} yet, starting from the beginning")
    steps = distributed.all_gather_object(run.state.get("step"), world)
    if len(set(steps)) > 1:
        raise checkpointing.TrainingStateError(f"the processes found different checkpoints in {last} (steps {steps}); "
                                               "with several machines --out-dir must be one shared directory")
    return run


def input_error(e: Exception) -> str:
    """The one paragraph a user sees for a bad input, with the fix in this script's terms."""
    msg = str(e).replace("(pass skip_bad=True to drop such rows)",
                         "(fix the row, or pass --skip-bad-rows to drop such rows)")
    if isinstance(e, CheckpointNotFound):
        msg += "; --model takes a checkpoint folder (config.json and the weights), all-MiniLM-L6-v2, or a hub name"
    return f"error: {msg}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    world, args.device = distributed.init(args.device)
    stop_on_sigterm()
    try:
        try:
            run = prepare(args, world)
        except (OSError, ValueError) as e:  # DataError, CheckpointError, TrainingStateError, safetensors, ...
            raise SystemExit(input_error(e)) from None
        return train_and_predict(run, args, world)
    except DiskFullError as e:  # a save did not fit: it left nothing behind, the last whole checkpoint stays
        saved = checkpointing.saved_step(Path(args.out_dir) / "last")
        raise SystemExit(f"error: {e}. The last checkpoint" + (f" (step {saved})" if saved is not None else "")
                         + " is intact: free the space, then run the same command with --resume") from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: checkpoints are written atomically, so the last one is whole
        saved = checkpointing.saved_step(Path(args.out_dir) / "last")
        print("\ninterrupted; to continue, run the same command with --resume"
              + (f" (it starts from step {saved})" if saved is not None else ""), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.cleanup(world)


def train_and_predict(run, args, world) -> dict:
    model, streams, say = run.model, run.streams, run.say
    net = distributed.wrap(model, world, args.device)
    run.precision.no_sync = lambda: distributed.no_sync(net)  # --accumulate: one all-reduce per optimizer step

    def losses(step_tasks: list[str]) -> dict:
        out = {}
        for t in step_tasks:  # one task; with PCGrad every task, differentiated apart (not through DDP)
            batch, weight = next(streams[t])
            out[t] = batch_loss(net if len(step_tasks) == 1 else model, model, t, batch, weight, args)
        return out

    folder = RunFolder(Path(args.out_dir), vars(args), args.save_every, run.state,
                       extra_state=lambda: {"streams": {t: s.state_dict() for t, s in streams.items()}},
                       generators={"pcgrad": run.pcgrad_gen},
                       save_best=lambda d, info: model.save_run(d, run.tok, info["options"], info["dev"], info["epoch"]))
    loop = Loop(model, [run.player], run.phases, losses, lambda: dev_score(model, run.data, args, run.tok.pad_id, say),
                on_step=step_profiler(args.profile, say=say) if args.profile else None, pcgrad=run.pcgrad,
                **loop_settings(args, run.precision, say), world=world, ema=run.ema, run=folder)
    log = checkpointing.open_log(folder, args.overwrite, args.resume) if world.is_main else None
    say(f"{sum(p.numel() for p in run.player.params):,} trainable parameters; {run.total_steps} steps; "
        f"tasks {run.n_batches} batches per epoch" + (f"; {world.world_size} processes" if world.distributed else "")
        + (f"; {args.accumulate} micro-batches per step" if args.accumulate > 1 else ""))
    say(f"time budget: training stops after {args.time_budget:g} min, then the run evaluates and predicts"
        if args.time_budget else "no time budget: the run trains every step (--time-budget MINUTES stops it "
        "earlier); the progress bar shows the time left")
    result = fit(loop)
    history, minutes = result["history"], result["minutes"]
    if not world.is_main:  # rank 0 writes the predictions
        return {"dev": {}, "history": history, "minutes": minutes}
    # ---- predictions from the best checkpoint (fit loaded it), dev and test, in the course's format ----
    final = write_predictions(model, run.data, args, run.tok.pad_id, args.predictions_dir)
    if args.limit_eval:
        print(f"note: --limit-eval {args.limit_eval}: the prediction files cover only part of each split")
    log.write(json.dumps(dict(final="dev", minutes=round(minutes, 2), **final)) + "\n")
    log.close()
    cols = [*args.tasks, "overall"] + (["raw_overall"] if args.ema else [])  # --ema: the raw weights' score too
    width = {k: max(8, len(k)) for k in cols}
    print(f"\n{'epoch':>5} {'phase':>12} " + " ".join(f"{k:>{width[k]}}" for k in cols))
    for h in history:
        print(f"{h['epoch']:>5} {h['phase']:>12} " + " ".join(f"{h.get(k, float('nan')):{width[k]}.4f}" for k in cols))
    print("best dev: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()) + f"   total {minutes:.1f} min")
    out_dir = Path(args.out_dir)
    print(f"predictions in {args.predictions_dir}/, checkpoint in {out_dir}/best/, training state in {out_dir}/last/")
    return {"dev": final, "history": history, "minutes": minutes}


if __name__ == "__main__":
    main()
