"""Several processes under ``accelerate launch``: ranks, barriers, shards and gathers.

A run launched with ``accelerate launch -m presrm train ...`` starts one process per GPU (``WORLD_SIZE``
of them), each running the whole loop:

* **step search and evaluation are sharded**: each rank takes one contiguous block of the problems
  (:func:`shard`), works on it with its own copy of the model on its own GPU, and :func:`gather` puts the
  blocks back together in rank order, which is problem order. With ``engine: vllm`` and
  ``vllm.tensor_parallel_size`` n > 1, n consecutive ranks hold one model together (:func:`set_group_size`):
  they take the same block and :func:`gather` keeps the first rank's copy;
* **training runs on every rank** through TRL and accelerate (DDP, DeepSpeed ZeRO-3 or FSDP2, whatever
  the accelerate config says);
* **only rank 0 writes run files**, and a :func:`barrier` closes every stage, so every rank sees the same
  files when the next stage starts (and ``--resume`` skips the same stages on every rank).

In a single process (no ``WORLD_SIZE``, or 1) every function here is a no-op: :func:`shard` returns all
items and :func:`gather` returns its argument. Objects travel over a separate gloo group (CPU), so a
gather neither needs GPU memory nor depends on the NCCL backend.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT = timedelta(hours=3)
"""How long a rank waits at a barrier or gather. Ranks wait while rank 0 writes a model (a 7B model in fp32 is
28 GB) or runs a rank-0-only stage (judge evaluation), so this is hours, not torch's default 30 minutes."""

_group: Any = None
_group_size = 1
_peers: list[tuple[str, int]] = []
"""Every rank's ``(host, pid)``, in rank order, gathered when the run's processes join (:func:`init`)."""


def world_size() -> int:
    """Processes in the run (``WORLD_SIZE`` set by ``accelerate launch`` / ``torchrun``; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 in a single process)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine: the GPU it uses (``cuda:LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes run files (rank 0)."""
    return rank() == 0


def quiet_other_ranks() -> None:
    """On ranks > 0: no progress bars and warnings only, so a launch prints one process's output.

    Call it before anything imports tqdm: tqdm reads ``TQDM_*`` variables when it is imported.
    """
    if rank() > 0:
        os.environ.setdefault("TQDM_DISABLE", "1")
        logging.getLogger("presrm").setLevel(logging.WARNING)


def init() -> None:
    """Join the process group ``accelerate launch`` set up (NCCL on GPUs, gloo on CPUs) plus a gloo group for objects.

    Idempotent, and nothing to do in a single process. Accelerate's ``PartialState`` picks the backend and
    puts this process on ``cuda:LOCAL_RANK``.
    """
    global _group
    if world_size() == 1 or _group is not None:
        return
    import torch.distributed as tdist
    from accelerate import PartialState

    if not tdist.is_initialized():
        PartialState(timeout=TIMEOUT)
    _group = tdist.new_group(backend="gloo", timeout=TIMEOUT)
    global _peers
    _peers = gather([(socket.gethostname(), os.getpid())])
    log.info("process %d of %d (local rank %d) joined the run", rank(), world_size(), local_rank())


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if world_size() == 1:
        return
    import torch.distributed as tdist

    init()
    tdist.barrier(group=_group)


def set_group_size(size: int) -> None:
    """Ranks that hold one model together (vLLM's tensor parallel size under ``accelerate launch``; 1 otherwise).

    :func:`shard` then splits the problems over ``world_size() // size`` groups of consecutive ranks, every rank
    of a group taking its group's block, and :func:`gather` keeps one copy per group.
    """
    if size < 1 or world_size() % size:
        raise ValueError(f"{size} ranks per model do not divide the {world_size()} processes of this run")
    global _group_size
    _group_size = size


def shard_bounds(n: int, ranks: int | None = None, at: int | None = None) -> tuple[int, int]:
    """``(start, end)`` of rank ``at``'s contiguous block of ``n`` items split over ``ranks`` ranks.

    Blocks have ``ceil(n / ranks)`` items, the last ones fewer (or none), so rank 0 always has work
    when there is any.

    >>> [shard_bounds(5, 2, r) for r in range(2)], [shard_bounds(1, 2, r) for r in range(2)]
    ([(0, 3), (3, 5)], [(0, 1), (1, 1)])
    """
    ranks = world_size() // _group_size if ranks is None else ranks
    at = rank() // _group_size if at is None else at
    per = -(-n // ranks)
    return min(n, at * per), min(n, (at + 1) * per)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous block of ``items`` (all of them in a single process)."""
    start, end = shard_bounds(len(items))
    return list(items[start:end])


def gather(local: Sequence[T]) -> list[T]:
    """Every rank's ``local`` list, concatenated in rank order, on every rank (``local`` itself in one process).

    With :func:`shard` this restores the original order. Ranks of one model group (:func:`set_group_size`)
    hold the same block: the group's first rank gives it.
    """
    if world_size() == 1:
        return list(local)
    import torch.distributed as tdist

    init()
    parts: list[Any] = [None] * world_size()
    tdist.all_gather_object(parts, list(local), group=_group)
    return joined(parts)


def joined(parts: Sequence[Sequence[T]], group_size: int | None = None) -> list[T]:
    """Every rank's part (in rank order) as one list, one copy per model group (the group's first rank's).

    >>> joined([[1, 2], [1, 2], [3], [3]], group_size=2)
    [1, 2, 3]
    """
    size = _group_size if group_size is None else group_size
    return [x for at, part in enumerate(parts) if at % size == 0 for x in part]


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process); every rank must call it."""
    if world_size() == 1:
        return obj
    import torch.distributed as tdist

    init()
    box = [obj]
    tdist.broadcast_object_list(box, src=0, group=_group)
    return box[0]


def _ended(pid: int) -> bool:
    """Whether process ``pid`` (on this machine) has ended: gone, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")  # the state follows the (command)
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


def lost_ranks() -> list[int]:
    """The other ranks on this machine whose process has ended (exited, killed, crashed); ranks on other machines
    cannot be seen from here and are never listed."""
    host = socket.gethostname()
    return [at for at, (h, pid) in enumerate(_peers) if at != rank() and h == host and _ended(pid)]


_PEER_GONE = ("connection closed", "connection reset", "broken pipe", "connection refused", "socket closed")


def _collective_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because a peer went away (gloo's RuntimeError from its
    ``transport/tcp/pair.cc``: "Connection closed by peer", "Connection reset by peer"; NCCL: a
    ``DistBackendError`` after its watchdog aborted)."""
    import torch.distributed as tdist

    text = str(exc).lower()
    return isinstance(exc, tdist.DistError) or (
        isinstance(exc, RuntimeError) and "gloo" in text and any(m in text for m in _PEER_GONE))


def rank_lost(exc: BaseException, stage: str, wait: float = 3.0):
    """A :class:`presrm.errors.RankLostError` for ``exc`` raised during ``stage`` when another rank of the run is
    gone, else None (``exc`` is this rank's own error, to be raised as it is).

    Two ways in: a collective raises because a peer's connection closed (gloo notices at once), or the launcher
    (torchrun's elastic agent, under ``accelerate launch``) stops this rank with SIGTERM because another one ended.
    Either way the lost rank's process has ended on this machine, or ends within ``wait`` seconds (a socket closes
    just before its process becomes a zombie); a failed collective with no lost rank in sight names no rank (it
    ran on another machine). Ctrl-C (:class:`KeyboardInterrupt`) reaches every rank and is never a lost rank.
    """
    if world_size() == 1 or not _peers or isinstance(exc, KeyboardInterrupt):
        return None
    from presrm.errors import RankLostError

    collective = _collective_failed(exc)
    # SIGTERM from the launcher comes after it saw the lost rank end: look once. (A SIGTERM meant for every rank,
    # a cluster's time limit, finds every peer alive then, and stays a plain SIGTERM.)
    deadline = time.monotonic() + (wait if collective else 0.0)
    lost = lost_ranks()
    while not lost and time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except BaseException:  # noqa: BLE001 - the launcher's SIGTERM while we look: it stops every rank anyway
            pass
        lost = lost_ranks()
    if lost:
        who = f"rank {lost[0]} was" if len(lost) == 1 else f"ranks {', '.join(map(str, lost))} were"
        return RankLostError(f'{who} lost during stage "{stage}" (it exited or was killed); rerun with --resume')
    if collective:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return RankLostError(f'another rank was lost during stage "{stage}" (a collective failed: {first}); '
                             "rerun with --resume")
    return None
