import time

from harness.proxy.client import encode_command
from harness.proxy.tracker import MAX_HEADER_LENGTH, ExecPoint, TransactionTracker


def command(*arguments: str | bytes) -> bytes:
    return encode_command([a.encode() if isinstance(a, str) else a for a in arguments])


def feed_all(tracker: TransactionTracker, *commands: bytes) -> list[ExecPoint]:
    return tracker.feed(b"".join(commands))


def test_watch_keys_tracked_in_order():
    tracker = TransactionTracker()
    feed_all(tracker, command("WATCH", "b", "a"), command("watch", "b", "c"))
    assert list(tracker.watched) == [(0, b"b"), (0, b"a"), (0, b"c")]
    assert tracker.in_multi is False


def test_exec_reports_and_clears_watched_keys():
    tracker = TransactionTracker()
    points = feed_all(
        tracker,
        command("WATCH", "k1", "k2"),
        command("MULTI"),
        command("SADD", "k1", "x"),
        command("EXEC"),
    )
    assert len(points) == 1
    assert points[0].watched == ((0, b"k1"), (0, b"k2"))
    assert tracker.watched == {}
    assert tracker.in_multi is False


def test_exec_offset_is_start_of_exec_in_pipeline():
    tracker = TransactionTracker()
    before = command("WATCH", "k") + command("MULTI") + command("SET", "k", "v" * 300)
    data = before + command("EXEC") + command("GET", "k")
    points = tracker.feed(data)
    assert [point.offset for point in points] == [len(before)]


def test_two_transactions_in_one_chunk():
    tracker = TransactionTracker()
    first = command("WATCH", "a") + command("MULTI") + command("EXEC")
    second = command("WATCH", "b") + command("MULTI") + command("DEL", "b")
    points = tracker.feed(first + second + command("EXEC"))
    assert points == [
        ExecPoint(len(first) - len(command("EXEC")), ((0, b"a"),)),
        ExecPoint(len(first + second), ((0, b"b"),)),
    ]


def test_exec_without_watched_keys_is_not_reported():
    tracker = TransactionTracker()
    points = feed_all(tracker, command("MULTI"), command("INCR", "n"), command("EXEC"))
    assert points == []
    assert tracker.in_multi is False


def test_exec_without_multi_keeps_watched_keys():
    tracker = TransactionTracker()
    points = feed_all(tracker, command("WATCH", "k"), command("EXEC"))
    assert points == []
    assert list(tracker.watched) == [(0, b"k")]


def test_unwatch_clears_watched_keys():
    tracker = TransactionTracker()
    feed_all(tracker, command("WATCH", "k"), command("UNWATCH"))
    assert tracker.watched == {}


def test_unwatch_inside_multi_keeps_keys():
    tracker = TransactionTracker()
    points = feed_all(
        tracker,
        command("WATCH", "k"),
        command("MULTI"),
        command("UNWATCH"),
        command("EXEC"),
    )
    assert [point.watched for point in points] == [((0, b"k"),)]


def test_watch_inside_multi_is_ignored():
    tracker = TransactionTracker()
    points = feed_all(
        tracker,
        command("WATCH", "a"),
        command("MULTI"),
        command("WATCH", "b"),
        command("EXEC"),
    )
    assert [point.watched for point in points] == [((0, b"a"),)]


def test_discard_clears_watched_keys():
    tracker = TransactionTracker()
    feed_all(tracker, command("WATCH", "k"), command("MULTI"), command("DISCARD"))
    assert tracker.watched == {}
    assert tracker.in_multi is False


def test_discard_without_multi_keeps_watched_keys():
    tracker = TransactionTracker()
    feed_all(tracker, command("WATCH", "k"), command("DISCARD"))
    assert list(tracker.watched) == [(0, b"k")]


def test_reset_clears_keys_multi_and_database():
    tracker = TransactionTracker()
    feed_all(
        tracker,
        command("SELECT", "4"),
        command("WATCH", "k"),
        command("MULTI"),
        command("RESET"),
    )
    assert tracker.watched == {}
    assert tracker.in_multi is False
    assert tracker.db == 0


def test_select_sets_database_of_later_watches():
    tracker = TransactionTracker()
    feed_all(
        tracker,
        command("WATCH", "a"),
        command("SELECT", "3"),
        command("WATCH", "a"),
        command("SELECT", "not-a-number"),
    )
    assert list(tracker.watched) == [(0, b"a"), (3, b"a")]
    assert tracker.db == 3


def test_exec_with_arguments_is_not_an_exec():
    tracker = TransactionTracker()
    points = feed_all(
        tracker, command("WATCH", "k"), command("MULTI"), command("EXEC", "x")
    )
    assert points == []
    assert tracker.in_multi is True


def test_inline_commands_are_skipped():
    tracker = TransactionTracker()
    points = tracker.feed(
        b"PING\r\nWATCH inline-key\n"
        + command("WATCH", "k")
        + b"MULTI\r\n"
        + command("MULTI")
        + command("EXEC")
    )
    assert [point.watched for point in points] == [((0, b"k"),)]


def test_empty_arrays_are_skipped():
    tracker = TransactionTracker()
    points = tracker.feed(
        b"*0\r\n*-1\r\n" + command("WATCH", "k") + command("MULTI") + command("EXEC")
    )
    assert [point.watched for point in points] == [((0, b"k"),)]


def test_every_split_point_gives_same_result():
    stream = b"".join(
        [
            command("SET", "v", "x" * 40),
            command("WATCH", "key-1", "key-2"),
            command("MULTI"),
            command("HSET", "key-1", "field", "value"),
            command("EXEC"),
            command("GET", "v"),
        ]
    )
    exec_start = stream.index(command("EXEC"))
    exec_end = exec_start + len(command("EXEC"))
    for split in range(len(stream) + 1):
        tracker = TransactionTracker()
        first = tracker.feed(stream[:split])
        second = tracker.feed(stream[split:])
        assert tracker.error is None
        assert tracker.buffered_bytes == 0
        if exec_end <= split:
            assert first == [ExecPoint(exec_start, ((0, b"key-1"), (0, b"key-2")))]
            assert second == []
        else:
            # The EXEC completes in the second chunk. Its offset there is 0
            # when it began in the first chunk.
            expected_offset = max(exec_start, split) - split
            assert first == []
            assert second == [
                ExecPoint(expected_offset, ((0, b"key-1"), (0, b"key-2")))
            ]


def test_one_byte_chunks_give_same_result():
    stream = command("WATCH", "k") + command("MULTI") + command("EXEC")
    tracker = TransactionTracker()
    points = [point for byte in stream for point in tracker.feed(bytes([byte]))]
    assert points == [ExecPoint(0, ((0, b"k"),))]


def test_large_value_is_not_buffered():
    tracker = TransactionTracker()
    value = b"v" * (1024 * 1024)
    data = command("SET", "k", value) + command("WATCH", "k")
    for start in range(0, len(data), 65536):
        tracker.feed(data[start : start + 65536])
        assert tracker.buffered_bytes < 100
    assert list(tracker.watched) == [(0, b"k")]


def test_invalid_bulk_header_stops_tracking():
    tracker = TransactionTracker()
    points = tracker.feed(
        command("WATCH", "k") + b"*2\r\n:1\r\n" + command("MULTI") + command("EXEC")
    )
    assert points == []
    assert tracker.error == "expected '$' at the start of a bulk string, got b':'"
    assert tracker.feed(command("WATCH", "k") + command("MULTI")) == []


def test_invalid_array_length_stops_tracking():
    tracker = TransactionTracker()
    tracker.feed(b"*x\r\n")
    assert tracker.error == "invalid array length b'x'"


def test_header_without_line_end_stops_tracking():
    tracker = TransactionTracker()
    tracker.feed(b"*" + b"1" * (MAX_HEADER_LENGTH - 1))
    assert tracker.error is None
    tracker.feed(b"1")
    assert tracker.error == (
        f"no line end within {MAX_HEADER_LENGTH} bytes of a header or inline command"
    )


def test_parser_handles_10k_commands_per_second():
    # The proxy must keep up with about 10,000 commands/s on one core. The
    # parser is far faster, so the bound leaves room for a loaded machine.
    commands = [command("SET", f"key:{i}", "value") for i in range(5000)]
    commands += [command("GET", f"key:{i}") for i in range(5000)]
    data = b"".join(commands)
    tracker = TransactionTracker()
    started = time.perf_counter()
    for start in range(0, len(data), 65536):
        tracker.feed(data[start : start + 65536])
    elapsed = time.perf_counter() - started
    assert tracker.error is None
    assert tracker.buffered_bytes == 0
    assert elapsed < 1.0
