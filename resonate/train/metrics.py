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


def level_aligned(estimate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``estimate`` (cut to the common length) times the gain that brings it closest to
    ``reference`` in the least-squares sense: SI-SDR's own scaling."""
    n = min(np.shape(estimate)[-1], np.shape(reference)[-1])
    e = np.asarray(estimate, dtype=np.float64)[..., :n]
    r = np.asarray(reference, dtype=np.float64)[..., :n]
    return e * (np.sum(e * r) / (np.sum(e * e) + 1e-20))


def log_spectral_distance(estimate: np.ndarray, reference: np.ndarray, sr: int,
                          n_ffts: tuple[int, ...] = (512, 1024, 2048), align_level: bool = True) -> float:
    """Mean over resolutions of the frame-wise RMS difference of dB power spectra (below 16 kHz).

    The estimate is first level-aligned to the reference (``level_aligned``), so the distance
    measures spectral damage, not loudness: a chain that ends by bringing the file to -14 LUFS is
    not scored as 10 dB of spectral error (users compare loudness-matched). A floor 80 dB under
    the reference's peak keeps near-silent bins from dominating.
    """
    est = np.atleast_2d(np.asarray(estimate, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    n = min(est.shape[-1], ref.shape[-1])
    est, ref = est[..., :n], ref[..., :n]
    if align_level:
        est = level_aligned(est, ref)
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


HIGH_BAND_HZ = (10000.0, 16000.0)


def band_balance_db(estimate: np.ndarray, reference: np.ndarray, sr: int,
                    band_hz: tuple[float, float] = HIGH_BAND_HZ) -> float | None:
    """How much louder (dB; negative: quieter) ``band_hz`` is in ``estimate`` than in ``reference``
    relative to each signal's total power: the level of one band once the two signals are
    level-aligned. A restorer that takes the music's highs away with a crowd reads strongly
    negative here while SI-SDR, dominated by the loud low and middle bands, barely notices.
    None where the band is above Nyquist or the reference holds nothing there."""
    if band_hz[1] > sr / 2:
        return None

    def share(x: np.ndarray) -> tuple[float, float]:
        f, p = signal.welch(np.atleast_2d(x).astype(np.float64), sr, nperseg=4096, axis=-1)
        p = p.sum(axis=0)
        in_band = (f >= band_hz[0]) & (f < band_hz[1])
        return float(p[in_band].sum()), float(p.sum())

    band_e, total_e = share(estimate)
    band_r, total_r = share(reference)
    if band_r <= 1e-12 * total_r or total_e <= 0:
        return None
    return float(10 * np.log10((band_e / total_e + 1e-20) / (band_r / total_r)))
