"""Particle systems across processes and GPUs with ``torch.distributed``.

``ps.sample(problem, method, num_particles=N, ..., distributed=True)`` inside an initialised
process group (``torchrun``) splits the work over the ranks; see
:mod:`posterior.samplers.distributed` for the modes and README "Several GPUs or machines".
This package holds the communication layer, which depends on ``torch`` alone:

* :mod:`~posterior.distributed.comm` the communicators (single process, ``torch.distributed``);
* :mod:`~posterior.distributed.exchange` which particles a resampling moves between ranks;
* :mod:`~posterior.distributed.context` the active communicator, for reductions over particles;
* :mod:`~posterior.distributed.launch` ``torchrun`` helpers.
"""

from posterior.distributed.comm import Communicator, TorchCommunicator, Traffic, split
from posterior.distributed.context import (
    LOCAL,
    current_communicator,
    particle_mean,
    particle_sum,
    use_communicator,
)
from posterior.distributed.exchange import ExchangePlan, exchange_volume, plan_exchange
from posterior.distributed.launch import init_from_env, is_main_process, launched

__all__ = [
    "LOCAL",
    "Communicator",
    "ExchangePlan",
    "TorchCommunicator",
    "Traffic",
    "current_communicator",
    "exchange_volume",
    "init_from_env",
    "is_main_process",
    "launched",
    "particle_mean",
    "particle_sum",
    "plan_exchange",
    "split",
    "use_communicator",
]
