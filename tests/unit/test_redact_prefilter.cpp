// The first pass of redaction (redact/first_pass.hpp) changes where the
// matchers look, never what they find: redact_phi() and the scanner run at
// every word start agree on every corpus text and on random texts made of the
// pieces identifiers, readings and their neighbours are made of.
#include <catch2/catch.hpp>

#include <rapidjson/document.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_example.hpp"
#include "redact/first_pass.hpp"
#include "redact/lexicon.hpp"
#include "redact/redact.hpp"

using namespace training_output;

namespace {

std::vector<std::string> corpus_texts(const char* name) {
    std::ifstream in(std::string(TDO_SOURCE_DIR "/tests/data/phi/") + name);
    if (!in) throw std::runtime_error(std::string("cannot open tests/data/phi/") + name);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        if (d.HasParseError() || !d.HasMember("text")) throw std::runtime_error("bad line");
        out.emplace_back(d["text"].GetString(), d["text"].GetStringLength());
    }
    return out;
}

void check_same(const std::string& in) {
    std::string fast, every;
    const RedactionCounts a = redact_phi(in, fast);
    const RedactionCounts b = redact_phi_at_every_start(in, every);
    INFO("input: " << in);
    REQUIRE(fast == every);
    REQUIRE(a.by_type == b.by_type);
}

// The seed of a randomized test: TDO_TEST_SEED if set, else a new one; it is
// printed so that a failure can be run again.
std::uint32_t test_seed() {
    if (const char* s = std::getenv("TDO_TEST_SEED")) return static_cast<std::uint32_t>(std::strtoul(s, nullptr, 10));
    return std::random_device{}();
}

std::size_t count_candidates(const std::string& text) {
    redact::FirstPass first(text);
    std::size_t count = 0;
    for (std::size_t base = 0; base < text.size(); base += 64)
        count += static_cast<std::size_t>(__builtin_popcountll(first.candidates(base)));
    return count;
}

}  // namespace

TEST_CASE("redact: the first pass changes nothing on the corpora", "[unit][redact]") {
    auto all = corpus_texts("planted.jsonl");
    for (auto& t : corpus_texts("vitals.jsonl")) all.push_back(t);
    REQUIRE(all.size() >= 120);
    std::string joined;
    for (const auto& t : all) {
        check_same(t);
        joined += t + ' ';
    }
    check_same(joined);  // across 64-byte blocks, in every position
    for (std::size_t cut = 1; cut < 64; cut += 7) check_same(joined.substr(cut, 3000));
    check_same(bench::narrative("user-1042", 7));
}

TEST_CASE("redact: the first pass changes nothing on random texts", "[unit][redact]") {
    const std::uint32_t seed = test_seed();
    std::mt19937 rng(seed);
    INFO("TDO_TEST_SEED=" << seed);
    // What identifiers, readings and their neighbours are made of, and what
    // separates them, in every case.
    const char* pieces[] = {
        " ",        "  ",   ", ",    ". ",     ".",        ":",       "-",      "/",     "@",     "%",
        "+",        "(",    ")",     "#",      "_",        "\n",      "\t",     "'",     "’s",    "é",
        "\xc2\xa0", "日本", "😀",     "0",      "1",        "7",       "12",     "18",    "31",    "142",
        "555",      "2025", "62704", "4567",   "123",      "45",      "6789",   "fe80",  "ffff",  "a",
        "mg",       "dL",   "bpm",   "of",     "the",      "day",     "am",     "pm",    "Time",  "Patient",
        "patient",  "Dr",   "Mrs",   "Jane",   "Doe",      "seen",    "by",     "Phone", "phone", "MRN",
        "mrn",      "SN",   "IL",    "Main",   "St",       "Baker",   "Street", "Apt",   "Nov",   "March",
        "may",      "May",  "www",   "http",   "https",    "example", "com",    "org",   "john",  "doe",
        "zip",      "ZIP",  "code",  "social", "security", "number",  "id",     "T",     "Z",     "x",
        "record",   "#A-",  "s/n",   "fax",    "call",     "3rd",     "th",     "ssn",   "SSN",   "IMEI"};
    constexpr std::size_t kPieces = sizeof(pieces) / sizeof(pieces[0]);
    for (int round = 0; round < 20000; ++round) {
        std::string in;
        const std::size_t len = rng() % 60;
        for (std::size_t k = 0; k < len; ++k) in += pieces[rng() % kPieces];
        check_same(in);
    }
    // Long ones: words and numbers that cross the 64-byte blocks.
    for (int round = 0; round < 500; ++round) {
        std::string in;
        while (in.size() < 600) in += pieces[rng() % kPieces];
        check_same(in);
    }
}

TEST_CASE("redact: the first pass leaves an ordinary narrative to no matcher", "[unit][redact]") {
    CHECK(count_candidates(bench::narrative("user-1042", 7)) == 0);
    CHECK(count_candidates("Time in range was 71% with post-dinner peaks averaging 212 mg/dL at 07:30, "
                           "mean 142.3 mg/dL over a 14-day window. Slept 7h 32m.") == 0);
    // Where an identifier may start, it looks: the cue, the number, the title,
    // the email, the month, the capitals of a state.
    CHECK(count_candidates("call 555-123-4567") == 2);              // call, 555 (123-4567 starts nothing)
    CHECK(count_candidates("seen by Dr. Jane Doe") == 2);           // seen, Dr
    CHECK(count_candidates("write to jane.doe@example.org") == 3);  // jane, doe, example
    CHECK(count_candidates("on March 3") == 1);
    CHECK(count_candidates("Springfield, IL") == 1);
    CHECK(count_candidates("MR# 445566, resting HR 60 bpm") == 1);  // MR (a cue), not HR
}

TEST_CASE("redact: byte classes of a block, every vector version and bytewise, agree", "[unit][redact]") {
    const std::uint32_t seed = test_seed();
    std::mt19937 rng(seed);
    INFO("TDO_TEST_SEED=" << seed);
    auto versions = redact::block_mask_versions();
    versions.push_back({"picked", redact::block_masks});
    REQUIRE(versions.size() >= 2);  // SSE2 on every x86-64, and the one picked
    const std::string classes = "aZm09 ,;)!?\"\n\t\r+(.:@_%-fF\x80\xff";
    for (int round = 0; round < 4000; ++round) {
        // Random bytes, or (every other text) bytes of the classes only.
        std::string text(rng() % 200, '\0');
        for (auto& c : text) c = round % 2 ? classes[rng() % classes.size()] : static_cast<char>(rng() % 256);
        const auto* s = reinterpret_cast<const unsigned char*>(text.data());
        for (std::size_t base = 0; base < text.size(); base += 64) {
            const auto b = redact::block_masks_bytewise(s, text.size(), base);
            for (const auto& v : versions) {
                INFO(v.name << " at " << base << " of " << text.size());
                const auto a = v.fn(s, text.size(), base);
                REQUIRE(a.lower == b.lower);
                REQUIRE(a.upper == b.upper);
                REQUIRE(a.digit == b.digit);
                REQUIRE(a.high == b.high);
                REQUIRE(a.plus_paren == b.plus_paren);
                REQUIRE(a.hex_letter == b.hex_letter);
                REQUIRE(a.local == b.local);
                REQUIRE(a.dot == b.dot);
                REQUIRE(a.colon == b.colon);
                REQUIRE(a.at_sign == b.at_sign);
                REQUIRE(a.follower == b.follower);
            }
        }
    }
}

TEST_CASE("redact: the cue list", "[unit][redact]") {
    for (const char* w : {"phone", "mrn", "patient", "seen", "s", "zipcode", "therapist"}) CHECK(redact::is_cue(w));
    for (const char* w : {"", "phones", "time", "the", "Phone", "mrn1", "z"}) CHECK_FALSE(redact::is_cue(w));
}
