"""Manifests, speaker splits, trial lists and on-device batch sampling with augmentation.

Manifest: one ``speaker relative/path`` line per recording.
Trial list: VoxCeleb style ``label path1 path2``; a path may name a segment as
``path@START-END`` (seconds), used to cut one recording into several test segments.
Paths are relative to a data root (``--data-root``, default ``$NESTSPK_DATA`` or ``../shared/data``).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import MIN_DURATION_S, TARGET_SAMPLE_RATE, audio_info, load_audio

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
_LIBRI = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_FSDD = re.compile(r"^(\d+)_([A-Za-z]+)_(\d+)$")


def default_data_root() -> Path:
    return Path(os.environ.get("NESTSPK_DATA", Path.cwd().parent / "shared" / "data"))


def speaker_of(path: Path) -> str | None:
    """Speaker id from a LibriSpeech-style (SPK-CHAPTER-UTT) or FSDD-style (DIGIT_SPEAKER_INDEX) name."""
    stem = path.stem
    if m := _LIBRI.match(stem):
        return m.group(1)
    if m := _FSDD.match(stem):
        return m.group(2)
    return None


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'speaker path', got {line!r}")
        rows.append((parts[0], parts[1]))
    return rows


def read_trials(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected 'label path1 path2' with label 0/1, got {line!r}")
        rows.append((int(parts[0]), parts[1], parts[2]))
    return rows


def split_segment(spec: str) -> tuple[str, float | None, float | None]:
    """``'a.flac@1.5-3.0'`` -> ``('a.flac', 1.5, 3.0)``; a plain path -> ``(path, None, None)``."""
    if "@" in spec:
        path, seg = spec.rsplit("@", 1)
        start, end = seg.split("-")
        return path, float(start), float(end)
    return spec, None, None


def load_segment(spec: str, root: Path) -> np.ndarray:
    """Load a trial-list entry (path or ``path@START-END``) as a 16 kHz float32 waveform."""
    path, start, end = split_segment(spec)
    full = root / path if not os.path.isabs(path) else Path(path)
    wav = load_audio(full, name=spec)
    if start is not None:
        wav = load_audio(wav[int(start * TARGET_SAMPLE_RATE): int(end * TARGET_SAMPLE_RATE)], name=spec)
    return wav


def prepare(root: Path, out: Path, n_dev: int = 30, n_test: int = 30, segments: int = 4,
            subdir: str = "librispeech-snippets", fsdd_subdir: str = "fsdd/recordings",
            fsdd_trials: int = 6000, seed: int = 0) -> dict:
    """Build train manifest and dev/test/FSDD trial lists from a folder of recordings.

    Speakers of ``subdir`` are split disjointly into train / dev / test. Each dev and
    test recording is cut into ``segments`` equal non-overlapping segments; trials are
    all segment pairs (same recording = target: same-session trials).
    """
    rng = random.Random(seed)
    files = sorted(p for p in (root / subdir).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    by_spk: dict[str, list[Path]] = {}
    for p in files:
        spk = speaker_of(p)
        if spk is not None:
            by_spk.setdefault(spk, []).append(p)
    speakers = sorted(by_spk)
    rng.shuffle(speakers)
    if len(speakers) < n_dev + n_test + 2:
        raise ValueError(f"{root / subdir}: only {len(speakers)} speakers found")
    dev, test, train = speakers[:n_dev], speakers[n_dev:n_dev + n_test], speakers[n_dev + n_test:]
    out.mkdir(parents=True, exist_ok=True)
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    with open(out / "train.txt", "w") as f:
        for spk in sorted(train):
            for p in by_spk[spk]:
                f.write(f"{spk} {rel(p)}\n")

    def seg_trials(spks: list[str], name: str) -> int:
        segs = []
        for spk in sorted(spks):
            for p in by_spk[spk]:
                frames, sr, _ = audio_info(p)
                dur = frames / sr
                n_seg = segments  # fewer segments for short recordings: each >= MIN_DURATION_S
                while n_seg > 2 and math.floor(dur / n_seg * 100) / 100 < MIN_DURATION_S:
                    n_seg -= 1
                step = math.floor(dur / n_seg * 100) / 100
                if step < MIN_DURATION_S:
                    log.warning("%s: %.2f s is too short for 2 segments; skipped", p, dur)
                    continue
                for i in range(n_seg):
                    segs.append((spk, p, f"{rel(p)}@{i * step:.2f}-{(i + 1) * step:.2f}"))
        n = 0
        with open(out / name, "w") as f:
            for (s1, p1, a), (s2, p2, b) in itertools.combinations(segs, 2):
                f.write(f"{int(p1 == p2)} {a} {b}\n")
                n += 1
        return n

    n_dev_trials = seg_trials(dev, "dev_trials.txt")
    n_test_trials = seg_trials(test, "test_trials.txt")
    stats = {"train_speakers": len(train), "dev_speakers": len(dev), "test_speakers": len(test),
             "dev_trials": n_dev_trials, "test_trials": n_test_trials}
    fsdd = root / fsdd_subdir
    if fsdd.is_dir():
        wavs = []
        for p in sorted(fsdd.glob("*.wav")):
            frames, sr, _ = audio_info(p)
            if speaker_of(p) and frames / sr >= MIN_DURATION_S:  # many digits are shorter than 0.5 s
                wavs.append(p)
        pairs = set()
        by = {}
        for p in wavs:
            by.setdefault(speaker_of(p), []).append(p)
        spk_list = sorted(by)
        with open(out / "fsdd_trials.txt", "w") as f:
            while len(pairs) < fsdd_trials:
                target = len(pairs) % 2 == 0
                s1 = rng.choice(spk_list)
                s2 = s1 if target else rng.choice([s for s in spk_list if s != s1])
                a, b = rng.choice(by[s1]), rng.choice(by[s2])
                if a == b or (a, b) in pairs:
                    continue
                pairs.add((a, b))
                f.write(f"{int(target)} {rel(a)} {rel(b)}\n")
        stats["fsdd_trials"] = len(pairs)
    return stats


class WaveformBank:
    """All training recordings, concatenated on one device for fast random cropping."""

    def __init__(self, manifest: list[tuple[str, str]], root: Path, device: torch.device):
        speakers = sorted({s for s, _ in manifest})
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        wavs, labels, starts, lengths = [], [], [], []
        offset = 0
        for spk, path in manifest:
            w = load_audio(root / path)
            wavs.append(torch.from_numpy(w))
            labels.append(self.speaker_index[spk])
            starts.append(offset)
            lengths.append(len(w))
            offset += len(w)
        self.audio = torch.cat(wavs).to(device)
        self.labels = torch.tensor(labels, device=device)
        self.starts = torch.tensor(starts, device=device)
        self.lengths = torch.tensor(lengths, device=device)
        self.n_classes = len(speakers)
        self.device = device
        log.info("loaded %d recordings, %d speakers, %.1f min", len(manifest), self.n_classes,
                 offset / TARGET_SAMPLE_RATE / 60)


@dataclass
class AugmentConfig:
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    noise_prob: float = 0.4
    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    babble_prob: float = 0.2
    babble_snr_db: tuple[float, float] = (13.0, 20.0)
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=g, device=device) * (hi - lo) + lo)


class BatchSampler:
    """Random labelled crops with speed perturbation, coloured noise, babble and simulated reverb.

    Every random draw comes from one ``torch.Generator`` seeded from the config,
    so a run is reproducible on the same device; ``state()``/``load_state()`` resume it.
    """

    def __init__(self, bank: WaveformBank, crop_s: float, aug: AugmentConfig, seed: int):
        self.bank, self.aug = bank, aug
        self.crop = int(crop_s * TARGET_SAMPLE_RATE)
        self.g = torch.Generator(device=bank.device)
        self.g.manual_seed(seed)

    def state(self) -> torch.Tensor:
        return self.g.get_state()

    def load_state(self, s: torch.Tensor) -> None:
        self.g.set_state(s)

    def _crops(self, idx: torch.Tensor, length: int) -> torch.Tensor:
        b = self.bank
        room = (b.lengths[idx] - length).clamp(min=1)
        off = (torch.rand(len(idx), generator=self.g, device=b.device) * room).long()
        pos = b.starts[idx, None] + off[:, None] + torch.arange(length, device=b.device)[None]
        return b.audio[pos.clamp(max=len(b.audio) - 1)]

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (wav (B, crop) float32, labels (B,) int64)."""
        import torchaudio.functional as AF

        b, dev, g, aug = self.bank, self.bank.device, self.g, self.aug
        idx = torch.randint(0, len(b.labels), (batch_size,), generator=g, device=dev)
        speed_pick = torch.randint(0, len(aug.speeds), (batch_size,), generator=g, device=dev)
        wav = torch.empty(batch_size, self.crop, device=dev)
        for k, sp in enumerate(aug.speeds):
            sel = (speed_pick == k).nonzero().flatten()
            if len(sel) == 0:
                continue
            if sp == 1.0:
                wav[sel] = self._crops(idx[sel], self.crop)
            else:
                src = int(round(self.crop * sp))
                x = self._crops(idx[sel], src + 64)
                # playing src samples in crop samples' time: resample src_rate -> 16k
                y = AF.resample(x, int(round(TARGET_SAMPLE_RATE * sp)), TARGET_SAMPLE_RATE)
                wav[sel] = y[:, : self.crop]
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
            L = self.crop + rir_len
            nfft = 1 << (L - 1).bit_length()
            y = torch.fft.irfft(torch.fft.rfft(wav[rev], nfft) * torch.fft.rfft(rir, nfft), nfft)[:, : self.crop]
            y = y * torch.sqrt(power[rev] / y.pow(2).mean(dim=1, keepdim=True).clamp(min=1e-8))
            wav[rev] = y

        # coloured noise: white (0), pink (1), brown (2) spectral slope
        noi = torch.rand(batch_size, generator=g, device=dev) < aug.noise_prob
        if noi.any():
            n = int(noi.sum())
            spec = torch.fft.rfft(torch.randn(n, self.crop, generator=g, device=dev))
            freqs = torch.arange(spec.shape[1], device=dev).clamp(min=1).float()
            slope = torch.randint(0, 3, (n, 1), generator=g, device=dev).float()
            noise = torch.fft.irfft(spec / freqs[None].pow(slope / 2), self.crop)
            snr = _uniform(n, *aug.noise_snr_db, g, dev)[:, None]
            scale = torch.sqrt(power[noi] / (noise.pow(2).mean(1, keepdim=True) * 10 ** (snr / 10)))
            wav[noi] = wav[noi] + noise * scale

        # babble: sum of 3 crops of other training recordings
        bab = torch.rand(batch_size, generator=g, device=dev) < aug.babble_prob
        if bab.any():
            n = int(bab.sum())
            others = torch.randint(0, len(b.labels), (n * 3,), generator=g, device=dev)
            babble = self._crops(others, self.crop).view(n, 3, self.crop).sum(1)
            snr = _uniform(n, *aug.babble_snr_db, g, dev)[:, None]
            scale = torch.sqrt(power[bab] / (babble.pow(2).mean(1, keepdim=True).clamp(min=1e-8) * 10 ** (snr / 10)))
            wav[bab] = wav[bab] + babble * scale

        peak = wav.abs().amax(dim=1, keepdim=True).clamp(min=1e-4)
        wav = wav / peak * 0.9
        return wav, b.labels[idx]
