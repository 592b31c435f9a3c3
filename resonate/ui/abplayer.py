"""The A/B player: the same excerpt of original and restored, at equal loudness, one clock.

Louder always sounds better, so a fair comparison plays both at the same integrated loudness:
the louder excerpt is turned down to the quieter one's level (turning down never clips). The
two excerpts are encoded here (MP3, so a minute of stereo stays around a megabyte) and decoded
by WebAudio in the browser into two buffers started on the same AudioContext clock; switching
only crossfades two gain nodes over a few milliseconds, so the position is kept and there is no
gap. ``st.audio`` is not used: it would normalise levels and give two unsynchronised players.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from resonate.audio.io import probe, read_audio, write_audio
from resonate.dsp.loudness import integrated_lufs

MIN_EXCERPT_S = 30.0
MAX_EXCERPT_S = 60.0
EXCERPT_BITRATE = 192
CROSSFADE_MS = 8


@dataclass(frozen=True)
class ABExcerpt:
    original: np.ndarray        # (channels, n) float32, level-matched
    restored: np.ndarray
    sample_rate: int
    start_s: float
    seconds: float
    original_gain_db: float     # gain applied to match
    restored_gain_db: float
    matched_lufs: float | None  # the common integrated loudness (None when an excerpt is silent)


def excerpt_bounds(duration_s: float, start_s: float, seconds: float) -> tuple[float, float]:
    """Clamp a requested excerpt to the recording: 30-60 s long, or the whole clip if shorter."""
    seconds = min(max(seconds, MIN_EXCERPT_S), MAX_EXCERPT_S, duration_s)
    start_s = min(max(0.0, start_s), max(0.0, duration_s - seconds))
    return start_s, seconds


def _read_range(path: str | os.PathLike, start_s: float, seconds: float, rate: int) -> np.ndarray:
    sr = probe(path).sample_rate
    x, _ = read_audio(path, int(round(start_s * sr)), int(round((start_s + seconds) * sr)))
    if sr != rate:
        x = soxr.resample(x.T, sr, rate, quality="HQ").T.astype(np.float32)
    return x


def level_matched_excerpts(original: str | os.PathLike, restored: str | os.PathLike,
                           start_s: float, seconds: float) -> ABExcerpt:
    """The same stretch of both files, both at the quieter one's integrated loudness."""
    info = probe(original)
    start_s, seconds = excerpt_bounds(info.seconds, start_s, seconds)
    a = _read_range(original, start_s, seconds, info.sample_rate)
    b = _read_range(restored, start_s, seconds, info.sample_rate)
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[:, :n], b[:, :n]
    if b.shape[0] != a.shape[0]:
        b = np.repeat(b, a.shape[0], axis=0) if b.shape[0] == 1 else b.mean(axis=0, keepdims=True)
    la, lb = integrated_lufs(a, info.sample_rate), integrated_lufs(b, info.sample_rate)
    if not (np.isfinite(la) and np.isfinite(lb)):
        return ABExcerpt(a, b, info.sample_rate, start_s, seconds, 0.0, 0.0, None)
    target = min(la, lb)
    ga, gb = target - la, target - lb
    return ABExcerpt((a * 10 ** (ga / 20)).astype(np.float32), (b * 10 ** (gb / 20)).astype(np.float32),
                     info.sample_rate, start_s, seconds, round(ga, 2), round(gb, 2), round(target, 2))


def encode_mp3(x: np.ndarray, sample_rate: int, bitrate: int = EXCERPT_BITRATE) -> bytes:
    with tempfile.TemporaryDirectory(prefix="resonate-ab-") as tmp:
        path = Path(tmp) / "excerpt.mp3"
        write_audio(path, x, sample_rate, format="mp3", mp3_bitrate=bitrate, seed=0)
        return path.read_bytes()


def player_html(excerpt: ABExcerpt, height_px: int = 110) -> str:
    """Self-contained HTML/JS for ``streamlit.components.v1.html``."""
    data = {
        "a": base64.b64encode(encode_mp3(excerpt.original, excerpt.sample_rate)).decode("ascii"),
        "b": base64.b64encode(encode_mp3(excerpt.restored, excerpt.sample_rate)).decode("ascii"),
        "start": excerpt.start_s,
        "crossfade": CROSSFADE_MS / 1000.0,
    }
    if excerpt.matched_lufs is not None:
        note = (f"Both at {excerpt.matched_lufs:.1f} LUFS (original {excerpt.original_gain_db:+.1f} dB, "
                f"restored {excerpt.restored_gain_db:+.1f} dB)")
    else:
        note = "One excerpt is silent; levels are not matched"
    return _TEMPLATE.replace("__DATA__", json.dumps(data)).replace("__NOTE__", note).replace(
        "__HEIGHT__", str(height_px))


_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  body { font-family: "Source Sans Pro", sans-serif; margin: 0; color: #31333F; }
  #ab-player { border: 1px solid #d6d6d9; border-radius: 8px; padding: 10px 12px; height: __HEIGHT__px;
               box-sizing: border-box; }
  .row { display: flex; align-items: center; gap: 8px; margin-bottom: 8px; }
  button { font-size: 14px; padding: 4px 12px; border-radius: 6px; border: 1px solid #c4c4c8;
           background: #fff; cursor: pointer; }
  button.active { background: #ff4b4b; color: #fff; border-color: #ff4b4b; }
  button:disabled { opacity: .5; cursor: default; }
  input[type=range] { flex: 1; }
  .small { font-size: 12px; color: #6b6d76; }
  #ab-time { font-variant-numeric: tabular-nums; min-width: 90px; text-align: right; }
</style></head><body>
<div id="ab-player">
  <div class="row">
    <button id="ab-play" disabled>Loading…</button>
    <button id="ab-a" class="active" title="key A">A · Original</button>
    <button id="ab-b" title="key B">B · Restored</button>
    <span class="small">A / B keys or space to switch</span>
  </div>
  <div class="row">
    <input id="ab-seek" type="range" min="0" max="1000" value="0" disabled>
    <span id="ab-time">0:00</span>
  </div>
  <div class="small">__NOTE__ · switching keeps the playback position</div>
</div>
<script>
(function () {
  const D = __DATA__;
  const AC = window.AudioContext || window.webkitAudioContext;
  const ctx = new AC();
  const gains = [ctx.createGain(), ctx.createGain()];
  gains[0].gain.value = 1; gains[1].gain.value = 0;
  gains.forEach(g => g.connect(ctx.destination));
  let buffers = null, sources = null, which = 0, playing = false, t0 = 0, offset = 0;
  const $ = id => document.getElementById(id);
  const fmt = s => Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

  function decode(b64) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return ctx.decodeAudioData(bytes.buffer);
  }
  function duration() { return Math.min(buffers[0].duration, buffers[1].duration); }
  function position() { return playing ? (ctx.currentTime - t0) % duration() : offset; }
  function stop() {
    if (sources) sources.forEach(s => { try { s.stop(); } catch (e) {} });
    sources = null;
  }
  function start(at) {
    stop();
    // Both sources start on the same clock tick at the same offset: they stay sample-aligned.
    const when = ctx.currentTime + 0.03;
    sources = buffers.map((buf, i) => {
      const s = ctx.createBufferSource();
      s.buffer = buf; s.loop = true; s.loopEnd = duration();
      s.connect(gains[i]); s.start(when, at);
      return s;
    });
    t0 = when - at;
  }
  function select(i) {
    which = i;
    const now = ctx.currentTime, fade = D.crossfade;
    gains.forEach((g, k) => {
      g.gain.cancelScheduledValues(now);
      g.gain.setValueAtTime(g.gain.value, now);
      g.gain.linearRampToValueAtTime(k === i ? 1 : 0, now + fade);
    });
    $("ab-a").classList.toggle("active", i === 0);
    $("ab-b").classList.toggle("active", i === 1);
  }
  function togglePlay() {
    if (!buffers) return;
    ctx.resume();
    if (playing) { offset = position(); stop(); playing = false; }
    else { start(offset); playing = true; }
    $("ab-play").textContent = playing ? "Pause" : "Play";
  }
  function onKey(e) {
    const tag = (e.target && e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || (e.target && e.target.isContentEditable)) return;
    const k = (e.key || "").toLowerCase();
    if (k === "a") select(0);
    else if (k === "b") select(1);
    else if (k === " ") { e.preventDefault(); select(1 - which); }
  }
  $("ab-play").onclick = togglePlay;
  $("ab-a").onclick = () => select(0);
  $("ab-b").onclick = () => select(1);
  $("ab-seek").oninput = e => {
    offset = e.target.value / 1000 * duration();
    if (playing) start(offset);
  };
  document.addEventListener("keydown", onKey);
  try { window.parent.document.addEventListener("keydown", onKey); } catch (e) { /* other origin */ }
  setInterval(() => {
    if (!buffers) return;
    const p = position();
    $("ab-time").textContent = fmt(D.start + p) + " / " + fmt(D.start + duration());
    if (playing) $("ab-seek").value = Math.round(p / duration() * 1000);
  }, 200);
  Promise.all([decode(D.a), decode(D.b)]).then(b => {
    buffers = b;
    $("ab-play").disabled = false; $("ab-seek").disabled = false;
    $("ab-play").textContent = "Play";
    document.body.dataset.ready = "1";
  }).catch(err => { $("ab-play").textContent = "Cannot decode audio: " + err; });
  window.resonateAB = { select, togglePlay, position, get which() { return which; } };
})();
</script></body></html>
"""
