# Builds and runs the consumer project against tapegrad, the way a user would:
#   MODE=find_package      cmake --install the tapegrad build at TAPEGRAD_BINARY_DIR into a
#                          fresh prefix, then find_package(tapegrad) from there;
#   MODE=add_subdirectory  add_subdirectory(TAPEGRAD_SOURCE_DIR), where tapegrad is not the
#                          top-level project, so its tests, examples, benchmarks and install
#                          rules must be off.
#                          With QUICK=ON it configures, checks those options and compiles
#                          the consumer's source only (no second build of tapegrad).
# The consumer uses the same generator, compiler, build type and sanitizers as tapegrad's
# build and builds with 2 jobs. Run as
#   cmake -DMODE=... -DTAPEGRAD_SOURCE_DIR=... -DTAPEGRAD_BINARY_DIR=... -DCONSUMER_DIR=...
#         -DWORK_DIR=... -DGENERATOR=... -DCXX_COMPILER=... -DBUILD_TYPE=... -DSANITIZE=...
#         [-DQUICK=ON]
#         -P consume.cmake
cmake_minimum_required(VERSION 3.25)

function(run)
  list(JOIN ARGN " " command)
  message(STATUS "consume.cmake: ${command}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "consume.cmake (${MODE}): command failed with ${status}: ${command}")
  endif()
endfunction()

# The value of `name` in the consumer's CMakeCache.txt ("" when it is not there).
function(cached_value name out)
  file(STRINGS ${consumer_build}/CMakeCache.txt line REGEX "^${name}:[A-Z]+=")
  string(REGEX REPLACE "^[^=]*=" "" value "${line}")
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

foreach(var MODE TAPEGRAD_SOURCE_DIR TAPEGRAD_BINARY_DIR CONSUMER_DIR WORK_DIR GENERATOR
            CXX_COMPILER)
  if(NOT ${var})
    message(FATAL_ERROR "consume.cmake: -D${var}=... is required")
  endif()
endforeach()

set(consumer_build ${WORK_DIR}/consumer-build)
set(configure_args -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
set(config_args)
if(BUILD_TYPE)
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
  set(config_args --config ${BUILD_TYPE})
endif()
if(SANITIZE)
  # tapegrad's objects are instrumented, so the consumer's link needs the runtimes too.
  list(APPEND configure_args -DCMAKE_CXX_FLAGS=-fsanitize=${SANITIZE}
                             -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=${SANITIZE})
endif()

if(MODE STREQUAL "find_package")
  # A fresh prefix every run, so a stale install cannot hide a broken one.
  set(prefix ${WORK_DIR}/prefix)
  file(REMOVE_RECURSE ${WORK_DIR})
  run(${CMAKE_COMMAND} --install ${TAPEGRAD_BINARY_DIR} --prefix ${prefix} ${config_args})
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${consumer_build} ${configure_args}
      -DCMAKE_PREFIX_PATH=${prefix})
  cached_value(tapegrad_DIR found_dir)
  if(NOT found_dir MATCHES "^${prefix}/")
    message(FATAL_ERROR "consume.cmake: find_package(tapegrad) used '${found_dir}', "
                        "not the package installed in ${prefix}")
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  # Keep the objects of earlier runs (tapegrad is recompiled here) but configure afresh,
  # so the options' defaults are the ones checked.
  # The library is compiled at -O0 whatever the build type: this checks the CMake
  # integration, and an optimised rebuild of tapegrad would cost CI a minute or two.
  # QUICK starts from an empty directory, so that the check below sees this run's files only.
  if(QUICK)
    file(REMOVE_RECURSE ${consumer_build})
  else()
    file(REMOVE ${consumer_build}/CMakeCache.txt)
  endif()
  set(unoptimised)
  if(BUILD_TYPE)
    string(TOUPPER "${BUILD_TYPE}" config)
    set(unoptimised "-DCMAKE_CXX_FLAGS_${config}=-O0")
  endif()
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${consumer_build} ${configure_args} ${unoptimised}
      -DTAPEGRAD_SOURCE_DIR=${TAPEGRAD_SOURCE_DIR})
  foreach(option TAPEGRAD_BUILD_TESTS TAPEGRAD_BUILD_EXAMPLES TAPEGRAD_BUILD_BENCH
                 TAPEGRAD_INSTALL)
    cached_value(${option} value)
    if(NOT value STREQUAL "OFF")
      message(FATAL_ERROR "consume.cmake: ${option} is '${value}' in a project where "
                          "tapegrad is not top level; it must default to OFF")
    endif()
  endforeach()
else()
  message(FATAL_ERROR "consume.cmake: MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()

if(QUICK)
  # The integration without the second compile of tapegrad: main.cpp compiled against the
  # target's usage requirements, nothing linked or run.
  run(${CMAKE_COMMAND} --build ${consumer_build} --parallel 2 ${config_args} --target consumer_objects)
  file(GLOB_RECURSE built_library ${consumer_build}/tapegrad/*tapegrad.a)
  if(built_library)
    message(FATAL_ERROR "consume.cmake (QUICK): tapegrad was built: ${built_library}")
  endif()
  return()
endif()
run(${CMAKE_COMMAND} --build ${consumer_build} --parallel 2 ${config_args})
if(EXISTS ${consumer_build}/${BUILD_TYPE}/consumer)
  run(${consumer_build}/${BUILD_TYPE}/consumer)
else()
  run(${consumer_build}/consumer)
endif()
