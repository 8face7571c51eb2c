# Builds and runs a consumer three ways: find_package() against an install,
# add_subdirectory() of the source tree, and pkg-config against the install.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

foreach(mode package subdirectory)
  set(b ${WORK_DIR}/${mode})
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${b} -DMODE=${mode} -DTDO_SOURCE_DIR=${SOURCE_DIR}
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE})
  run(${CMAKE_COMMAND} --build ${b} -j 2)
  run(${b}/consumer_cpp ${b}/out)
  run(${b}/consumer_c)
  message(STATUS "${mode}: ok")
endforeach()

find_program(PKG_CONFIG pkg-config)
if(NOT PKG_CONFIG)
  message(FATAL_ERROR "pkg-config is required for this test")
endif()
file(GLOB pcdir ${prefix}/lib*/pkgconfig ${prefix}/lib/*/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "${pcdir}")
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs training_output OUTPUT_VARIABLE cpp_flags
  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config training_output failed")
endif()
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs training_output_c OUTPUT_VARIABLE c_flags
  OUTPUT_STRIP_TRAILING_WHITESPACE)
separate_arguments(cpp_flags UNIX_COMMAND "${cpp_flags}")
separate_arguments(c_flags UNIX_COMMAND "${c_flags}")
run(c++ -std=c++17 ${CONSUMER_DIR}/main.cpp ${cpp_flags} -o ${WORK_DIR}/pc_cpp)
run(${WORK_DIR}/pc_cpp ${WORK_DIR}/pc_out)
run(cc ${CONSUMER_DIR}/main.c ${c_flags} -o ${WORK_DIR}/pc_c)
file(GLOB libdir ${prefix}/lib*)
set(ENV{LD_LIBRARY_PATH} "${libdir}")
run(${WORK_DIR}/pc_c)
message(STATUS "pkg-config: ok")
