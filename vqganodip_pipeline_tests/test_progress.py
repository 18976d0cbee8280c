"""Throughput lines: at most one per interval and one at the end, with the rate and time left."""

from vqganodip_pipeline.workflow.progress import Throughput


def test_throughput_logs_rate_and_time_left_at_most_every_interval() -> None:
    now = [100.0]
    lines: list[str] = []
    progress = Throughput("batch_metrics[s1]", 1000, lines.append, every_s=10, clock=lambda: now[0])
    for _ in range(9):  # 9 x 32 images, 4 s each: a line only when 10 s have passed
        now[0] += 4.0
        progress.update(32)
    assert len(lines) == 3  # at 12, 24 and 36 s
    assert lines[0] == "batch_metrics[s1]: 96/1000 images (10%), 8.00 images/s, about 1.9 min left"
    now[0] += 89.0
    progress.update(1000 - progress.done)
    assert lines[-1] == "batch_metrics[s1]: 1000/1000 images (100%), 8.00 images/s, done in 2.1 min"
    assert progress.images_per_second == 1000 / 125


def test_an_empty_batch_reports_done() -> None:
    lines: list[str] = []
    progress = Throughput("x", 0, lines.append, clock=lambda: 0.0)
    progress.update(0)
    assert lines == ["x: 0/0 images (100%), 0.00 images/s, done in 0 s"]
