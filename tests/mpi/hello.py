from mpi4py import MPI

from mpi_util import emit

emit({"rank": MPI.COMM_WORLD.rank, "size": MPI.COMM_WORLD.size})
