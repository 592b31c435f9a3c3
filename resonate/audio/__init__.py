"""Audio at the edges: reading, writing, resampling."""
