# Runs the command-line program twice on the sample: the first run writes the
# five domain files and drops duplicates, the empty narrative and the malformed
# lines; the second run writes nothing new.
file(REMOVE_RECURSE ${WORK_DIR})
set(ENV{ETL_LOG_LEVEL} "off")
execute_process(COMMAND ${CLI} --output-dir ${WORK_DIR} ${SAMPLE}
  OUTPUT_VARIABLE first RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "first run failed (${rc}): ${first} ${err}")
endif()
message(STATUS "first run:\n${first}")
# --output-dir moves everything: the spool and the dedup file are under it.
if(NOT IS_DIRECTORY ${WORK_DIR}/.spool OR NOT EXISTS ${WORK_DIR}/.dedup.sqlite3)
  message(FATAL_ERROR "the spool or the dedup file is not under --output-dir ${WORK_DIR}")
endif()
file(GLOB_RECURSE files RELATIVE ${WORK_DIR} ${WORK_DIR}/*.jsonl)
list(SORT files)
set(expected
  training/cardiovascular_fitness/2025/11/health_journal_2025_11.jsonl
  training/general_health/2025/11/health_journal_2025_11.jsonl
  training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl
  training/physical_activity/2025/11/health_journal_2025_11.jsonl
  training/sleep_wellness/2025/11/health_journal_2025_11.jsonl)
if(NOT files STREQUAL expected)
  message(FATAL_ERROR "unexpected files: ${files}")
endif()
if(NOT first MATCHES "total +13 +3 +1 +2")
  message(FATAL_ERROR "unexpected first summary:\n${first}")
endif()
set(sizes "")
foreach(f ${files})
  file(SIZE ${WORK_DIR}/${f} s)
  list(APPEND sizes ${s})
endforeach()
execute_process(COMMAND ${CLI} --output-dir ${WORK_DIR} ${SAMPLE}
  OUTPUT_VARIABLE second RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "second run failed (${rc}): ${second} ${err}")
endif()
if(NOT second MATCHES "total +0 +16 +1 +2")
  message(FATAL_ERROR "the second run wrote something:\n${second}")
endif()
set(sizes2 "")
foreach(f ${files})
  file(SIZE ${WORK_DIR}/${f} s)
  list(APPEND sizes2 ${s})
endforeach()
if(NOT sizes STREQUAL sizes2)
  message(FATAL_ERROR "files changed on the second run: ${sizes} -> ${sizes2}")
endif()
