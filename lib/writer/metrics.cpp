// A writer's metrics in the Prometheus text format (see metrics.hpp).
#include "writer/metrics.hpp"

#include <cstdio>

#include "writer/stats_table.hpp"

namespace training_output {
namespace {

// A label value, escaped as the text format wants (\\, \", \n).
void put_label_value(std::string& out, std::string_view v) {
    for (char c : v) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out.push_back(c);
    }
}

void put_number(std::string& out, double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += buf;
}

class Text {
public:
    void family(const char* name, const char* type, const char* help) {
        out_ += "# HELP ";
        out_ += name;
        out_.push_back(' ');
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_.push_back(' ');
        out_ += type;
        out_.push_back('\n');
    }
    // name{k1="v1",k2="v2"} value
    void sample(const char* name, std::initializer_list<std::pair<const char*, std::string_view>> labels,
                double value) {
        out_ += name;
        if (labels.size() != 0) {
            out_.push_back('{');
            bool first = true;
            for (const auto& [k, v] : labels) {
                if (!first) out_.push_back(',');
                first = false;
                out_ += k;
                out_ += "=\"";
                put_label_value(out_, v);
                out_.push_back('"');
            }
            out_.push_back('}');
        }
        out_.push_back(' ');
        put_number(out_, value);
        out_.push_back('\n');
    }
    void counter(const char* name, const char* help, double value) {
        family(name, "counter", help);
        sample(name, {}, value);
    }
    void gauge(const char* name, const char* help, double value) {
        family(name, "gauge", help);
        sample(name, {}, value);
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

template <class Map>
auto& slot(Map& map, typename Map::key_type key, typename Map::key_type other) {
    auto it = map.find(key);
    if (it != map.end()) return it->second;
    if (map.size() >= WriterMetrics::kMaxLabels) return map[other];
    return map[std::move(key)];
}

}  // namespace

void WriterMetrics::call(std::chrono::nanoseconds d) noexcept {
    const double s = static_cast<double>(d.count()) / 1e9;
    std::size_t b = 0;
    while (b < kBucketCount && s > kBuckets[b]) ++b;
    buckets_[b].fetch_add(1, std::memory_order_relaxed);
    calls_.fetch_add(1, std::memory_order_relaxed);
    duration_ns_.fetch_add(static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0), std::memory_order_relaxed);
}

void WriterMetrics::generated(std::string_view record_type, std::string_view domain) {
    std::lock_guard<std::mutex> lock(mutex_);
    // Most calls count what the one before counted: no key to make for them.
    if (last_generated_ && record_type == last_record_type_ && domain == last_domain_) {
        ++*last_generated_;
        return;
    }
    last_generated_ = &slot(generated_, {std::string(record_type), std::string(domain)}, {"(other)", "(other)"});
    last_record_type_.assign(record_type.data(), record_type.size());
    last_domain_.assign(domain.data(), domain.size());
    ++*last_generated_;
}

void WriterMetrics::duplicate(std::string_view record_type) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++slot(duplicates_, std::string(record_type), "(other)");
}

void WriterMetrics::error(ErrorCode code) noexcept {
    const int i = -static_cast<int>(code);
    if (i > 0 && i < 128) errors_[i].fetch_add(1, std::memory_order_relaxed);
}

void WriterMetrics::object_size(std::string_view domain, std::uint64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    slot(object_sizes_, std::string(domain), "(other)") = bytes;
}

std::string WriterMetrics::prometheus(const Sources& in) const {
    const WriterStats& s = in.stats;
    Text t;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        t.family("etl_training_examples_generated_total", "counter",
                 "Examples accepted (written to the spool, to be delivered), by record type and health domain.");
        for (const auto& [k, n] : generated_) {
            t.sample("etl_training_examples_generated_total", {{"record_type", k.first}, {"health_domain", k.second}},
                     static_cast<double>(n));
        }
        t.family("etl_training_deduplication_hits_total", "counter",
                 "Examples dropped as duplicates of content already written or held, by record type.");
        for (const auto& [k, n] : duplicates_) {
            t.sample("etl_training_deduplication_hits_total", {{"record_type", k}}, static_cast<double>(n));
        }
        t.family("etl_training_file_size_bytes", "gauge",
                 "Size of the monthly file of each health domain after the last batch this writer landed in it.");
        for (const auto& [k, n] : object_sizes_) {
            t.sample("etl_training_file_size_bytes", {{"health_domain", k}}, static_cast<double>(n));
        }
    }
    t.family("etl_training_output_duration_seconds", "histogram", "Duration of generate() calls.");
    std::uint64_t cumulative = 0;
    char le[32];
    for (std::size_t b = 0; b <= kBucketCount; ++b) {
        cumulative += buckets_[b].load(std::memory_order_relaxed);
        if (b < kBucketCount) std::snprintf(le, sizeof le, "%g", kBuckets[b]);
        t.sample("etl_training_output_duration_seconds_bucket", {{"le", b < kBucketCount ? le : "+Inf"}},
                 static_cast<double>(cumulative));
    }
    t.sample("etl_training_output_duration_seconds_sum", {},
             static_cast<double>(duration_ns_.load(std::memory_order_relaxed)) / 1e9);
    t.sample("etl_training_output_duration_seconds_count", {}, static_cast<double>(cumulative));

    t.family("etl_training_errors_total", "counter", "Calls that returned an error, by status code.");
    for (int i = 1; i < 128; ++i) {
        const std::uint64_t n = errors_[i].load(std::memory_order_relaxed);
        if (n)
            t.sample("etl_training_errors_total", {{"code", error_code_name(static_cast<ErrorCode>(-i))}},
                     static_cast<double>(n));
    }
    // WriterStats' exported counters (stats_table.hpp); a labelled family's
    // rows follow each other, its first one carrying the help text.
    for (const StatField& f : kStatFields) {
        if (!f.metric) continue;
        if (f.help) t.family(f.metric, f.type, f.help);
        const double v = static_cast<double>(s.*(f.field));
        if (f.label) {
            t.sample(f.metric, {{f.label, f.value}}, v);
        } else {
            t.sample(f.metric, {}, v);
        }
    }
    t.counter("etl_training_lease_waits_total", "Leases that were not free at the first try.",
              static_cast<double>(in.lease_waits));
    t.counter("etl_training_lease_wait_seconds_total", "Time spent waiting for leases.", in.lease_wait_seconds);
    t.gauge("etl_training_backlog_age_seconds", "Age of the oldest line not in its object yet (0: none).",
            in.backlog_age_seconds);
    if (in.s3) {
        t.family("etl_training_s3_requests_total", "counter", "S3 requests, by operation and outcome (each attempt).");
        for (const auto& r : in.s3->by_operation) {
            t.sample("etl_training_s3_requests_total", {{"operation", r.operation}, {"status", r.status}},
                     static_cast<double>(r.count));
        }
        t.counter("etl_training_s3_retries_total", "S3 requests sent again after a failure.",
                  static_cast<double>(in.s3->retries));
        t.counter("etl_training_s3_bytes_sent_total", "Bytes sent to S3 (request lines, headers and bodies).",
                  static_cast<double>(in.s3->bytes_sent));
        t.counter("etl_training_s3_bytes_received_total", "Response bodies received from S3.",
                  static_cast<double>(in.s3->bytes_received));
    }
    return t.take();
}

}  // namespace training_output
