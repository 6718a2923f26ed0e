import numpy as np
import pytest
import torch
import torchaudio

from nestspk.features import FrontendConfig, LogMelFrontend, mel_filterbank, normalize_level


@pytest.mark.parametrize("n_mels", [40, 80])
def test_log_mel_matches_torchaudio(speech, n_mels):
    cfg = FrontendConfig(n_mels=n_mels)
    fe = LogMelFrontend(cfg)
    x = torch.from_numpy(speech)[None]
    y = normalize_level(x)  # the front end's first step (tests/test_level.py)
    ta = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=512, win_length=400, hop_length=160, f_min=20, f_max=7600, n_mels=n_mels,
        window_fn=torch.hamming_window, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk")
    pre = torch.cat([y[:, :1] * (1 - 0.97), y[:, 1:] - 0.97 * y[:, :-1]], dim=1)
    ref = torch.log(ta(pre) + 1e-6)
    out = fe.log_mel(x)
    assert out.shape == ref.shape == (1, n_mels, len(speech) // 160 + 1)
    diff = (out - ref).abs().max().item()
    # conv1d-DFT vs torch.stft in float32: rounding only; report the figure
    print(f"max abs diff vs torchaudio MelSpectrogram (log domain, n_mels={n_mels}): {diff:.2e}")
    assert diff < 1e-3


def test_filterbank_matches_torchaudio():
    cfg = FrontendConfig(n_mels=80)
    ref = torchaudio.functional.melscale_fbanks(257, 20.0, 7600.0, 80, 16000, norm=None, mel_scale="htk")
    # ours is computed in float64 then rounded; torchaudio in float32
    assert torch.allclose(mel_filterbank(cfg), ref, atol=2e-5)


def test_instance_norm_and_shapes():
    fe = LogMelFrontend(FrontendConfig(n_mels=40))
    x = torch.randn(3, 16000) * 0.1
    f = fe(x)
    assert f.shape == (3, 40, 101)
    assert torch.allclose(f.mean(-1), torch.zeros(3, 40), atol=1e-4)
    assert torch.allclose(f.std(-1, unbiased=False), torch.ones(3, 40), atol=1e-2)


def test_config_round_trip():
    cfg = FrontendConfig(n_mels=40)
    assert FrontendConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("f_max", [7600.0, 8000.0, 4000.0])
def test_cropped_dft_equals_full_stft(f_max: float) -> None:
    """The front end keeps only the window's taps and the mel-weighted bins; the log-mel must not change."""
    import torch.nn.functional as F

    from nestspk.features import FrontendConfig, LogMelFrontend, dft_basis, mel_filterbank, used_bins

    cfg = FrontendConfig(f_max=f_max)
    first, stop = used_bins(cfg)
    fb = mel_filterbank(cfg)
    assert (fb[:first] == 0).all() and (fb[stop:] == 0).all() and (fb[first:stop].sum(dim=1) > 0).any()
    fe = LogMelFrontend(cfg)
    assert fe.basis.shape == (cfg.win_length, 2 * (stop - first))
    x = torch.randn(2, 16000 + 37, generator=torch.Generator().manual_seed(0)) * 0.1
    x0 = normalize_level(x)
    y = torch.cat([x0[:, :1] * (1 - cfg.preemphasis), x0[:, 1:] - cfg.preemphasis * x0[:, :-1]], dim=1)
    spec = F.conv1d(F.pad(y.unsqueeze(1), (256, 256), mode="reflect"), dft_basis(cfg), stride=cfg.hop_length)
    n = cfg.n_fft // 2 + 1
    full = torch.log(torch.matmul(fb.t(), spec[:, :n] ** 2 + spec[:, n:] ** 2) + cfg.log_eps)
    got = fe.log_mel(x)
    assert got.shape == full.shape
    # same products, another summation order (matmul vs conv1d); a missing tap or bin is O(0.1..10)
    assert (got - full).abs().max() < 3e-4  # ~1e-4 at unit RMS: float32 rounding of log-mel values up to ~10


def _log_mel_float64(x: torch.Tensor, cfg: FrontendConfig) -> torch.Tensor:
    """Reference log-mel: level normalisation, pre-emphasis, torch.stft and the filterbank, all in float64."""
    y = x.double()
    y = y - y.mean(dim=1, keepdim=True)
    y = y / torch.sqrt(y.pow(2).mean(dim=1, keepdim=True) + 1e-10)
    y = torch.cat([y[:, :1] * (1 - cfg.preemphasis), y[:, 1:] - cfg.preemphasis * y[:, :-1]], dim=1)
    window = torch.hamming_window(cfg.win_length, periodic=True, dtype=torch.float64)
    spec = torch.stft(y, cfg.n_fft, cfg.hop_length, cfg.win_length, window, center=True, pad_mode="reflect",
                      return_complex=True)
    return torch.log(torch.matmul(mel_filterbank(cfg).double().t(), spec.abs() ** 2) + cfg.log_eps)


@pytest.mark.parametrize("cfg", [FrontendConfig(), FrontendConfig(n_mels=40), FrontendConfig(f_max=8000.0),
                                 FrontendConfig(f_max=4000.0), FrontendConfig(win_length=392)],
                         ids=["default", "40mels", "fmax8000", "fmax4000", "win392"])
@pytest.mark.parametrize("samples", [400, 16000 + 37, 128000])
def test_factored_dft_matches_float64_stft(cfg: FrontendConfig, samples: int) -> None:
    """dft='factored' (the ONNX front end) is the same transform: as close to a float64 STFT as 'direct' is."""
    x = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples)) * 0.1
    ref = _log_mel_float64(x, cfg)
    direct = LogMelFrontend(cfg).log_mel(x).double()
    factored = LogMelFrontend(cfg, dft="factored").log_mel(x).double()
    assert factored.shape == ref.shape == direct.shape
    err_f, err_d = (factored - ref).abs(), (direct - ref).abs()
    print(f"{cfg.f_max} {cfg.n_mels} {cfg.win_length} T={samples}: max |err| factored {err_f.max():.2e} "
          f"direct {err_d.max():.2e}; mean {err_f.mean():.2e} / {err_d.mean():.2e}")
    # float32 rounding magnified by the log at near-silent bins; a wrong twiddle or bin order is O(1)
    assert err_f.max() < 1e-3 and err_f.mean() < 3e-6


def test_factored_dft_on_speech_and_bad_config(speech) -> None:
    x = torch.from_numpy(speech)[None]
    a, b = LogMelFrontend(FrontendConfig())(x), LogMelFrontend(FrontendConfig(), dft="factored")(x)
    assert (a - b).abs().max() < 1e-3
    with pytest.raises(ValueError, match="divisible by 16"):
        LogMelFrontend(FrontendConfig(hop_length=100), dft="factored")
    with pytest.raises(ValueError, match="unknown dft"):
        LogMelFrontend(FrontendConfig(), dft="fft")


@pytest.mark.parametrize("dft", ["direct", "factored"])
def test_front_end_stays_float32_under_autocast(dft: str) -> None:
    """Autocast must not reach the front end: a full-scale tone's power (~1e5) overflows fp16."""
    t = torch.arange(32000) / 16000
    x = torch.stack([torch.sin(2 * torch.pi * 1000 * t), 0.01 * torch.randn(32000)])
    fe = LogMelFrontend(FrontendConfig(), dft=dft)
    ref = fe(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fe(x)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.equal(got, ref)
