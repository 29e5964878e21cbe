"""Training on several processes: ``torchrun --nproc_per_node=N -m clearlstm.cli train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; with more than one
process, :func:`setup` joins the group over gloo (CPU) and the training loop wraps the model in
DistributedDataParallel. Every process reads the same data and draws the same shuffled
order; each takes its slice of every global batch, and the gradients are averaged so that
the update equals a single process's on the whole global batch. Only rank 0 writes files and
prints.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group: ``rank`` of ``world_size`` (1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup() -> Distributed:
    """Join the process group when started by torchrun with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def teardown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Distributed) -> None:
    """Wait for every process (for example until rank 0 has written a file)."""
    if context.active:
        dist.barrier()


def exit_worker(code: int) -> None:
    """Under torchrun with several processes, end this one now with ``code``.

    At interpreter exit torch's distributed machinery (gloo's and the store's threads) can
    abort a finished worker ("terminate called without an active exception", about 1 run in
    10 under load, after every file was written), and torchrun then reports the whole run as
    failed. Everything is written and flushed by now, so the process skips that teardown.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
