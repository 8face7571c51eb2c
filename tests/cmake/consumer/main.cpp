#include <cstdio>

#include "training_output/training_output.hpp"

int main(int argc, char** argv) {
    training_output::Config c;
    c.output_dir = argc > 1 ? argv[1] : "./out";
    c.dedup_store = "memory";
    c.finalize();
    training_output::TrainingOutput w(c);
    auto o = w.generate("Consumer narrative.", R"({"record_type":"StepsRecord"})", "{}");
    std::printf("%s\n", training_output::outcome_name(o));
    return o == training_output::Outcome::Written ? 0 : 1;
}
