"""Signal processing building blocks shared by stages (pure numpy/scipy, streaming with state)."""
