"""A context manager for the number of torch threads, shared by fixtures and module-level test setup."""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch threads, then restore the previous number. Training on 2 cores shared with other
    jobs is several times faster on one thread (two threads mostly wait for each other). Runs whose weights are
    compared bit for bit use the same count, so that no reduction could be split differently."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
