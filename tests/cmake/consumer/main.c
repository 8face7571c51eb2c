#include <stdio.h>

#include "training_output.h"

int main(void) {
    printf("%s\n", tdo_version_string());
    return tdo_version_number() == TDO_VERSION_NUMBER ? 0 : 1;
}
