/* The C ABI: open a writer, write one example, flush, close. */
#include <stdio.h>
#include <stdlib.h>

#include "training_output.h"

int main(int argc, char** argv) {
    const char* output_dir = argc > 1 ? argv[1] : "./training-data";
    char config[1024];
    snprintf(config, sizeof config, "{\"output_dir\": \"%s\", \"dedup_store\": \"sqlite\"}", output_dir);

    tdo_writer* writer = NULL;
    if (tdo_writer_open(&writer, config) != TDO_OK) {
        fprintf(stderr, "open failed: %s\n", tdo_last_error());
        return 1;
    }
    int rc = generate_training_output(
        writer, "Resting heart rate averaged 61 bpm with normal variability across 7 days.",
        "{\"record_type\": \"HeartRateRecord\", \"user_id\": \"user-7\", \"correlation_id\": \"c-1\"}",
        "{\"quality_score\": 0.93, \"record_count\": 10080, \"clinical_insights\": {\"resting_hr_bpm\": 61}}");
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", tdo_status_name(rc), tdo_last_error());
        (void)tdo_writer_close(writer);
        return 1;
    }
    printf("outcome: %s\n", tdo_status_name(rc));

    char* stats = NULL;
    if (tdo_writer_flush(writer) == TDO_OK && tdo_writer_stats(writer, &stats) == TDO_OK) {
        printf("stats: %s\n", stats);
        tdo_free(stats);
    }
    /* Lines it could not deliver stay in its spool for the next writer; say so. */
    if (tdo_writer_close(writer) != TDO_OK) {
        fprintf(stderr, "close: %s\n", tdo_last_error());
        return 1;
    }
    return 0;
}
