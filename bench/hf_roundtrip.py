"""Model folders through resid and back into transformers.

For a BERT-style folder (AutoModel) and a Llama-style folder
(AutoModelForCausalLM, saved in several shards), both built by transformers
from tiny configs written here, with a tokenizer built here by `tokenizers`:

- the trained folder is a perturbed copy of the base (BERT: 1% Gaussian noise
  on every weight; Llama: a few Adam steps on fixed random tokens);
- `resid pack --lossless` then `resid unpack` must give a folder whose every
  file is byte-identical to the trained folder's, and `from_pretrained` of it
  must give bit-equal outputs on fixed inputs;
- `resid pack --bits-per-param B` (lossy) then `unpack`: the folder loads and
  the distance of its outputs from the trained model's is measured.
- Added tokens: the Llama fine-tune given 8 more tokens the way transformers
  does it (`resize_token_embeddings`, new rows sampled at the old rows' mean;
  once exactly 8 rows, once padded with `pad_to_multiple_of=64`), embedding
  and head both grown; the file for each, lossless and lossy, beside the
  file for the same fine-tune without them (lossless: byte-identical, logits
  torch.equal).

Usage: bench/.venv-hf/bin/python bench/hf_roundtrip.py [--resid PATH] [--bits 2]
(bench/hf.sh runs it with the venv bench/setup-hf.sh makes.)
"""

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time

import torch


def tokenizer(folder, vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)}
    words["[UNK]"] = vocab - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)


def build(kind, out):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    vocab = 256
    if kind == "bert":
        cfg = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=128, max_position_embeddings=64)
        model = BertModel(cfg)
        shard = "5GB"
    else:
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
        shard = "100KB"  # several shards and an index
    base, trained = os.path.join(out, "base"), os.path.join(out, "trained")
    model.save_pretrained(base, max_shard_size=shard)
    tokenizer(base, vocab)
    g = torch.Generator().manual_seed(1)
    if kind == "bert":
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.01 * p.std().clamp(min=1e-3))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        data = torch.randint(0, vocab, (4, 32), generator=g)
        for _ in range(10):
            loss = model(input_ids=data, labels=data).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(trained, max_shard_size=shard)
    tokenizer(trained, vocab)
    return base, trained


def outputs(kind, folder, ids):
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModel if kind == "bert" else AutoModelForCausalLM
    m = cls.from_pretrained(folder, dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        o = m(input_ids=ids)
    return o.last_hidden_state if kind == "bert" else o.logits


def run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return time.perf_counter() - t0


def files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in files(folder))


def added_tokens(a, base, trained, out, ids):
    """File sizes for the fine-tune with 8 added tokens beside without."""
    from transformers import AutoModelForCausalLM

    sizes = []
    for label, pad in [("no added tokens", None), ("+8 tokens (8 rows)", 0),
                       ("+8 tokens, pad_to_multiple_of=64", 64)]:
        t = trained
        if pad is not None:
            t = os.path.join(out, f"trained-added-{pad}")
            m = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32)
            torch.manual_seed(3)
            emb = m.resize_token_embeddings(264, pad_to_multiple_of=pad or None)
            m.save_pretrained(t, max_shard_size="100KB")
            tokenizer(t, 264)
            rows = emb.weight.shape[0]
        else:
            rows = 256
        row = [label, rows]
        for tag, flags in [("lossless", ["--lossless"]), ("lossy", ["--bits-per-param", str(a.bits)])]:
            f = os.path.join(out, f"added-{pad}-{tag}.resid")
            run([a.resid, "pack", "--base", base, "--trained", t, *flags, "-o", f, "-q"])
            row.append(os.path.getsize(f))
            if tag == "lossless" and pad is not None:
                u = os.path.join(out, f"unpacked-added-{pad}")
                run([a.resid, "unpack", "--base", base, f, "-o", u, "-q"])
                names = files(t)
                assert files(u) == names and all(
                    filecmp.cmp(os.path.join(t, n), os.path.join(u, n), shallow=False) for n in names)
                assert torch.equal(outputs("llama", u, ids), outputs("llama", t, ids))
        sizes.append(row)
    print(f"\nadded tokens (Llama, hidden 64, untied head; --bits-per-param {a.bits:g} for lossy)")
    print(f"{'trained model':<34} {'vocab rows':>10} {'lossless B':>10} {'+B':>7} {'lossy B':>8} {'+B':>7}")
    for label, rows, ll, ly in sizes:
        print(f"{label:<34} {rows:>10} {ll:>10} {ll - sizes[0][2]:>7} {ly:>8} {ly - sizes[0][3]:>7}")
    print("(an added row of the embedding and of the head is 64 f32 = 256 bytes each, raw)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resid", default=os.environ.get("RESID", "target/debug/resid"))
    ap.add_argument("--bits", type=float, default=2.0)
    ap.add_argument("--out", default="bench/out/hf")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    rows = []
    for kind in ["bert", "llama"]:
        out = os.path.join(a.out, kind)
        os.makedirs(out)
        base, trained = build(kind, out)
        ids = torch.randint(0, 255, (2, 24), generator=torch.Generator().manual_seed(2))
        want = outputs(kind, trained, ids)
        f = os.path.join(out, "lossless.resid")
        run([a.resid, "pack", "--base", base, "--trained", trained, "--lossless", "-o", f, "-q"])
        u = os.path.join(out, "unpacked")
        run([a.resid, "unpack", "--base", base, f, "-o", u, "-q"])
        names = files(trained)
        assert files(u) == names, f"{kind}: files differ: {files(u)} vs {names}"
        same = all(filecmp.cmp(os.path.join(trained, n), os.path.join(u, n), shallow=False)
                   for n in names)
        assert same, f"{kind}: a file differs"
        got = outputs(kind, u, ids)
        assert torch.equal(got, want), f"{kind}: outputs differ"
        rows.append((kind, "lossless", folder_bytes(trained), os.path.getsize(f), len(names),
                     "byte-identical", 0.0, 0.0))
        fl = os.path.join(out, "lossy.resid")
        run([a.resid, "pack", "--base", base, "--trained", trained, "--bits-per-param",
             str(a.bits), "-o", fl, "-q"])
        ul = os.path.join(out, "unpacked-lossy")
        run([a.resid, "unpack", "--base", base, fl, "-o", ul, "-q"])
        got = outputs(kind, ul, ids)
        d = (got - want).abs().max().item()
        rel = ((got - want).norm() / want.norm()).item()
        other = [n for n in names if not n.endswith(".safetensors")]
        same = all(filecmp.cmp(os.path.join(trained, n), os.path.join(ul, n), shallow=False)
                   for n in other)
        rows.append((kind, f"--bits-per-param {a.bits:g}", folder_bytes(trained),
                     os.path.getsize(fl), len(files(ul)),
                     "non-tensor files identical" if same else "NON-TENSOR FILES DIFFER", d, rel))
        print(f"{kind}: {len(names)} files: {', '.join(names)}")
        if kind == "llama":
            llama = (base, trained, out, ids)
    print(f"\n{'model':<6} {'mode':<22} {'folder B':>9} {'.resid B':>9} {'files':>5} "
          f"{'files check':<27} {'max |d out|':>11} {'rel |d out|':>11}")
    for r in rows:
        print(f"{r[0]:<6} {r[1]:<22} {r[2]:>9} {r[3]:>9} {r[4]:>5} {r[5]:<27} {r[6]:>11.3e} {r[7]:>11.3e}")
    added_tokens(a, *llama)
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}; outputs: BERT "
          "last_hidden_state, Llama logits, on fixed random ids; lossless: torch.equal")


if __name__ == "__main__":
    main()
