"""nestspk: speaker verification with a nested encoder and a ResNetSE34L baseline.

    from nestspk import Verifier
    v = Verifier()                      # trained nested encoder, CPU or CUDA
    v.verify("a.wav", "b.wav")          # VerificationResult(score, same_speaker, threshold, llr)
"""
from .errors import AudioError, GalleryError, InputError, NestspkError, WeightsError
from .verifier import VerificationResult, Verifier

__version__ = "0.1.0"
__all__ = ["Verifier", "VerificationResult", "NestspkError", "AudioError", "WeightsError", "GalleryError", "InputError"]
