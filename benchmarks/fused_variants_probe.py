"""How many Triton variants the fused nested kernel compiles over 35 input lengths x 2 layouts (GPU)."""
import torch
from torch import nn
from nestspk.models import fused
norm = nn.GroupNorm(8, 32).cuda()
w = torch.tensor(0.3, device="cuda")
with torch.inference_mode():
    for frames in range(180, 420, 7):
        for cl in (False, True):
            y = torch.randn(2, 32, 10, frames, device="cuda"); x = torch.randn_like(y)
            if cl: y, x = y.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            fused.group_norm_relu_add(y, x, norm, w)
torch.cuda.synchronize()
for k in (fused._chunk_stats_kernel, fused._normalize_relu_add_kernel):
    try:
        n = sum(len(c[0]) for c in k.device_caches.values())
    except Exception as e:
        n = f"? ({e})"
    print(k.fn.__name__, "compiled variants for 35 lengths x 2 layouts:", n)
