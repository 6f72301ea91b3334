"""PyTorch CPU reference for resid's small GPT: same model, data, batch and
optimizer as `resid train` (crates/resid-lm), for a tokens/s comparison.

Model: pre-LayerNorm GPT, learned positions, attention q/k/v/o without bias,
MLP up/down with bias, GELU (erf), final LayerNorm, head with bias (tied to the
token embedding when --tied). Init: N(0, 0.02), attn.o / mlp.down scaled by
1/sqrt(2 n_layer). AdamW(betas 0.9/0.95, eps 1e-8), weight decay on 2-D
tensors only, linear warmup then cosine to 0, global-norm clip. Batches: random
windows of the first 90% of the corpus (byte tokens); held-out: consecutive
non-overlapping windows of the last 10%.

Usage: bench/.venv-torch/bin/python bench/torch_ref/gpt_ref.py --preset tiny --steps 900 --threads 2
"""
import argparse, gzip, json, math, os, time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # byte-level shapes; "paper" here is the study's shape with the byte vocabulary
    "tiny": dict(vocab=256, n_layer=4, n_head=4, d=128, d_ff=512, ctx=128, tied=False,
                 batch=32, steps=900, lr=1e-3, warmup=50),
    "paper": dict(vocab=256, n_layer=8, n_head=8, d=256, d_ff=1024, ctx=512, tied=True,
                  batch=16, steps=5000, lr=6e-4, warmup=200),
}


class Block(nn.Module):
    def __init__(s, d, h, f):
        super().__init__()
        s.h = h
        s.ln1, s.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        s.q, s.k, s.v, s.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        s.up, s.down = nn.Linear(d, f), nn.Linear(f, d)

    def forward(s, x):
        b, t, d = x.shape
        h = s.ln1(x)
        q, k, v = (w(h).view(b, t, s.h, d // s.h).transpose(1, 2) for w in (s.q, s.k, s.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + s.o(y.transpose(1, 2).reshape(b, t, d))
        return x + s.down(F.gelu(s.up(s.ln2(x))))


class Gpt(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.tok_emb = nn.Embedding(c["vocab"], c["d"])
        s.pos_emb = nn.Embedding(c["ctx"], c["d"])
        s.blocks = nn.ModuleList(Block(c["d"], c["n_head"], c["d_ff"]) for _ in range(c["n_layer"]))
        s.ln_f = nn.LayerNorm(c["d"])
        s.tied = c["tied"]
        if s.tied:
            s.head_bias = nn.Parameter(torch.zeros(c["vocab"]))
        else:
            s.head = nn.Linear(c["d"], c["vocab"])
        for n, p in s.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c["n_layer"]) if n.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" in n and n.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(s, idx, tgt):
        b, t = idx.shape
        x = s.tok_emb(idx) + s.pos_emb.weight[:t]
        for blk in s.blocks:
            x = blk(x)
        x = s.ln_f(x)
        logits = x @ s.tok_emb.weight.T + s.head_bias if s.tied else s.head(x)
        return F.cross_entropy(logits.view(b * t, -1), tgt.reshape(-1))


def lr_at(step, lr, warmup, total):
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-tokens", type=int, default=10**9)
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(__file__), "../../data/shakespeare-complete.txt.gz"))
    ap.add_argument("--json")
    a = ap.parse_args()
    c = dict(PRESETS[a.preset])
    if a.steps:
        c["steps"] = a.steps
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    raw = gzip.open(a.corpus).read()
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    cut = len(data) - len(data) // 10
    tr, ho = data[:cut], data[cut:]
    m = Gpt(c)
    decay = [p for p in m.parameters() if p.dim() == 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(0.9, 0.95), eps=1e-8)
    B, T = c["batch"], c["ctx"]
    g = torch.Generator().manual_seed(a.seed)

    def heldout():
        m.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            nw = min((len(ho) - 1) // T, -(-a.eval_tokens // T))
            for w0 in range(0, nw, 16):
                rows = range(w0, min(nw, w0 + 16))
                x = torch.stack([ho[r * T:r * T + T] for r in rows])
                y = torch.stack([ho[r * T + 1:r * T + T + 1] for r in rows])
                tot += m(x, y).item() * x.numel()
                n += x.numel()
        m.train()
        return tot / n

    n_params = sum(p.numel() for p in m.parameters())
    curve = []
    t0 = time.time()
    for step in range(c["steps"]):
        for gr in opt.param_groups:
            gr["lr"] = lr_at(step, c["lr"], c["warmup"], c["steps"])
        ix = torch.randint(0, len(tr) - T - 1, (B,), generator=g)
        x = torch.stack([tr[i:i + T] for i in ix])
        y = torch.stack([tr[i + 1:i + T + 1] for i in ix])
        loss = m(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step == 0:
            t_first = time.time() - t0  # the first step warms up; steady rate excludes it
        if (step + 1) % 50 == 0 or step == 0:
            el = time.time() - t0
            curve.append(dict(step=step + 1, loss=loss.item(), seconds=el,
                              tokens_per_s=(step + 1) * B * T / el))
            print(json.dumps(curve[-1]), flush=True)
    secs = time.time() - t0
    h = heldout()
    out = dict(preset=a.preset, params=n_params, threads=a.threads, torch=torch.__version__,
               steps=c["steps"], batch=B, context=T, seconds=secs,
               tokens_per_s=c["steps"] * B * T / secs,
               steady_tokens_per_s=(c["steps"] - 1) * B * T / max(secs - t_first, 1e-9),
               heldout_nats_per_byte=h, curve=curve)
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
