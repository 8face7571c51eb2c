// The writer's spans (spans.hpp).
#include "writer/spans.hpp"

namespace training_output {

thread_local GenerateSpan t_span;

void emit(const char* name, std::chrono::system_clock::time_point start, std::chrono::nanoseconds took,
          std::string_view traceparent, Attributes& attributes, int status) {
    Span s;
    s.name = name;
    s.start = start;
    s.end = start + std::chrono::duration_cast<std::chrono::system_clock::duration>(took);
    s.traceparent = traceparent;
    s.attributes_json = attributes.done();
    s.status = status;
    emit_span(s);
}

void emit_generate(std::chrono::system_clock::time_point start, std::chrono::nanoseconds took, const char* outcome,
                   int status) {
    Attributes a;
    a.add("record_type", t_span.record_type)
        .add("health_domain", t_span.health_domain)
        .add("outcome", outcome)
        .add("skip_reason", t_span.skip_reason)
        .add("bytes", static_cast<std::int64_t>(t_span.bytes));
    emit("generate", start, took, t_span.traceparent, a, status);
}

}  // namespace training_output
