"""Objective measures: SI-SDR and multi-resolution log-spectral distance (numpy, per clip)."""

from __future__ import annotations

import numpy as np
from scipy import signal

# The shared music is decoded from lossy files band-limited near 16 kHz: the top octave is not
# ground truth, so spectral distances stop below it.
LSD_MAX_HZ = 16000.0


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SDR in dB over all channels, (channels, n) or (n,)."""
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    n = min(len(est), len(ref))
    est, ref = est[:n] - est[:n].mean(), ref[:n] - ref[:n].mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


def log_spectral_distance(estimate: np.ndarray, reference: np.ndarray, sr: int,
                          n_ffts: tuple[int, ...] = (512, 1024, 2048)) -> float:
    """Mean over resolutions of the frame-wise RMS difference of dB power spectra (below 16 kHz).

    A floor 80 dB under the reference's peak keeps near-silent bins from dominating.
    """
    est = np.atleast_2d(np.asarray(estimate, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    n = min(est.shape[-1], ref.shape[-1])
    est, ref = est[..., :n], ref[..., :n]
    out = []
    for n_fft in n_ffts:
        _, _, e = signal.stft(est, sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
        freqs, _, r = signal.stft(ref, sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
        keep = freqs <= LSD_MAX_HZ
        pe, pr = np.abs(e[:, keep]) ** 2, np.abs(r[:, keep]) ** 2
        floor = pr.max() * 1e-8 + 1e-20
        d = 10 * np.log10(pe + floor) - 10 * np.log10(pr + floor)
        out.append(float(np.mean(np.sqrt(np.mean(d ** 2, axis=-2)))))
    return float(np.mean(out))
