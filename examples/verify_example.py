"""Verify, embed and identify with the shipped nested encoder (run from the repo root)."""
from pathlib import Path

import numpy as np

from nestspk import Verifier

here = Path(__file__).parent
a1, a2, b = here / "speaker_121_session1.flac", here / "speaker_121_session2.flac", here / "speaker_1221.flac"

verifier = Verifier()  # nested_4level, CPU or CUDA automatically
for x, y in [(a1, a2), (a1, b)]:
    r = verifier.verify(x, y)
    print(f"{x.name} vs {y.name}: score {r.score:.3f} -> {'same' if r.same_speaker else 'different'} speaker")

emb = verifier.embed(a1)  # (512,) float32, L2-normalised
print("embedding", emb.shape, "norm", round(float(np.linalg.norm(emb)), 4))

verifier.enroll("speaker_121", [a1])
verifier.enroll("speaker_1221", [b])
print("identify(session2):", verifier.identify(a2, top_k=2))
