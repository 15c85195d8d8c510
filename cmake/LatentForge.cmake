# Small helpers shared by every CMakeLists of LatentForge.

# lf_resolve_auto(VAR found reason): turns AUTO into ON/OFF; ON without the prerequisite fails.
function(lf_resolve_auto var found reason)
  if(${var} STREQUAL "AUTO")
    set(${var} ${found} PARENT_SCOPE)
  elseif(${var} AND NOT found)
    message(FATAL_ERROR "${var}=ON but ${reason}")
  endif()
endfunction()

# lf_use_pch(target): reuse the one precompiled header (same flags as lf_pch).
function(lf_use_pch target)
  target_link_libraries(${target} PRIVATE lf_common)
  target_precompile_headers(${target} REUSE_FROM lf_pch)
endfunction()

# lf_add_library(name SOURCES ... [DEPS ...]): a static module library.
function(lf_add_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  if(NOT A_SOURCES)  # a module with no sources yet still links
    set(A_SOURCES ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
  endif()
  add_library(${name} STATIC ${A_SOURCES})
  lf_use_pch(${name})
  target_link_libraries(${name} PUBLIC lf_common ${A_DEPS})
endfunction()

# lf_add_test(name SOURCES ... [DEPS ...] [LABELS ...]): a GoogleTest binary whose cases ctest
# discovers one by one, so `ctest -j` spreads them over cores.
function(lf_add_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_executable(${name} ${A_SOURCES})
  lf_use_pch(${name})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  if(NOT A_LABELS)
    set(A_LABELS ${name})
  endif()
  # The tree's paths are compiled in (gtest_discover_tests passes only one ENVIRONMENT entry
  # through, so LF_TEST_TMP is the only variable the tests get from ctest).
  target_compile_definitions(${name} PRIVATE LF_SOURCE_DIR_FALLBACK="${CMAKE_SOURCE_DIR}"
    LF_BINARY_DIR_FALLBACK="${CMAKE_BINARY_DIR}" LF_TEST_TMP_FALLBACK="${CMAKE_BINARY_DIR}/test-tmp")
  include(GoogleTest)
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST
    PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "${A_LABELS}"
      ENVIRONMENT "LF_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp")
endfunction()

# lf_add_mpi_test(name NP n COMMAND exe args...): runs under mpirun -np n (as root too).
function(lf_add_mpi_test name)
  cmake_parse_arguments(A "" "NP;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_test(NAME ${name}
    COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --bind-to none ${MPIEXEC_NUMPROC_FLAG} ${A_NP}
            ${A_COMMAND})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${A_TIMEOUT} PROCESSORS ${A_NP}
    LABELS "mpi;${A_LABELS}"
    ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;LF_TEST_TMP=${CMAKE_BINARY_DIR}/test-tmp;LF_SOURCE_DIR=${CMAKE_SOURCE_DIR};LF_BINARY_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# lf_enable_fuzzing(target): the flags of the fuzz build on an INTERFACE target every other
# target links: ASan + UBSan (UB aborts), coverage for libFuzzer without its main (the fuzz
# executables add -fsanitize=fuzzer themselves).
function(lf_enable_fuzzing target)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "LF_FUZZ=ON needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang, see tests/fuzz/run.sh")
  endif()
  # No vptr check: libtorch and the libraries it loads are not instrumented, and their objects
  # fail it at exit (libproj's finalizer releasing a shared_ptr through our instantiation).
  set(flags -fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined
            -fno-omit-frame-pointer -g)
  target_compile_options(${target} INTERFACE ${flags} -fsanitize=fuzzer-no-link)
  target_link_options(${target} INTERFACE -fsanitize=address,undefined)
endfunction()
