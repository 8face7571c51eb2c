// What redact_phi() costs: ns per example and MB/s over the two PHI corpora
// (tests/data/phi/planted.jsonl, vitals.jsonl), and over one 2 KB and one
// 64 KB narrative made of their texts.
// Arguments: [rounds over each corpus] (default 2000) [runs] (5; the median is printed).
#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_example.hpp"
#include "redact/redact.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> texts(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        if (d.HasParseError() || !d.HasMember("text")) throw std::runtime_error("bad line in " + path);
        out.emplace_back(d["text"].GetString(), d["text"].GetStringLength());
    }
    return out;
}

// One narrative of about `bytes` bytes: the corpus texts, one after the other.
std::string narrative(const std::vector<std::string>& a, const std::vector<std::string>& b, std::size_t bytes) {
    std::string s;
    for (std::size_t k = 0; s.size() < bytes; ++k) {
        const auto& t = k % 2 ? b[(k / 2) % b.size()] : a[(k / 2) % a.size()];
        if (!s.empty()) s += ' ';
        s += t;
    }
    return s;
}

volatile std::uint32_t sink_counts = 0;

using Redactor = to::RedactionCounts (*)(std::string_view, std::string&);

void run(const char* what, const std::vector<std::string>& examples, int rounds, int runs,
         Redactor redact = to::redact_phi) {
    std::size_t bytes = 0;
    for (const auto& e : examples) bytes += e.size();
    std::vector<double> ns_per_example;
    std::string out;
    std::uint32_t found = 0;
    for (int r = 0; r < runs; ++r) {
        found = 0;
        const auto t0 = Clock::now();
        for (int k = 0; k < rounds; ++k) {
            for (const auto& e : examples) {
                out.clear();
                found += redact(e, out).total();
            }
        }
        const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
        ns_per_example.push_back(ns / (static_cast<double>(rounds) * static_cast<double>(examples.size())));
    }
    sink_counts = sink_counts + found;
    std::sort(ns_per_example.begin(), ns_per_example.end());
    const double med = ns_per_example[ns_per_example.size() / 2];
    const double avg_bytes = static_cast<double>(bytes) / static_cast<double>(examples.size());
    std::printf("%-42s %5zu examples, %7.0f B avg: %10.0f ns/example  %7.1f MB/s  (%u identifiers/round)\n", what,
                examples.size(), avg_bytes, med, avg_bytes / med * 1e3, found / static_cast<unsigned>(rounds));
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 2000;
    const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
    const std::string dir = TDO_PHI_DATA_DIR;
    const auto planted = texts(dir + "/planted.jsonl");
    const auto vitals = texts(dir + "/vitals.jsonl");
    const std::vector<std::string> ordinary = {bench::narrative("user-1042", 7)};
    std::printf("redact_phi, median of %d runs\n", runs);
    // Each input twice, one run of each after the other: redact_phi(), then
    // the scanner at every word start (no first pass), the same-run baseline.
    struct Input {
        const char* what;
        std::vector<std::string> examples;
        int rounds;
    };
    const Input inputs[] = {
        {"benchmark narrative (bench_example.hpp)", ordinary, rounds * 20},
        {"planted.jsonl (identifiers)", planted, rounds},
        {"vitals.jsonl (none)", vitals, rounds},
        {"2 KB narrative", {narrative(planted, vitals, 2048)}, rounds * 20},
        {"64 KB narrative", {narrative(planted, vitals, 65536)}, std::max(1, rounds / 2)},
    };
    for (const auto& in : inputs) {
        run(in.what, in.examples, in.rounds, runs);
        run("  the same, every word start", in.examples, in.rounds, runs, to::redact_phi_at_every_start);
    }
    return 0;
}
