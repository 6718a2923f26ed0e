"""Log-mel front end shared by inference, training and ONNX export.

One :class:`FrontendConfig` is the single source of truth for the feature
parameters; it is stored in every model card and checkpoint.  The STFT is
written as a matmul of the frames with a fixed DFT basis, so the whole front end
is plain tensor ops that export to ONNX (opset 18) and run on any execution
provider.  The basis keeps only what can reach the output: the ``win_length``
taps where the window is non-zero and the frequency bins that some mel filter
weights (bins 1..243 of 257 for the default config), which is the same
arithmetic as the full 512-tap, 257-bin STFT with 26% fewer multiply-adds.

``dft="factored"`` computes the same spectrum as a two-stage Cooley-Tukey
transform (``n_fft = 16 x 32``: a grouped strided conv1d over 16-sample blocks,
then one matmul), 4.6x fewer multiply-adds; ONNX export uses it because it is
faster in onnxruntime on CPU. Its log-mel differs from "direct" only by float32
rounding (about 1e-4 at near-silent mel bins, where the log magnifies it).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class FrontendConfig:
    """Front-end parameters. Times in samples at ``sample_rate`` Hz."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 80
    f_min: float = 20.0
    f_max: float = 7600.0
    preemphasis: float = 0.97
    log_eps: float = 1e-6
    norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendConfig":
        return cls(**d)


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_filterbank(cfg: FrontendConfig) -> torch.Tensor:
    """HTK-scale triangular filters, shape (n_fft // 2 + 1, n_mels), no area norm.

    Same definition as ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``.
    """
    n_freqs = cfg.n_fft // 2 + 1
    all_freqs = torch.linspace(0, cfg.sample_rate // 2, n_freqs, dtype=torch.float64)
    m_min, m_max = hz_to_mel(torch.tensor(cfg.f_min, dtype=torch.float64)), hz_to_mel(
        torch.tensor(cfg.f_max, dtype=torch.float64)
    )
    m_pts = torch.linspace(m_min.item(), m_max.item(), cfg.n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0).float()


def dft_basis(cfg: FrontendConfig) -> torch.Tensor:
    """Windowed DFT kernels for conv1d, shape (2 * n_freqs, 1, n_fft): real rows then imaginary rows.

    The Hamming window (periodic, ``win_length`` long) is zero-padded to ``n_fft``
    and centred, as ``torch.stft`` does.
    """
    n_freqs = cfg.n_fft // 2 + 1
    window = torch.hamming_window(cfg.win_length, periodic=True, dtype=torch.float64)
    left = (cfg.n_fft - cfg.win_length) // 2
    window = F.pad(window, (left, cfg.n_fft - cfg.win_length - left))
    n = torch.arange(cfg.n_fft, dtype=torch.float64)
    k = torch.arange(n_freqs, dtype=torch.float64).unsqueeze(1)
    angle = 2.0 * math.pi * k * n / cfg.n_fft
    real = torch.cos(angle) * window
    imag = -torch.sin(angle) * window
    return torch.cat([real, imag], dim=0).unsqueeze(1).float()


def used_bins(cfg: FrontendConfig) -> tuple[int, int]:
    """``(first, stop)``: the STFT bins with a non-zero weight in some mel filter are ``first..stop-1``."""
    nonzero = (mel_filterbank(cfg) > 0).any(dim=1).nonzero().flatten()
    if len(nonzero) == 0:
        raise ValueError(f"mel filterbank is empty for {cfg}")
    return int(nonzero[0]), int(nonzero[-1]) + 1


def cropped_dft_basis(cfg: FrontendConfig, bins: tuple[int, int] | None = None) -> tuple[torch.Tensor, int]:
    """:func:`dft_basis` restricted to the window's taps and to ``bins`` (default :func:`used_bins`).

    Returns ``(basis, left)``: basis (2 * n_used, 1, win_length), real rows then
    imaginary rows; ``left`` = index of the first kept tap within ``n_fft``.
    """
    first, stop = bins or used_bins(cfg)
    n_freqs = cfg.n_fft // 2 + 1
    left = (cfg.n_fft - cfg.win_length) // 2
    full = dft_basis(cfg)[:, :, left:left + cfg.win_length]
    basis = torch.cat([full[first:stop], full[n_freqs + first:n_freqs + stop]], dim=0)
    return basis.contiguous(), left


RMS_FLOOR = 1e-10
"""Floor of the mean square in the unit-RMS scaling (digital silence -> zeros, not 0 * inf = NaN)."""
FACTOR_BLOCK = 16  # samples per block of the factored DFT (divides hop_length and n_fft)


def factored_dft_weights(cfg: FrontendConfig, bins: tuple[int, int] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights of the two-stage DFT: ``n_fft = N1 * N2`` with ``N1 = FACTOR_BLOCK``.

    Window sample ``j = N1 * a + b`` (``a < A = ceil(win_length / N1)``), bin ``k = N2 * k1 + k2``.
    Stage 1, a conv1d with ``N1`` groups over 16-sample blocks (stride ``hop_length / N1``):
    ``Z[b, r, k2] = sum_a w[j] x[j] exp(-2 pi i (a k2 / N2 + b k2 / n_fft))`` (window and
    twiddle folded in; r = real, imaginary).  Stage 2, a matmul over ``(b, r)``:
    ``X[N2 k1 + k2] = sum_b Z[b, k2] exp(-2 pi i b k1 / N1)`` for ``k1 < K1 = ceil(stop / N2)``.
    Returns ``(stage1 (N1 * 2 * N2, 1, A), stage2 (2 * K1, N1 * 2), fbank (n_mels, K1 * N2))``,
    the filterbank's columns reordered to the stage-2 bin order and zero outside ``bins``.
    The phase of the window offset within ``n_fft`` is dropped: it does not change the power.
    """
    n1 = FACTOR_BLOCK
    if cfg.n_fft % n1 or cfg.hop_length % n1:
        raise ValueError(f"dft='factored' needs n_fft and hop_length divisible by {n1}; got {cfg}")
    n2 = cfg.n_fft // n1
    first, stop = bins or used_bins(cfg)
    a_len = math.ceil(cfg.win_length / n1)
    k1_len = math.ceil(stop / n2)
    f64 = torch.float64
    window = torch.hamming_window(cfg.win_length, periodic=True, dtype=f64)
    window = F.pad(window, (0, a_len * n1 - cfg.win_length)).view(a_len, n1).t()[:, None, :]  # (b, 1, a)
    a = torch.arange(a_len, dtype=f64)[None, None, :]
    k2 = torch.arange(n2, dtype=f64)[None, :, None]
    b = torch.arange(n1, dtype=f64)[:, None, None]
    angle = 2.0 * math.pi * (a * k2 / n2 + b * k2 / cfg.n_fft)  # (b, k2, a)
    stage1 = torch.stack([torch.cos(angle) * window, -torch.sin(angle) * window], dim=1)  # (b, r, k2, a)
    stage1 = stage1.reshape(n1 * 2 * n2, 1, a_len)
    angle2 = 2.0 * math.pi * torch.arange(k1_len, dtype=f64)[:, None] * torch.arange(n1, dtype=f64)[None, :] / n1
    c, s = torch.cos(angle2), torch.sin(angle2)  # (k1, b)
    # (Zr + i Zi)(c - i s): real = Zr c + Zi s, imag = Zi c - Zr s; columns ordered (b, r)
    stage2 = torch.stack([torch.stack([c, s], dim=-1), torch.stack([-s, c], dim=-1)]).reshape(2 * k1_len, n1 * 2)
    bin_of = (torch.arange(k1_len)[:, None] * n2 + torch.arange(n2)[None, :]).flatten()
    fbank = torch.zeros(k1_len * n2, cfg.n_mels, dtype=torch.float32)
    keep = (bin_of >= first) & (bin_of < stop)
    fbank[keep] = mel_filterbank(cfg)[bin_of[keep]]
    return stage1.float(), stage2.float(), fbank.t().contiguous()


def normalize_level(x: torch.Tensor) -> torch.Tensor:
    """(B, T) -> each row minus its mean, scaled to unit RMS (a digital-silence row stays 0).

    The first step of :class:`LogMelFrontend`: it makes the features independent of the recording level and of a
    DC offset (``tests/test_level.py``).
    """
    x = x - x.mean(dim=1, keepdim=True)
    # a floor (clamp), not ``+ RMS_FLOOR``: the ONNX exporter's optimiser drops an Add of a constant this close to
    # zero, which left the exported graph returning NaN for an all-zero row (tests/test_export.py). The two differ
    # only in the overall gain, by 1e-10 / mean square (1e-4 at -60 dBFS), which the log-mel normalisation removes.
    return x * torch.rsqrt(torch.clamp(x.pow(2).mean(dim=1, keepdim=True), min=RMS_FLOOR))


class LogMelFrontend(nn.Module):
    """Waveform (B, T) float32 at 16 kHz -> normalised log-mel (B, n_mels, frames).

    Steps: DC removal and scaling to unit RMS over each row (so a gain or a DC offset does not
    change the features), pre-emphasis ``y[t] = x[t] - a * x[t-1]`` (``y[0] = x[0] - a * x[0]``),
    centred STFT with reflect padding (frames = T // hop + 1), power spectrum,
    mel filterbank, ``log(mel + log_eps)``, per-utterance mean/variance
    normalisation over time for each mel bin (instance norm).

    ``dft``: "direct" (frames times the cropped DFT basis, one matmul) or "factored"
    (:func:`factored_dft_weights`, for ONNX export; same spectrum up to float32 rounding;
    its first stage is a convolution, so on CUDA it follows cuDNN's TF32 setting).
    """

    def __init__(self, cfg: FrontendConfig, dft: str = "direct"):
        super().__init__()
        if dft not in ("direct", "factored"):
            raise ValueError(f"unknown dft {dft!r}; choose 'direct' or 'factored'")
        self.cfg = cfg
        self.dft = dft
        first, stop = used_bins(cfg)
        basis, self.left = cropped_dft_basis(cfg, (first, stop))
        self.right = cfg.n_fft - cfg.win_length - self.left
        self.n_used = stop - first
        if dft == "direct":
            # (win_length, 2 * n_used) and (n_used, n_mels): the frames are multiplied from the left
            self.register_buffer("basis", basis[:, 0].t().contiguous(), persistent=False)
            self.register_buffer("fbank", mel_filterbank(cfg)[first:stop].contiguous(), persistent=False)
        else:
            stage1, stage2, fbank = factored_dft_weights(cfg, (first, stop))
            self.register_buffer("stage1", stage1, persistent=False)
            self.register_buffer("stage2", stage2, persistent=False)
            self.register_buffer("fbank", fbank, persistent=False)

    def _power_factored(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, L) cropped padded signal -> power (B, K1 * N2, frames) in stage-2 bin order."""
        cfg, n1 = self.cfg, FACTOR_BLOCK
        a_len = self.stage1.shape[-1]
        hop_blocks = cfg.hop_length // n1
        frames = (x.shape[-1] - cfg.win_length) // cfg.hop_length + 1
        # zero taps beyond win_length up to a whole block; then keep the blocks the frames use
        x = F.pad(x, (0, a_len * n1 - cfg.win_length))
        n_blocks = (frames - 1) * hop_blocks + a_len
        blocks = x[:, 0, :n_blocks * n1].reshape(x.shape[0], n_blocks, n1).transpose(1, 2)  # (B, N1, blocks)
        z = F.conv1d(blocks, self.stage1, stride=hop_blocks, groups=n1)  # (B, N1 * 2 * N2, frames)
        n2 = cfg.n_fft // n1
        y = torch.matmul(self.stage2, z.reshape(x.shape[0], n1 * 2, n2 * frames))  # (B, 2 * K1, N2 * frames)
        y = y.reshape(x.shape[0], 2, -1, frames)
        return y[:, 0] ** 2 + y[:, 1] ** 2

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel before the per-utterance normalisation, (B, T) -> (B, n_mels, frames), of the
        level-normalised input (:func:`normalize_level`).

        Always float32, also inside ``torch.autocast`` (in fp16 the power of a loud frame
        overflows). The "direct" DFT is a matmul, so on CUDA it follows
        ``torch.backends.cuda.matmul.allow_tf32`` (default off: full fp32) rather than cuDNN's
        TF32 default for convolutions, whose 10-bit mantissa shifts the log of quiet mel bins
        by up to ~0.5.
        """
        cfg = self.cfg
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = wav.float()
            x = normalize_level(x)
            x = torch.cat([x[:, :1] * (1.0 - cfg.preemphasis), x[:, 1:] - cfg.preemphasis * x[:, :-1]], dim=1)
            pad = cfg.n_fft // 2
            x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect")
            # the window is zero outside [left, left + win_length) of each n_fft frame
            x = x[..., self.left:x.shape[-1] - self.right]
            if self.dft == "factored":
                mel = torch.matmul(self.fbank, self._power_factored(x))  # (B, n_mels, frames)
            else:
                frames = x[:, 0].unfold(-1, cfg.win_length, cfg.hop_length)  # (B, frames, win_length)
                spec = torch.matmul(frames, self.basis)  # (B, frames, 2 * n_used)
                power = spec[..., :self.n_used] ** 2 + spec[..., self.n_used:] ** 2
                mel = torch.matmul(power, self.fbank).transpose(1, 2)  # (B, n_mels, frames)
            return torch.log(mel + cfg.log_eps)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        feats = self.log_mel(wav)  # float32; mean/sub/sqrt/div are not autocast ops, so they stay float32
        mean = feats.mean(dim=-1, keepdim=True)
        var = ((feats - mean) ** 2).mean(dim=-1, keepdim=True)
        return (feats - mean) / torch.sqrt(var + self.cfg.norm_eps)
