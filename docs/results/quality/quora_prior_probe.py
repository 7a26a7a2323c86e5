import sys, numpy as np, torch, argparse, json, time
from heads.multitask_bert import MultitaskBert, read_run
from minbert import Tokenizer
from training.multitask import tasks
from training.multitask.splits import load_split
torch.set_num_threads(1)
run = sys.argv[1]
info = read_run(run); d = info["directory"]
opts = json.loads((d/"options.json").read_text())["options"]
args = argparse.Namespace(**opts); args.data_dir="/work/shared/data"; args.limit_eval=None
tok = Tokenizer.from_pretrained(d); model = MultitaskBert.from_run(d)
ac = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
for split in ("train","dev"):
    enc = load_split(args, tok, "quora", split)
    if split=="train": enc = enc[:4000]
    t=time.time(); ids, out, y = tasks.outputs(model, enc, tok.pad_id, "cpu", "quora", ac)
    np.save(f"/tmp/quora-{split}-logits.npy", np.stack([out, y]))
    print(split, len(y), "pos rate", y.mean(), "acc@0", ((out>0)==y).mean(), f"{time.time()-t:.0f}s")
