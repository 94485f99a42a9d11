"""One GPT-2 MLP of a streamed output folder against tqla_torch.compress of the same module.

Loads only that block's two weights from the source checkpoint into the meta-device model,
runs the in-memory path (``tqla_torch.compress`` with the MLP step of ``tq_gpt2``) and
compares its tensors with the ones ``compress_folder`` wrote (exact equality expected).

    python benchmarks/check_streamed_module.py SRC_FOLDER STREAMED_FOLDER BLOCK
"""
import sys, resource
import torch
from safetensors import safe_open
import tqla_torch
from tqla_torch.compression._checkpoint import meta_model, source_entries
from tqla_torch.compression.presets import tq_gpt2_steps

src, out, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = meta_model(src)
from pathlib import Path
entries = source_entries(Path(src))
mlp = model.transformer.h[block].mlp
for name in ("c_fc", "c_proj"):
    mod = getattr(mlp, name)
    sd = {}
    for p in ("weight", "bias"):
        key = f"transformer.h.{block}.mlp.{name}.{p}"
        with safe_open(str(entries[key].file), framework="pt") as f:
            sd[p] = f.get_tensor(key).clone()
    mod.load_state_dict(sd, assign=True)
tqla_torch.compress(model, tq_gpt2_steps(blocks=[block])[1])
worst = 0.0
n = 0
with safe_open(f"{out}/model.safetensors", framework="pt") as f:
    for name in ("c_fc", "c_proj"):
        for k, v in getattr(mlp, name).state_dict().items():
            w = f.get_tensor(f"transformer.h.{block}.mlp.{name}.{k}")
            n += 1
            same = torch.equal(v, w)
            if not same:
                worst = max(worst, float((v.double() - w.double()).abs().max()))
            print(name, k, tuple(v.shape), "equal" if same else "DIFFERENT")
print("RESULT tensors", n, "max abs diff", worst,
      "peak RSS GB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
