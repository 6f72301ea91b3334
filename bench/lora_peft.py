"""resid extract-lora checked by PEFT itself, beside mergekit-extract-lora and
resid's own lossy file at the same bytes.

A tiny Llama-style model is built by transformers (config written here),
fine-tuned for a few Adam steps on fixed random tokens (every weight
changes, densely), and saved as base/ and trained/. Then:

1. `resid extract-lora --rank R` writes an adapter; PEFT loads it
   (PeftModel.from_pretrained) and merges it (merge_and_unload). The merged
   weights must equal base + the rank-R truncated SVD of each residual,
   computed here with torch.linalg.svd (max abs difference printed).
2. mergekit-extract-lora (when mergekit is installed) at the same rank.
3. `resid pack --bits-per-param B`, with B chosen so the file has the
   adapter's bytes, unpacked and compared the same way.

Every method's error is measured here, the same way: the relative Frobenius
error of the rebuilt residual over all 2-D weights, and the largest
difference of the logits from the trained model's on fixed inputs.

4. A tiny GPT-2 (GPT2LMHeadModel from a config written here), whose blocks
   are transformers' Conv1D (weights stored (in, out)): resid extract-lora
   must find that out (config.json's model_type), write `fan_in_fan_out:
   true` with factors PEFT loads without a warning, and PEFT's merge must
   equal base + truncated SVD; the same adapter forced to nn.Linear
   orientation (`--fan-in-fan-out false`) must be refused by PEFT.

Usage: bench/.venv-hf/bin/python bench/lora_peft.py [--rank 8] [--resid PATH]
(bench/lora.sh runs it with the venv bench/setup-hf.sh makes.)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

torch.manual_seed(0)


def build_pair(out, steps):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(os.path.join(out, "base"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (8, 32), generator=g)
    for _ in range(steps):
        loss = model(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(os.path.join(out, "trained"))
    return float(loss.detach())


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def logits(folder_or_model, ids):
    from transformers import AutoModelForCausalLM

    m = folder_or_model
    if isinstance(m, str):
        m = AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m(input_ids=ids).logits


def rel_error(approx, base, trained):
    """||(approx - base) - (trained - base)|| / ||trained - base|| over 2-D weights."""
    num = den = 0.0
    for k, t in trained.items():
        if t.ndim != 2:
            continue
        r = t.double() - base[k].double()
        a = approx[k].double() - base[k].double()
        num += float(((a - r) ** 2).sum())
        den += float((r**2).sum())
    return (num / den) ** 0.5


def run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return time.perf_counter() - t0, p


def gpt2_check(a):
    """Part 4: extract-lora on a Conv1D model, loaded and merged by PEFT."""
    import warnings

    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel

    out = os.path.join(a.out, "gpt2")
    cfg = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    b, t = os.path.join(out, "base"), os.path.join(out, "trained")
    model.save_pretrained(b)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(3))
    for _ in range(a.steps):
        loss = model(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(t)
    base, trained = weights(b), weights(t)
    ad = os.path.join(out, "resid-lora")
    ej = os.path.join(out, "extract.json")
    run([a.resid, "extract-lora", "--base", b, "--trained", t, "--rank", str(a.rank),
         "-o", ad, "--json", ej, "-q"])
    rep = json.load(open(ej))
    acfg = json.load(open(os.path.join(ad, "adapter_config.json")))
    assert rep["fan_in_fan_out"] and acfg["fan_in_fan_out"] is True, (rep["layout"], acfg)
    kinds = {}
    for l in rep["layers"]:
        kinds[l["kind"]] = kinds.get(l["kind"], 0) + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = GPT2LMHeadModel.from_pretrained(b, dtype=torch.float32)
        merged_model = PeftModel.from_pretrained(m, ad).merge_and_unload()
    fifo = [str(w.message) for w in caught if "fan_in_fan_out" in str(w.message)]
    assert not fifo, f"PEFT corrected the orientation: {fifo}"
    merged = {k: v.detach() for k, v in merged_model.state_dict().items()}
    adapted = {l["tensor"] for l in rep["layers"]}
    worst = 0.0
    for k, bw in base.items():
        want = bw.double()
        if k in adapted:
            r = trained[k].double() - bw.double()
            u, sv, vh = torch.linalg.svd(r, full_matrices=False)
            want = want + (u[:, : a.rank] * sv[: a.rank]) @ vh[: a.rank]
        worst = max(worst, float((merged[k].double() - want).abs().max()))
    assert worst < 1e-5, f"GPT-2: PEFT's merge is {worst} from the truncated SVD"
    # resid's own reader on the written adapter: the energy PEFT's merge adds.
    aj = os.path.join(out, "analyze-adapter.json")
    run([a.resid, "analyze", "--base", b, "--adapter", ad, "--json", aj, "-q"])
    rworst = 0.0
    for rec in json.load(open(aj))["tensors"]:
        k = rec["name"]
        e = float(((merged[k].double() - base[k].double()) ** 2).sum())
        rworst = max(rworst, abs(rec["energy"] - e) / e)
    assert rworst < 1e-4, rworst
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(4))
    dl = float((logits(merged_model, ids) - logits(t, ids)).abs().max())
    # The same residual with nn.Linear factors: PEFT must not take it.
    lin = os.path.join(out, "resid-lora-linear")
    run([a.resid, "extract-lora", "--base", b, "--trained", t, "--rank", str(a.rank),
         "-o", lin, "--fan-in-fan-out", "false", "-q"])
    try:
        PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(b, dtype=torch.float32), lin)
        refused = "LOADED (wrong orientation not caught)"
    except Exception as e:  # PEFT raises a size-mismatch RuntimeError
        refused = f"refused: {type(e).__name__}"
    print(f"GPT-2 ({sum(v.numel() for v in trained.values())} params, {a.steps} Adam steps): "
          f"extract-lora detected '{rep['layout']}'; {len(adapted)} layers {kinds}; "
          f"PEFT merged it with no fan_in_fan_out correction: max |merged - (base + truncated SVD)| = "
          f"{worst:.3e}; resid analyze --adapter energy within {rworst:.2e}; "
          f"relative residual error {rel_error(merged, base, trained):.4f}, max |dlogit| {dl:.4e}; "
          f"adapter {os.path.getsize(os.path.join(ad, 'adapter_model.safetensors'))} bytes; "
          f"the nn.Linear-oriented adapter: {refused}")
    assert refused.startswith("refused")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="bench/out/lora")
    ap.add_argument("--resid", default=os.environ.get("RESID", "target/debug/resid"))
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    loss = build_pair(a.out, a.steps)
    b, t = os.path.join(a.out, "base"), os.path.join(a.out, "trained")
    base, trained = weights(b), weights(t)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(2))
    want_logits = logits(t, ids)
    n_params = sum(v.numel() for v in trained.values())
    print(f"pair: {n_params} params, fine-tuned {a.steps} Adam steps (last loss {loss:.3f})")
    rows = []

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    # 0. An adapter PEFT itself writes (rsLoRA, a rank pattern, an alpha
    # pattern, an embedding LoRA, a head in modules_to_save, random B so that
    # ΔW != 0): resid analyze --adapter must see the ΔW PEFT's merge adds.
    model = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
    pcfg = LoraConfig(r=4, lora_alpha=8, use_rslora=True,
                      target_modules=["q_proj", "k_proj", "v_proj", "down_proj", "embed_tokens"],
                      rank_pattern={"k_proj": 2}, alpha_pattern={"down_proj": 3},
                      modules_to_save=["lm_head"])
    pm = get_peft_model(model, pcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            # PEFT starts linear B and embedding A at zero.
            if "lora_B" in n or "lora_embedding_A" in n:
                p.copy_(torch.randn_like(p) * 0.05)
            if "modules_to_save" in n:
                p.add_(torch.randn_like(p) * 0.01)
    pad = os.path.join(a.out, "peft-adapter")
    pm.save_pretrained(pad)
    pmerged = {k: v.detach() for k, v in pm.merge_and_unload().state_dict().items()}
    aj = os.path.join(a.out, "analyze-adapter.json")
    run([a.resid, "analyze", "--base", b, "--adapter", pad, "--json", aj, "-q"])
    arep = json.load(open(aj))
    worst = 0.0
    for rec in arep["tensors"]:
        k = rec["name"]
        want = float(((pmerged[k].double() - base[k].double()) ** 2).sum())
        if want == 0.0:
            sys.exit(f"{k}: resid measured energy {rec['energy']:.3e}, PEFT's merge left it unchanged")
        worst = max(worst, abs(rec["energy"] - want) / want)
    changed = [k for k in base if not torch.equal(pmerged[k], base[k])]
    print(f"PEFT-written adapter: resid analyze --adapter measured {len(arep['tensors'])} tensors "
          f"(PEFT's merge changed {len(changed)}); largest relative energy difference {worst:.2e}")
    assert sorted(changed) == sorted(r["name"] for r in arep["tensors"])
    assert worst < 1e-4

    # 1. resid extract-lora, loaded and merged by PEFT.

    ad = os.path.join(a.out, "resid-lora")
    secs, _ = run([a.resid, "extract-lora", "--base", b, "--trained", t, "--rank", str(a.rank),
                   "-o", ad, "--json", os.path.join(a.out, "extract.json"), "-q"])
    rep = json.load(open(os.path.join(a.out, "extract.json")))
    model = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
    merged_model = PeftModel.from_pretrained(model, ad).merge_and_unload()
    merged = {k: v.detach() for k, v in merged_model.state_dict().items()}
    # The expectation, independently: base + rank-R truncated SVD of each residual.
    worst = 0.0
    adapted = {l["tensor"] for l in rep["layers"]}
    for k, bw in base.items():
        if k in adapted:
            r = trained[k].double() - bw.double()
            u, s, vh = torch.linalg.svd(r, full_matrices=False)
            want = bw.double() + (u[:, : a.rank] * s[: a.rank]) @ vh[: a.rank]
        else:
            want = bw.double()
        worst = max(worst, float((merged[k].double() - want).abs().max()))
    adapter_bytes = os.path.getsize(os.path.join(ad, "adapter_model.safetensors"))
    print(f"PEFT merged resid's adapter: max |merged - (base + truncated SVD)| = {worst:.3e} "
          f"over {len(adapted)} adapted tensors")
    assert worst < 1e-5, "PEFT's merge does not match the truncated SVD"
    rows.append(("resid extract-lora", adapter_bytes, rel_error(merged, base, trained),
                 float((logits(merged_model, ids) - want_logits).abs().max()), secs))

    same_bytes = [adapter_bytes]
    # 2. mergekit-extract-lora at the same rank, when installed.
    mk = shutil.which("mergekit-extract-lora", path=os.path.dirname(sys.executable))
    if mk:
        mad = os.path.join(a.out, "mergekit-lora")
        try:
            secs, _ = run([mk, "--model", t, "--base-model", b, "--out-path", mad,
                           "--max-rank", str(a.rank), "--device", "cpu"])
            model = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
            mm = PeftModel.from_pretrained(model, mad).merge_and_unload()
            mw = {k: v.detach() for k, v in mm.state_dict().items()}
            mbytes = sum(os.path.getsize(os.path.join(mad, f)) for f in os.listdir(mad)
                         if f.endswith(".safetensors"))
            rows.append(("mergekit-extract-lora", mbytes, rel_error(mw, base, trained),
                         float((logits(mm, ids) - want_logits).abs().max()), secs))
            same_bytes.append(mbytes)
        except SystemExit as e:
            print(f"mergekit-extract-lora failed: {e}")
    else:
        print("mergekit is not installed in this venv: no mergekit row")

    # 3. resid's own lossy file at each adapter's bytes.
    for nbytes in same_bytes:
        bpp = nbytes * 8 / n_params
        f = os.path.join(a.out, f"same-bytes-{nbytes}.resid")
        secs, _ = run([a.resid, "pack", "--base", b, "--trained", t, "--bits-per-param",
                       f"{bpp:.6f}", "-o", f, "-q"])
        u = os.path.join(a.out, f"unpacked-{nbytes}")
        run([a.resid, "unpack", "--base", b, f, "-o", u, "-q"])
        uw = load_file(os.path.join(u, "model.safetensors"))
        rows.append((f"resid pack --bits-per-param {bpp:.3f}", os.path.getsize(f),
                     rel_error(uw, base, trained),
                     float((logits(u, ids) - want_logits).abs().max()), secs))

    print(f"\nrank {a.rank}; residual error over all 2-D weights; logits vs the trained model's")
    print(f"{'method':<36} {'bytes':>9} {'rel error':>10} {'max |dlogit|':>13} {'s':>6}")
    for name, nbytes, err, dl, secs in rows:
        print(f"{name:<36} {nbytes:>9} {err:>10.4f} {dl:>13.4e} {secs:>6.2f}")
    gpt2_check(a)
    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")


if __name__ == "__main__":
    main()
