"""minidist.parallel: the data-parallel strategies and what they need.

* `wrap(model, strategy, comm, **options)` with strategies "local", "dp", "hub", "ddp"
  (wrap.py; one module per strategy);
* `SyncBatchNorm` (syncbn.py), `DistributedSampler`, `local_shard`, `shard_bounds`
  (sampler.py);
* per-rank memory accounting (memory.py), the replica drift check (drift.py);
* `Trainer` (trainer.py) and the scripts' models `MLP`, `SmallCNN` (models.py).
"""
from .base import ParallelModel, verify_same_model
from .ddp import DistributedDataParallel
from .dp import DataParallel
from .drift import ReplicaDriftError, assert_replicas_agree, parameter_digest
from .hub import HubParallel
from .local import LocalModel
from .memory import MemoryReport
from .models import MLP, SmallCNN, build_model
from .rootloss import RootLoss
from .sampler import DistributedSampler, local_shard, shard_bounds, shard_sizes
from .tail import NonFiniteGradientError
from ..nn.syncbn import SyncBatchNorm
from .trainer import Trainer, distributed_loader, train_step
from .wrap import STRATEGIES, wrap

__all__ = ["wrap", "STRATEGIES", "ParallelModel", "LocalModel", "DataParallel", "RootLoss", "NonFiniteGradientError",
           "HubParallel", "DistributedDataParallel", "SyncBatchNorm", "DistributedSampler",
           "local_shard", "shard_bounds", "shard_sizes", "MemoryReport", "ReplicaDriftError",
           "assert_replicas_agree", "parameter_digest", "verify_same_model", "MLP", "SmallCNN",
           "build_model", "Trainer", "distributed_loader", "train_step"]
