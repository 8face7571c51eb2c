/* The header from plain C99 (-std=c99 -Wall -Wextra -Werror): every entry
 * point, success and error paths. Exits non-zero on the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "training_output.h"

static int failures = 0;

#define EXPECT(cond)                                                                                               \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "%s:%d: expected %s (last error: %s)\n", __FILE__, __LINE__, #cond, tdo_last_error()); \
            ++failures;                                                                                            \
        }                                                                                                          \
    } while (0)

static int events = 0;
static void on_log(int level, const char* event, const char* json, void* user) {
    (void)level;
    (void)json;
    if (user == (void*)&events && strncmp(event, "training_output", 15) == 0) ++events;
}

int main(int argc, char** argv) {
    char config[1024];
    tdo_writer* w = NULL;
    char* stats = NULL;
    const char* msg = "{\"record_type\": \"HeartRateRecord\", \"user_id\": \"c-user\"}";
    const char* res = "{\"record_count\": 60, \"processing_timestamp\": \"2025-11-18T10:30:00Z\"}";

    if (argc < 2) {
        fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    snprintf(config, sizeof config, "{\"output_dir\": \"%s\", \"directory_fsync\": false, \"log_level\": \"off\"}",
             argv[1]);

    EXPECT(tdo_version_number() == TDO_VERSION_NUMBER);
    EXPECT(strlen(tdo_version_string()) >= 5);
    EXPECT(tdo_set_log_callback(on_log, TDO_LOG_INFO, &events) == TDO_OK);

    EXPECT(tdo_writer_open(NULL, config) == TDO_E_INVALID_ARGUMENT);
    EXPECT(tdo_writer_open(&w, "{\"nope\": 1}") == TDO_E_CONFIG);
    EXPECT(w == NULL);
    EXPECT(strstr(tdo_last_error(), "nope") != NULL);

    EXPECT(tdo_writer_open(&w, config) == TDO_OK);
    EXPECT(w != NULL);
    EXPECT(generate_training_output(w, "Resting heart rate 60 bpm.", msg, res) == TDO_WRITTEN);
    EXPECT(generate_training_output(w, "Resting heart rate 60 bpm.", msg, res) == TDO_DUPLICATE);
    EXPECT(generate_training_output(w, "", msg, res) == TDO_SKIPPED);
    EXPECT(generate_training_output(w, NULL, msg, res) == TDO_E_INVALID_ARGUMENT);
    EXPECT(generate_training_output(w, "x", NULL, res) == TDO_E_INVALID_ARGUMENT);
    EXPECT(generate_training_output(w, "x", "{", res) == TDO_E_INVALID_JSON);
    EXPECT(generate_training_output(w, "x", "{}", res) == TDO_E_INVALID_INPUT);
    EXPECT(strcmp(tdo_status_name(TDO_E_INVALID_INPUT), "TDO_E_INVALID_INPUT") == 0);
    EXPECT(tdo_writer_flush(w) == TDO_OK);
    EXPECT(tdo_writer_stats(w, &stats) == TDO_OK);
    EXPECT(stats != NULL && strstr(stats, "\"written\":1") != NULL);
    tdo_free(stats);
    EXPECT(tdo_writer_close(w) == TDO_OK);
    EXPECT(tdo_writer_close(NULL) == TDO_OK);
    EXPECT(tdo_writer_flush(NULL) == TDO_E_INVALID_ARGUMENT); /* never another writer */
    EXPECT(TDO_DEFAULT_WRITER != NULL);
    EXPECT(tdo_shutdown() == TDO_OK);
    EXPECT(events >= 2);
    EXPECT(tdo_set_log_callback(NULL, 0, NULL) == TDO_OK);

    if (failures == 0) printf("c_api_test: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
