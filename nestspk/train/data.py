"""On-device batch sampling for training: the waveform bank, packed corpora and augmentation.

Lists and trial files are read by :mod:`nestspk.corpus` (numpy only); this module holds what needs torch.
A *pack* is the training list decoded once: ``pack.npy`` (int16, all recordings concatenated) and
``pack.tsv`` (``speaker  start  length  path`` per recording), written by ``nestspk-train pack``.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import TARGET_SAMPLE_RATE, load_audio
from ..corpus import read_train_list

log = logging.getLogger(__name__)


def _decode_int16(path: str) -> np.ndarray:
    w = load_audio(path)
    return np.clip(np.round(w * 32767.0), -32768, 32767).astype(np.int16)


def write_pack(train_list: str | os.PathLike, root: str | os.PathLike, out: str | os.PathLike,
               workers: int | None = None) -> dict:
    """Decode every recording of ``train_list`` once into ``out/pack.npy`` + ``out/pack.tsv``."""
    rows = read_train_list(train_list)
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        wavs = list(pool.map(_decode_int16, [str(root / p) for _, p in rows], chunksize=16))
    lengths = np.array([len(w) for w in wavs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tmp = out / "pack.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.concatenate(wavs))
    tmp.replace(out / "pack.npy")
    with open(out / "pack.tsv.tmp", "w") as f:
        for (spk, p), s, n in zip(rows, starts, lengths):
            f.write(f"{spk}\t{s}\t{n}\t{p}\n")
    (out / "pack.tsv.tmp").replace(out / "pack.tsv")
    return {"recordings": len(rows), "hours": round(float(lengths.sum()) / TARGET_SAMPLE_RATE / 3600, 3)}


class WaveformBank:
    """All training recordings, concatenated on one device (int16) for fast random cropping.

    ``pack``: a folder written by :func:`write_pack` whose rows equal ``train_list`` (checked); without it the
    recordings are decoded here. ``labels``/``starts``/``lengths`` are per recording, in list order.
    """

    def __init__(self, train_list: list[tuple[str, str]], root: Path, device: torch.device,
                 pack: str | os.PathLike | None = None):
        speakers = sorted({s for s, _ in train_list})
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        if pack is not None and (Path(pack) / "pack.tsv").is_file():
            rows = [line.split("\t", 3) for line in (Path(pack) / "pack.tsv").read_text().splitlines()]
            if [(r[0], r[3]) for r in rows] != list(train_list):
                raise ValueError(f"{pack}: pack.tsv does not match the training list; rebuild it (nestspk-train pack)")
            audio = torch.from_numpy(np.load(Path(pack) / "pack.npy"))
            starts = [int(r[1]) for r in rows]
            lengths = [int(r[2]) for r in rows]
        else:
            wavs = [torch.from_numpy(_decode_int16(str(root / path))) for _, path in train_list]
            lengths = [len(w) for w in wavs]
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
            audio = torch.cat(wavs)
        self.audio = audio.to(device)
        self.labels = torch.tensor([self.speaker_index[s] for s, _ in train_list], device=device)
        self.starts = torch.tensor(starts, device=device)
        self.lengths = torch.tensor(lengths, device=device)
        self.n_classes = len(speakers)
        self.device = device
        log.info("loaded %d recordings, %d speakers, %.2f h", len(train_list), self.n_classes,
                 sum(lengths) / TARGET_SAMPLE_RATE / 3600)

    def crops(self, idx: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
        """Random ``length``-sample crops (float32, full scale 1.0) of recordings ``idx``."""
        room = (self.lengths[idx] - length).clamp(min=1)
        off = (torch.rand(len(idx), generator=g, device=self.device) * room).long()
        pos = self.starts[idx, None] + off[:, None] + torch.arange(length, device=self.device)[None]
        return self.audio[pos.clamp(max=len(self.audio) - 1)].float() / 32768.0


@dataclass
class AugmentConfig:
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    noise_prob: float = 0.4
    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    babble_prob: float = 0.2
    babble_snr_db: tuple[float, float] = (13.0, 20.0)
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)
    # real background noise: recordings under the data root (None: off)
    real_noise_dir: str | None = None
    real_noise_prob: float = 0.0
    real_noise_snr_db: tuple[float, float] = (0.0, 15.0)
    # non-speech around the speech: a crop's speech squeezed into part of it, the rest digital silence or noise
    gap_prob: float = 0.0
    gap_fraction: tuple[float, float] = (0.1, 0.6)  # share of the crop that is not speech
    gap_silence_prob: float = 0.5  # of the gapped crops, exact zeros; the others get noise (gap_snr_db)
    gap_snr_db: tuple[float, float] = (5.0, 30.0)  # speech power / gap-noise power


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device) * (hi - lo) + lo)


def _mix(wav: torch.Tensor, sel: torch.Tensor, noise: torch.Tensor, power: torch.Tensor, snr_db: torch.Tensor) -> None:
    """``wav[sel] += noise`` scaled to ``snr_db`` below each row's ``power`` (in place)."""
    scale = torch.sqrt(power[sel] / (noise.pow(2).mean(1, keepdim=True).clamp(min=1e-8) * 10 ** (snr_db / 10)))
    wav[sel] = wav[sel] + noise * scale


class BatchSampler:
    """Random labelled crops with speed perturbation, reverb, coloured, real and babble noise, and gaps.

    Crop lengths: ``crop_s``, or per batch a length drawn from ``crop_s, crop_s + 0.5, ... crop_max_s``.
    Every random draw comes from one ``torch.Generator`` seeded from the config,
    so a run is reproducible on the same device; ``state()``/``load_state()`` resume it.
    """

    def __init__(self, bank: WaveformBank, crop_s: float, aug: AugmentConfig, seed: int,
                 crop_max_s: float | None = None, noise: WaveformBank | None = None):
        self.bank, self.aug, self.noise = bank, aug, noise
        top = crop_max_s if crop_max_s is not None else crop_s
        self.crops = [int(round((crop_s + 0.5 * k) * TARGET_SAMPLE_RATE))
                      for k in range(int(round((top - crop_s) / 0.5)) + 1)]
        self.g = torch.Generator(device=bank.device)
        self.g.manual_seed(seed)

    def state(self) -> torch.Tensor:
        return self.g.get_state()

    def load_state(self, s: torch.Tensor) -> None:
        self.g.set_state(s)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (wav (B, crop) float32, labels (B,) int64, recording index (B,) int64)."""
        import torchaudio.functional as AF

        b, dev, g, aug = self.bank, self.bank.device, self.g, self.aug
        crop = self.crops[int(torch.randint(0, len(self.crops), (1,), generator=g, device=dev))]
        idx = torch.randint(0, len(b.labels), (batch_size,), generator=g, device=dev)
        speed_pick = torch.randint(0, len(aug.speeds), (batch_size,), generator=g, device=dev)
        wav = torch.empty(batch_size, crop, device=dev)
        for k, sp in enumerate(aug.speeds):
            sel = (speed_pick == k).nonzero().flatten()
            if len(sel) == 0:
                continue
            if sp == 1.0:
                wav[sel] = b.crops(idx[sel], crop, g)
            else:
                src = int(round(crop * sp))
                x = b.crops(idx[sel], src + 64, g)
                # playing src samples in crop samples' time: resample src_rate -> 16k
                y = AF.resample(x, int(round(TARGET_SAMPLE_RATE * sp)), TARGET_SAMPLE_RATE)
                wav[sel] = y[:, :crop]
        wav = wav - wav.mean(dim=1, keepdim=True)
        power = wav.pow(2).mean(dim=1, keepdim=True).clamp(min=1e-8)

        # simulated reverberation: exponentially decaying Gaussian noise RIR
        rev = torch.rand(batch_size, generator=g, device=dev) < aug.reverb_prob
        if rev.any():
            n = int(rev.sum())
            rir_len = TARGET_SAMPLE_RATE // 2
            t = torch.arange(rir_len, device=dev) / TARGET_SAMPLE_RATE
            rt60 = _uniform(n, *aug.rt60_s, g, dev)[:, None]
            rir = torch.randn(n, rir_len, generator=g, device=dev) * torch.exp(-6.9078 * t[None] / rt60)
            rir[:, 0] = 1.0
            rir = rir / rir.norm(dim=1, keepdim=True)
            nfft = 1 << (crop + rir_len - 1).bit_length()
            y = torch.fft.irfft(torch.fft.rfft(wav[rev], nfft) * torch.fft.rfft(rir, nfft), nfft)[:, :crop]
            y = y * torch.sqrt(power[rev] / y.pow(2).mean(dim=1, keepdim=True).clamp(min=1e-8))
            wav[rev] = y

        # coloured noise: white (0), pink (1), brown (2) spectral slope
        noi = torch.rand(batch_size, generator=g, device=dev) < aug.noise_prob
        if noi.any():
            n = int(noi.sum())
            spec = torch.fft.rfft(torch.randn(n, crop, generator=g, device=dev))
            freqs = torch.arange(spec.shape[1], device=dev).clamp(min=1).float()
            slope = torch.randint(0, 3, (n, 1), generator=g, device=dev).float()
            noise = torch.fft.irfft(spec / freqs[None].pow(slope / 2), crop)
            _mix(wav, noi, noise, power, _uniform(n, *aug.noise_snr_db, g, dev)[:, None])

        # real background noise (kitchen, tap, machines, ...)
        if self.noise is not None and aug.real_noise_prob > 0:
            real = torch.rand(batch_size, generator=g, device=dev) < aug.real_noise_prob
            if real.any():
                n = int(real.sum())
                pick = torch.randint(0, len(self.noise.labels), (n,), generator=g, device=dev)
                _mix(wav, real, self.noise.crops(pick, crop, g), power,
                     _uniform(n, *aug.real_noise_snr_db, g, dev)[:, None])

        # babble: sum of 3 crops of other training recordings
        bab = torch.rand(batch_size, generator=g, device=dev) < aug.babble_prob
        if bab.any():
            n = int(bab.sum())
            others = torch.randint(0, len(b.labels), (n * 3,), generator=g, device=dev)
            babble = b.crops(others, crop, g).view(n, 3, crop).sum(1)
            _mix(wav, bab, babble, power, _uniform(n, *aug.babble_snr_db, g, dev)[:, None])

        if aug.gap_prob > 0:  # (no draw when off: older configs keep their random stream)
            gap = torch.rand(batch_size, generator=g, device=dev) < aug.gap_prob
            if gap.any():
                wav[gap] = self._gap(wav[gap], power[gap])

        peak = wav.abs().amax(dim=1, keepdim=True).clamp(min=1e-4)
        wav = wav / peak * 0.9
        return wav, b.labels[idx], idx

    def _gap(self, wav: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
        """(n, crop) -> each row's first ``crop * (1 - f)`` samples at a random offset, f ~ ``gap_fraction``;
        around them exact zeros (``gap_silence_prob``) or coloured/real noise at ``gap_snr_db`` below the speech."""
        g, aug, dev = self.g, self.aug, wav.device
        n, crop = wav.shape
        speech = ((1 - _uniform(n, *aug.gap_fraction, g, dev)) * crop).long().clamp(min=1, max=crop)
        offset = (torch.rand(n, generator=g, device=dev) * (crop - speech + 1)).long().clamp(max=crop - 1)
        t = torch.arange(crop, device=dev)[None]
        src = t - offset[:, None]
        inside = (src >= 0) & (src < speech[:, None])
        moved = torch.gather(wav, 1, src.clamp(0, crop - 1))
        if self.noise is not None and len(self.noise.labels):
            pick = torch.randint(0, len(self.noise.labels), (n,), generator=g, device=dev)
            fill = self.noise.crops(pick, crop, g)
        else:
            fill = torch.fft.irfft(torch.fft.rfft(torch.randn(n, crop, generator=g, device=dev))
                                   / torch.arange(crop // 2 + 1, device=dev).clamp(min=1)[None].pow(0.5), crop)
        snr = _uniform(n, *aug.gap_snr_db, g, dev)[:, None]
        fill = fill * torch.sqrt(power / (fill.pow(2).mean(1, keepdim=True).clamp(min=1e-8) * 10 ** (snr / 10)))
        silent = torch.rand(n, generator=g, device=dev) < aug.gap_silence_prob
        fill = torch.where(silent[:, None], torch.zeros_like(fill), fill)
        return torch.where(inside, moved, fill)
