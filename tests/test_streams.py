import threading
import time

import numpy as np
import pytest

from resonate.streams import WriteBehind


def _blocks(n):
    return [np.full((2, 8), i, dtype=np.float32) for i in range(n)]


def test_blocks_are_consumed_in_order_in_another_thread():
    seen, threads = [], set()

    def consume(b):
        time.sleep(0.002)
        threads.add(threading.get_ident())
        seen.append(int(b[0, 0]))

    with WriteBehind(consume) as sink:
        for b in _blocks(50):
            sink.put(b)
    assert seen == list(range(50))
    assert threads and threading.get_ident() not in threads


def test_at_most_depth_blocks_wait():
    release = threading.Event()
    consumed = []

    def consume(b):
        release.wait()
        consumed.append(b)

    sink = WriteBehind(consume, depth=2)
    done = []
    producer = threading.Thread(target=lambda: [sink.put(b) for b in _blocks(6)] and done.append(True))
    producer.start()
    time.sleep(0.3)
    # One block held by the consumer, two queued: the producer waits on the fourth.
    assert not done and producer.is_alive()
    release.set()
    producer.join(5)
    sink.close()
    assert done and len(consumed) == 6


def test_consumer_error_reaches_the_caller_and_stops_consuming():
    consumed = []

    def consume(b):
        if int(b[0, 0]) == 3:
            raise OSError("disk full")
        consumed.append(int(b[0, 0]))

    with pytest.raises(OSError, match="disk full"), WriteBehind(consume) as sink:
        for b in _blocks(100):
            sink.put(b)
    assert consumed == [0, 1, 2]


def test_error_in_the_caller_abandons_queued_blocks():
    consumed = []
    before = threading.active_count()

    def consume(b):
        time.sleep(0.05)
        consumed.append(b)

    with pytest.raises(KeyError), WriteBehind(consume, depth=4) as sink:
        for b in _blocks(5):
            sink.put(b)
        raise KeyError("stage failed")
    assert len(consumed) < 5
    assert threading.active_count() == before
