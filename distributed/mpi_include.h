// <mpi.h> without the deprecated C++ bindings (Open MPI and MPICH pull them into C++ code,
// and they need libmpi_cxx at link time). Include this instead of <mpi.h>.
#pragma once
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
