import numpy as np
import pytest
import torch
import torchaudio

from nestspk.features import FrontendConfig, LogMelFrontend, mel_filterbank


@pytest.mark.parametrize("n_mels", [40, 80])
def test_log_mel_matches_torchaudio(speech, n_mels):
    cfg = FrontendConfig(n_mels=n_mels)
    fe = LogMelFrontend(cfg)
    x = torch.from_numpy(speech)[None]
    ta = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=512, win_length=400, hop_length=160, f_min=20, f_max=7600, n_mels=n_mels,
        window_fn=torch.hamming_window, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk")
    pre = torch.cat([x[:, :1] * (1 - 0.97), x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
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
