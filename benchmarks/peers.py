"""Peer speaker encoders for the benchmark: what a user would pick instead of nestspk.

Benchmark code only, never library code. Written from the published descriptions, with random
weights (speed does not depend on training):

- ``ecapa1024`` / ``ecapa512``: ECAPA-TDNN (Desplanques et al. 2020) as in the SpeechBrain
  VoxCeleb model (C=1024) and WeSpeaker's C=512 variant: 80 log-mel, TDNN 5x1, three
  SE-Res2Net blocks (scale 8, dilations 2/3/4), multi-layer aggregation, attentive statistics
  pooling with global context, 192-d.
- ``resnet34``: ResNet34 as WeSpeaker's (BasicBlocks 3/4/6/3, 32 base channels, 80 log-mel,
  temporal statistics pooling (mean + std over time), 256-d).
- ``ge2e``: the GE2E LSTM of Resemblyzer's VoiceEncoder (Wan et al. 2018): 40 log-mel,
  3-layer LSTM 256, linear 256 + ReLU, 1.6 s partials at 1.3 per second, L2-normalised mean of
  the L2-normalised partial embeddings.

Every peer is an ``nn.Module`` with ``embed(wav (B, T) float32 16 kHz) -> (B, D)`` L2-normalised,
front end included, like :class:`nestspk.models.SpeakerModel`. :func:`resemblyzer_embedder`
wraps the real Resemblyzer package (CPU) when it is installed.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000

# Parameter counts of the published models (shared/notes/peers.md); tests compare against these.
PUBLISHED_PARAMS_M = {"ecapa1024": 20.8, "ecapa512": 6.2, "resnet34": 6.6, "ge2e": 1.4}


# ----------------------------------------------------------------------------- front end


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE, f_min: float = 20.0,
                   f_max: float | None = None) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters."""
    f_max = f_max or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


class LogMel(nn.Module):
    """Waveform (B, T) -> log-mel (B, n_mels, frames): 25 ms Hamming window, 10 ms hop, mean-normalised over time."""

    def __init__(self, n_mels: int, n_fft: int = 512, win: int = 400, hop: int = 160, cmn: bool = True):
        super().__init__()
        self.n_fft, self.win, self.hop, self.cmn = n_fft, win, hop, cmn
        self.register_buffer("window", torch.hamming_window(win), persistent=False)
        self.register_buffer("fbank", torch.from_numpy(mel_filterbank(n_fft, n_mels)), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wav.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, F, frames)
        x = torch.log(torch.matmul(power.transpose(1, 2), self.fbank) + 1e-6).transpose(1, 2)
        return x - x.mean(dim=-1, keepdim=True) if self.cmn else x


# ----------------------------------------------------------------------------- ECAPA-TDNN


class TDNNBlock(nn.Module):
    """Conv1d (same padding) -> ReLU -> BatchNorm1d."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2Block(nn.Module):
    """Res2Net: channels split into ``scale`` groups; group i (i >= 1) gets a TDNN of (group i + output i-1)."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} not divisible by scale {scale}")
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.chunk(x, self.scale, dim=1)
        out = [parts[0]]
        y = None
        for i, block in enumerate(self.blocks, start=1):
            y = block(parts[i] if y is None else parts[i] + y)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation over time: channel gates from the time mean."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, 1)
        self.up = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=-1, keepdim=True)
        return x * torch.sigmoid(self.up(F.relu(self.down(s))))


class SERes2NetBlock(nn.Module):
    """1x1 TDNN -> Res2Net (k, d) -> 1x1 TDNN -> SE, plus the input."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = 8, se_channels: int = 128):
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, 1)
        self.res2 = Res2Block(channels, scale, kernel, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, 1)
        self.se = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se(self.tdnn2(self.res2(self.tdnn1(x))))


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling with global context (frame features + utterance mean/std as attention input)."""

    def __init__(self, channels: int, attention: int = 128, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.tdnn = TDNNBlock(channels * 3, attention, 1)
        self.attn = nn.Conv1d(attention, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        mean = x.mean(dim=-1, keepdim=True)
        std = (x.var(dim=-1, keepdim=True, unbiased=False) + self.eps).sqrt()
        ctx = torch.cat([x, mean.expand(-1, -1, t), std.expand(-1, -1, t)], dim=1)
        w = torch.softmax(self.attn(torch.tanh(self.tdnn(ctx))), dim=-1)
        mu = (w * x).sum(dim=-1)
        sigma = ((w * x.square()).sum(dim=-1) - mu.square()).clamp(min=self.eps).sqrt()
        return torch.cat([mu, sigma], dim=1)


class EcapaTDNN(nn.Module):
    """ECAPA-TDNN, C channels, waveform in, 192-d L2-normalised embedding out."""

    def __init__(self, channels: int = 1024, n_mels: int = 80, embed_dim: int = 192, attention: int = 128):
        super().__init__()
        self.frontend = LogMel(n_mels)
        self.block0 = TDNNBlock(n_mels, channels, 5, 1)
        self.blocks = nn.ModuleList(SERes2NetBlock(channels, 3, d) for d in (2, 3, 4))
        self.mfa = TDNNBlock(channels * 3, channels * 3, 1)
        self.pool = AttentiveStatsPool(channels * 3, attention)
        self.pool_norm = nn.BatchNorm1d(channels * 6)
        self.fc = nn.Linear(channels * 6, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.block0(self.frontend(wav))
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs, dim=1))
        return self.fc(self.pool_norm(self.pool(x)))

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(wav), dim=-1)


# ----------------------------------------------------------------------------- ResNet34 (WeSpeaker-like)


class BasicBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the (projected) input, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.short(x))


class ResNet34(nn.Module):
    """ResNet34 on (mel x time): 32/64/128/256 channels, strides 1/2/2/2, mean+std over time, 256-d."""

    def __init__(self, base: int = 32, n_mels: int = 80, embed_dim: int = 256, layers: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.frontend = LogMel(n_mels)
        self.conv1 = nn.Conv2d(1, base, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        stages, cin = [], base
        for i, n in enumerate(layers):
            cout = base * 2 ** i
            for j in range(n):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        freq_out = math.ceil(n_mels / 2 ** (len(layers) - 1))
        self.fc = nn.Linear(cin * freq_out * 2, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.frontend(wav).unsqueeze(1)  # (B, 1, mels, frames)
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        x = x.flatten(1, 2)  # (B, C * F, T)
        stats = torch.cat([x.mean(dim=-1), (x.var(dim=-1, unbiased=False) + 1e-7).sqrt()], dim=1)
        return self.fc(stats)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(wav), dim=-1)


# ----------------------------------------------------------------------------- GE2E LSTM (Resemblyzer-like)


def partial_starts(n_frames: int, partial: int = 160, rate: float = 1.3, hop: int = 160,
                   min_coverage: float = 0.75) -> list[int]:
    """Start frames of the 1.6 s partials at ``rate`` per second (a last partial covering < 75 % is dropped)."""
    step = max(1, int(round(SAMPLE_RATE / rate / hop)))
    starts = list(range(0, max(1, n_frames - partial + step + 1), step))
    if len(starts) > 1 and (n_frames - starts[-1]) / partial < min_coverage:
        starts.pop()
    return starts


class GE2ELSTM(nn.Module):
    """40 log-mel -> 3 x LSTM 256 -> linear 256 + ReLU per 1.6 s partial; mean of normalised partials."""

    def __init__(self, n_mels: int = 40, hidden: int = 256, layers: int = 3, embed_dim: int = 256,
                 partial_frames: int = 160, rate: float = 1.3):
        super().__init__()
        self.frontend = LogMel(n_mels, cmn=False)
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, embed_dim)
        self.partial_frames, self.rate, self.embed_dim = partial_frames, rate, embed_dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(wav).transpose(1, 2)  # (B, frames, mels)
        b, n, m = mel.shape
        if n < self.partial_frames:
            mel = F.pad(mel, (0, 0, 0, self.partial_frames - n))
            n = self.partial_frames
        starts = [min(s, n - self.partial_frames) for s in partial_starts(n, self.partial_frames, self.rate)]
        parts = torch.stack([mel[:, s:s + self.partial_frames] for s in starts], dim=1)  # (B, P, L, M)
        _, (h, _) = self.lstm(parts.reshape(b * len(starts), self.partial_frames, m))
        e = F.normalize(F.relu(self.fc(h[-1])), dim=-1).reshape(b, len(starts), -1)
        return e.mean(dim=1)

    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward(wav), dim=-1)


# ----------------------------------------------------------------------------- registry


PEERS: dict[str, Callable[[], nn.Module]] = {
    "ecapa1024": lambda: EcapaTDNN(1024),
    "ecapa512": lambda: EcapaTDNN(512),
    "resnet34": lambda: ResNet34(),
    "ge2e": lambda: GE2ELSTM(),
}
LABELS = {"ecapa1024": "ECAPA-TDNN C=1024", "ecapa512": "ECAPA-TDNN C=512", "resnet34": "ResNet34 (WeSpeaker)",
          "ge2e": "GE2E LSTM (Resemblyzer)", "resemblyzer": "Resemblyzer (pip, CPU)"}


def build_peer(name: str, seed: int = 0) -> nn.Module:
    """A peer with random weights (``torch.manual_seed(seed)``), in eval mode on the CPU."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; available: {sorted(PEERS)}")
    torch.manual_seed(seed)
    return PEERS[name]().eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resemblyzer_available() -> bool:
    try:
        import resemblyzer  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


class ResemblyzerEmbedder:
    """The real Resemblyzer (``preprocess_wav`` + ``VoiceEncoder.embed_utterance``) on the CPU, one clip at a time."""

    def __init__(self, preprocess: bool = True):
        import logging

        from resemblyzer import VoiceEncoder, preprocess_wav

        logging.getLogger("resemblyzer").setLevel(logging.WARNING)
        self._preprocess = preprocess_wav if preprocess else None
        self.encoder = VoiceEncoder(device="cpu", verbose=False)
        self.embed_dim = 256
        self.card = {"name": "resemblyzer"}

    def embed_batch(self, wav: np.ndarray) -> np.ndarray:
        out = []
        for w in np.asarray(wav, dtype=np.float32):
            x = self._preprocess(w, source_sr=SAMPLE_RATE) if self._preprocess else w
            if len(x) < SAMPLE_RATE // 2:  # the VAD trimmed (almost) everything: embed the raw clip
                x = w
            out.append(self.encoder.embed_utterance(x))
        return np.stack(out).astype(np.float32)


def resemblyzer_params() -> int | None:
    if not resemblyzer_available():
        return None
    from resemblyzer import VoiceEncoder

    return count_params(VoiceEncoder(device="cpu", verbose=False))
