/* A C program on the C ABI: the version, and (given a directory) one example
 * written and the writer closed. Linked against the shared library and, with
 * the C linker, against the static one. */
#include <stdio.h>
#include <string.h>

#include "training_output.h"

int main(int argc, char** argv) {
    char config[1024];
    tdo_writer* w = NULL;
    int rc;
    printf("%s\n", tdo_version_string());
    if (tdo_version_number() != TDO_VERSION_NUMBER) return 1;
    if (argc < 2) return 0;
    if (strlen(argv[1]) > 900) return 1;
    snprintf(config, sizeof config, "{\"output_dir\":\"%s\",\"dedup_store\":\"memory\",\"log_level\":\"off\"}",
             argv[1]);
    if (tdo_writer_open(&w, config) != TDO_OK) {
        fprintf(stderr, "%s\n", tdo_last_error());
        return 1;
    }
    rc = generate_training_output(w, "A C consumer's narrative.", "{\"record_type\":\"StepsRecord\"}", "{}");
    if (tdo_writer_close(w) != TDO_OK || rc != TDO_WRITTEN) {
        fprintf(stderr, "%s: %s\n", tdo_status_name(rc), tdo_last_error());
        return 1;
    }
    return 0;
}
