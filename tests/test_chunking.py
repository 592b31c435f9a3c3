import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from resonate.chunking import OverlapAdd, apply_overlap_add, crossfade_weights, reblock


def _split(x, sizes):
    out, i = [], 0
    for s in sizes:
        out.append(x[..., i: i + s])
        i += s
    out.append(x[..., i:])
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    window=st.integers(8, 600),
    overlap_frac=st.floats(0.0, 0.5),
    sizes=st.lists(st.integers(0, 700), max_size=8),
    fixed=st.booleans(),
)
def test_streamed_equals_whole_for_pointwise_fn(n, window, overlap_frac, sizes, fixed):
    """Crossfade weights sum to one everywhere, so a pointwise function is reproduced exactly,
    however the stream is cut into blocks."""
    overlap = int(window * overlap_frac)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, n)).astype(np.float32)
    ola = OverlapAdd(lambda w: np.tanh(w) * 0.5, window, overlap, fixed_shape=fixed)
    y = np.concatenate(list(ola.stream(_split(x, sizes))), axis=-1)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, np.tanh(x) * 0.5, atol=1e-6)


def test_context_fn_matches_whole_away_from_nothing_and_has_no_seam_click():
    """A filter with memory (moving average) run in windows equals the whole-signal result within a
    small tolerance: the crossfade hides the window edges."""
    sr = 8000
    t = np.arange(sr * 3) / sr
    x = np.sin(2 * np.pi * 50 * t)[None].astype(np.float32)
    k = np.ones(9) / 9

    def smooth(w):
        return np.stack([np.convolve(c, k, mode="same") for c in w]).astype(np.float32)

    whole = smooth(x)
    chunked = apply_overlap_add(smooth, x, window=2000, overlap=400)
    assert np.max(np.abs(chunked - whole)) < 1e-2
    # No click: the sample-to-sample difference never jumps above the signal's own slope.
    assert np.max(np.abs(np.diff(chunked))) < 1.05 * np.max(np.abs(np.diff(whole)))


def test_leading_dims_can_change():
    x = np.ones((2, 1000), dtype=np.float32)
    y = apply_overlap_add(lambda w: np.stack([w, 2 * w]), x, 256, 64)
    assert y.shape == (2, 2, 1000)
    np.testing.assert_allclose(y[1], 2.0, atol=1e-6)


def test_weights_are_complementary():
    w = crossfade_weights(100, 20)
    np.testing.assert_allclose(w[80:] + w[:20], 1.0, atol=1e-12)
    assert w.min() > 0


def test_reblock_sizes():
    blocks = [np.zeros((1, n)) for n in (3, 10, 1, 7)]
    sizes = [b.shape[-1] for b in reblock(blocks, 4)]
    assert sizes == [4, 4, 4, 4, 4, 1]
