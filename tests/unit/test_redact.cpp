#include <catch2/catch.hpp>

#include <rapidjson/document.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/crash_point.hpp"
#include "format/formatter.hpp"
#include "redact/redact.hpp"

using namespace training_output;

namespace {

struct Redacted {
    std::string text;
    RedactionCounts counts;
    std::uint32_t of(PhiType t) const { return counts.by_type[static_cast<int>(t)]; }
};

Redacted redact(std::string_view in) {
    Redacted r;
    r.counts = redact_phi(in, r.text);
    return r;
}

// `in` becomes `want`, with exactly one identifier, of type `t`.
void check_one(std::string_view in, std::string_view want, PhiType t) {
    INFO("input: " << in);
    const auto r = redact(in);
    CHECK(r.text == want);
    CHECK(r.of(t) == 1);
    CHECK(r.counts.total() == 1);
}

void check_kept(std::string_view in) {
    INFO("input: " << in);
    const auto r = redact(in);
    CHECK(r.text == in);
    CHECK(r.counts.total() == 0);
}

std::vector<std::string> lines(const char* name) {
    std::ifstream in(std::string(TDO_SOURCE_DIR "/tests/data/phi/") + name);
    if (!in) throw std::runtime_error(std::string("cannot open tests/data/phi/") + name);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(line);
    return out;
}

int type_of(const std::string& name) {
    for (int k = 0; k < kPhiTypeCount; ++k)
        if (name == phi_type_name(static_cast<PhiType>(k))) return k;
    return -1;
}

std::string str(const rapidjson::Value& v) { return std::string(v.GetString(), v.GetStringLength()); }

}  // namespace

TEST_CASE("redact: type names and placeholders", "[unit][redact]") {
    const char* names[] = {"email",   "phone",   "ssn",     "url", "ip",   "mrn",
                           "serial",  "name",    "address", "zip", "date", "health_plan",
                           "account", "license", "vehicle", "id",  "age"};
    const char* holders[] = {"[EMAIL]",   "[PHONE]",   "[SSN]",     "[URL]", "[IP]",   "[MRN]",
                             "[SERIAL]",  "[NAME]",    "[ADDRESS]", "[ZIP]", "[DATE]", "[HEALTH_PLAN]",
                             "[ACCOUNT]", "[LICENSE]", "[VEHICLE]", "[ID]",  "[AGE]"};
    static_assert(std::size(names) == kPhiTypeCount && std::size(holders) == kPhiTypeCount);
    for (int k = 0; k < kPhiTypeCount; ++k) {
        CHECK(std::string(phi_type_name(static_cast<PhiType>(k))) == names[k]);
        CHECK(std::string(phi_placeholder(static_cast<PhiType>(k))) == holders[k]);
    }
    RedactionCounts c;
    CHECK(c.total() == 0);
    c.by_type[0] = 2;
    c.by_type[10] = 3;
    CHECK(c.total() == 5);
}

TEST_CASE("redact: emails", "[unit][redact]") {
    check_one("write to jane.doe@example.org today", "write to [EMAIL] today", PhiType::Email);
    check_one("coach_rivera+notes@fitclub.io.", "[EMAIL].", PhiType::Email);
    check_one("(r.rivera@uni.edu)", "([EMAIL])", PhiType::Email);
    check_kept("a @ b, @home, x@y, 5@");
}

TEST_CASE("redact: URLs and bare domains", "[unit][redact]") {
    check_one("see https://portal.example.com/r/8812?x=1.", "see [URL].", PhiType::Url);
    check_one("see http://example.com", "see [URL]", PhiType::Url);
    check_one("go to www.sleepcenter.org/intake now", "go to [URL] now", PhiType::Url);
    check_one("bookmark mychart.example.org/visits", "bookmark [URL]", PhiType::Url);
    check_one("visit mychart.example.com.", "visit [URL].", PhiType::Url);
    check_kept("HbA1c 6.8%, slept 7.5h, e.g. this, i.e. that, a.m. and p.m., U.S. data, slept well.In the end");
}

TEST_CASE("redact: IPv4 and IPv6 addresses", "[unit][redact]") {
    check_one("synced from 192.168.1.10 at 22:15", "synced from [IP] at 22:15", PhiType::Ip);
    check_one("host 2001:db8::8a2e:370:7334.", "host [IP].", PhiType::Ip);
    check_one("fe80::1ff:fe23:4567:890a logged", "[IP] logged", PhiType::Ip);
    check_one("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full [IP]", PhiType::Ip);
    check_kept("256.1.1.1, 1.2.3, 10:30:00, 1:45:00, 12::30, 07:30");
}

TEST_CASE("redact: phone and fax numbers", "[unit][redact]") {
    check_one("call 555-123-4567.", "call [PHONE].", PhiType::Phone);
    check_one("(555) 123-4567", "[PHONE]", PhiType::Phone);
    check_one("at 555.123.4567", "at [PHONE]", PhiType::Phone);
    check_one("abroad: +1 555 123 4567", "abroad: [PHONE]", PhiType::Phone);
    check_one("London +44 20 7946 0958 3 times", "London [PHONE] 3 times", PhiType::Phone);
    check_one("phone: 5551234567", "phone: [PHONE]", PhiType::Phone);
    check_one("fax 555 123 4567", "fax [PHONE]", PhiType::Phone);
    check_one("1-800-555-0199", "[PHONE]", PhiType::Phone);
    check_one("Tel. no. 555 1234", "Tel. no. [PHONE]", PhiType::Phone);
    check_one("+15551234567", "[PHONE]", PhiType::Phone);
    check_kept("phone use 45 minutes, call 3 times, 555-1234 without a cue, 10,432 steps, 120-135 bpm");
}

TEST_CASE("redact: SSNs", "[unit][redact]") {
    check_one("SSN 123-45-6789", "SSN [SSN]", PhiType::Ssn);
    check_one("ssn: 123456789.", "ssn: [SSN].", PhiType::Ssn);
    check_one("social security number 321 54 9876", "social security number [SSN]", PhiType::Ssn);
    check_one("the number 987-65-4321 appears", "the number [SSN] appears", PhiType::Ssn);
    check_kept("123456789 without a cue, SSN unknown, 123-45-67890");
}

TEST_CASE("redact: medical record numbers", "[unit][redact]") {
    check_one("MRN 12345678", "MRN [MRN]", PhiType::Mrn);
    check_one("MRN: A1234567 reviewed", "MRN: [MRN] reviewed", PhiType::Mrn);
    check_one("MR# 445566", "MR# [MRN]", PhiType::Mrn);
    check_one("medical record number 1234567", "medical record number [MRN]", PhiType::Mrn);
    check_one("chart #C-99812", "chart #[MRN]", PhiType::Mrn);
    check_one("Patient ID: PX-88213", "Patient ID: [MRN]", PhiType::Mrn);
    check_kept("chart 12 shows 145 mg/dL, MRN pending, record: 145 mg/dL");
}

TEST_CASE("redact: device serial numbers", "[unit][redact]") {
    check_one("serial number SN-4471-XK", "serial number [SERIAL]", PhiType::Serial);
    check_one("S/N: 99A7731", "S/N: [SERIAL]", PhiType::Serial);
    check_one("serial no. 77BX-221.", "serial no. [SERIAL].", PhiType::Serial);
    check_one("device ID DX-4410", "device ID [SERIAL]", PhiType::Serial);
    check_one("strap SN-4471-XK broke", "strap [SERIAL] broke", PhiType::Serial);
    check_kept("S/N ratio improved, serial measurements of 145 mg/dL");
}

TEST_CASE("redact: names after a cue, the cue kept", "[unit][redact]") {
    check_one("Patient John Smith slept", "Patient [NAME] slept", PhiType::Name);
    check_one("the patient Maria Garcia-Lopez reports", "the patient [NAME] reports", PhiType::Name);
    check_one("Dr. Jane Doe", "Dr. [NAME]", PhiType::Name);
    check_one("per Dr Patel's note", "per Dr [NAME]'s note", PhiType::Name);
    check_one("Mr. Brown.", "Mr. [NAME].", PhiType::Name);
    check_one("Mrs. O'Neil walked", "Mrs. [NAME] walked", PhiType::Name);
    check_one("Ms. Lee", "Ms. [NAME]", PhiType::Name);
    check_one("Miss Harper", "Miss [NAME]", PhiType::Name);
    check_one("Nurse Alvarez uploaded", "Nurse [NAME] uploaded", PhiType::Name);
    check_one("name: Alex Morgan.", "name: [NAME].", PhiType::Name);
    check_one("Dr. John Q. Public", "Dr. [NAME]", PhiType::Name);
    check_one("Dr. Anna Maria Lopez Ruiz", "Dr. [NAME] Ruiz", PhiType::Name);  // three words at most
    check_kept("Patient reports 145 mg/dL. The patient's glucose. Patient HR 62 bpm. Patient Sleep summary.");
    check_kept("Patient Health Questionnaire score 5. Patient Education given. Patient Summary: 7h.");
    check_kept("Dr. visits: 2. Mr. and Mrs. both. ms and MS. miss a dose. Nurse practitioner notes.");
}

TEST_CASE("redact: street addresses and ZIP codes", "[unit][redact]") {
    check_one("lives at 123 Main Street.", "lives at [ADDRESS].", PhiType::Address);
    check_one("4500 N. Oak Ave, Apt 5 on file", "[ADDRESS] on file", PhiType::Address);
    check_one("12 Baker St.", "[ADDRESS].", PhiType::Address);
    check_one("Springfield, IL 62704", "Springfield, IL [ZIP]", PhiType::Zip);
    check_one("zip code: 10001-1234", "zip code: [ZIP]", PhiType::Zip);
    check_one("ZIP 90210", "ZIP [ZIP]", PhiType::Zip);
    const auto r = redact("at 77 Elm Road, Unit 3B, 97201.");
    CHECK(r.text == "at [ADDRESS], [ZIP].");
    CHECK(r.of(PhiType::Address) == 1);
    CHECK(r.of(PhiType::Zip) == 1);
    check_kept("walked 12000 steps, OK 10000 steps, 90210 alone, 3 Main points");
}

TEST_CASE("redact: dates more specific than a year", "[unit][redact]") {
    const char* dates[] = {"2025-11-18",
                           "2025/11/18",
                           "11/18/2025",
                           "18/11/2025",
                           "11-18-25",
                           "18.11.2025",
                           "November 18, 2025",
                           "Nov 18th",
                           "18 Nov 2025",
                           "March 3",
                           "3rd of March",
                           "2025-11-18T10:30:00Z",
                           "2025-11-18T10:30:00.250+01:00",
                           "Dec. 24",
                           "March 2025"};
    for (const char* d : dates) check_one(std::string("on ") + d + " we met", "on [DATE] we met", PhiType::Date);
    check_kept("in 2024, since 2019, 2025, March was busy, May I ask, 11/18 and 3/7 nights, May 12,000 steps");
}

TEST_CASE("redact: readings, times, durations and counts are kept", "[unit][redact]") {
    const char* kept[] = {"145 mg/dL",     "7.2 mmol/L",
                          "62 bpm",        "HRV 45 ms",
                          "10,432 steps",  "2,150 kcal",
                          "380 cal",       "6.8%",
                          "7 hours",       "6.5 hrs",
                          "7.5h",          "45 minutes",
                          "12 min",        "30 seconds",
                          "10 s",          "36.8°C",
                          "98.6 °F",       "37 C",
                          "101 F",         "98.4 degrees",
                          "72 kg",         "160 lb",
                          "176 lbs",       "128/82 mmHg",
                          "BP 128/82",     "SpO2 97%",
                          "HbA1c 6.8%",    "4.2-7.8 mmol/L",
                          "70–180 mg/dL",  "07:30",
                          "7:45 AM",       "22:15",
                          "10:30 pm",      "7h 32m",
                          "1:45:00",       "3 nights",
                          "averaged 142",  "a 14-day window",
                          "30 readings",   "day 3 of 7",
                          "n=1234",        "score 0.87",
                          "12,000",        "2025",
                          "3/7 nights",    "2 of 5",
                          "version 2.1.3", "v10.4",
                          "1,000,000",     "0.5 units",
                          "120-135 bpm",   "5.0–6.8 mmol/L",
                          "23:59:59"};
    for (const char* k : kept) check_kept(k);
}

TEST_CASE("redact: UTF-8 neighbours", "[unit][redact]") {
    check_one("Dr. José Núñez ajustó la dosis", "Dr. [NAME] ajustó la dosis", PhiType::Name);
    check_one("Dr. Øyvind Ås 🙂", "Dr. [NAME] 🙂", PhiType::Name);
    check_one("Patient Wei Zhang 🏃 reached 11,300 steps", "Patient [NAME] 🏃 reached 11,300 steps", PhiType::Name);
    check_one("Dr. Lee’s note", "Dr. [NAME]’s note", PhiType::Name);
    check_one("📞555-123-4567📞", "📞[PHONE]📞", PhiType::Phone);
    check_one("« jane@example.org »", "« [EMAIL] »", PhiType::Email);
    check_kept("glucose 145 mg/dL 🎉, 36.8 °C, café 7h, naïve Zoë, 日本語 12,000 歩");
}

TEST_CASE("redact: empty input, appending, determinism", "[unit][redact]") {
    std::string out = "prefix:";
    auto c = redact_phi("", out);
    CHECK(out == "prefix:");
    CHECK(c.total() == 0);
    c = redact_phi("Dr. Jane Doe on 2025-11-18", out);
    CHECK(out == "prefix:Dr. [NAME] on [DATE]");
    CHECK(c.total() == 2);
    std::string a, b;
    const std::string text = "Patient John Smith, MRN 12345678, 555-123-4567, 145 mg/dL at 07:30";
    redact_phi(text, a);
    redact_phi(text, b);
    CHECK(a == b);
}

TEST_CASE("redact: the fault point fails the call", "[unit][redact]") {
    arm_fault("redact_phi", 1);
    std::string out;
    CHECK_THROWS_AS(redact_phi("Dr. Jane Doe", out), std::runtime_error);
    CHECK(out.empty());
    CHECK(redact_phi("Dr. Jane Doe", out).total() == 1);
    arm_fault("redact_phi", 0);
}

TEST_CASE("redact: planted corpus, every identifier found and counted", "[unit][redact]") {
    const auto rows = lines("planted.jsonl");
    REQUIRE(rows.size() >= 60);
    std::array<std::uint32_t, kPhiTypeCount> planted_total{};
    for (const auto& line : rows) {
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        REQUIRE_FALSE(d.HasParseError());
        const std::string text = str(d["text"]);
        INFO("text: " << text);
        const auto r = redact(text);
        INFO("out:  " << r.text);
        std::array<std::uint32_t, kPhiTypeCount> want{};
        REQUIRE(d["planted"].Size() >= 1);
        REQUIRE(d["planted"].Size() <= 3);
        for (const auto& p : d["planted"].GetArray()) {
            const int t = type_of(str(p["type"]));
            REQUIRE(t >= 0);
            ++want[static_cast<std::size_t>(t)];
            ++planted_total[static_cast<std::size_t>(t)];
            const std::string value = str(p["value"]);
            REQUIRE(text.find(value) != std::string::npos);
            CHECK(r.text.find(value) == std::string::npos);
            CHECK(r.text.find(phi_placeholder(static_cast<PhiType>(t))) != std::string::npos);
        }
        CHECK(r.counts.by_type == want);
        CHECK(is_valid_utf8(r.text));
    }
    for (int k = 0; k < kPhiTypeCount; ++k) {
        INFO("type " << phi_type_name(static_cast<PhiType>(k)));
        CHECK(planted_total[static_cast<std::size_t>(k)] >= 4);  // every type, several times
    }
}

TEST_CASE("redact: vitals corpus, nothing redacted", "[unit][redact]") {
    const auto rows = lines("vitals.jsonl");
    REQUIRE(rows.size() >= 60);
    for (const auto& line : rows) {
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        REQUIRE_FALSE(d.HasParseError());
        const std::string text = str(d["text"]);
        const auto r = redact(text);
        CHECK(r.text == text);
        CHECK(r.counts.total() == 0);
        REQUIRE(d["keep"].Size() >= 1);
        for (const auto& k : d["keep"].GetArray()) {
            INFO("keep: " << str(k));
            CHECK(r.text.find(str(k)) != std::string::npos);
        }
    }
}

TEST_CASE("redact: adversarial inputs of 1 MiB stay linear", "[unit][redact]") {
    constexpr std::size_t kSize = 1 << 20;
    auto repeat = [](const std::string& unit) {
        std::string s;
        s.reserve(kSize + unit.size());
        while (s.size() < kSize) s += unit;
        return s;
    };
    const std::vector<std::string> inputs = {std::string(kSize, '7'),
                                             std::string(kSize, '@'),
                                             repeat("Dr. "),
                                             repeat("a."),
                                             repeat("a@"),
                                             repeat("1-"),
                                             repeat("a:"),
                                             repeat("+1 "),
                                             repeat("Patient Jo "),
                                             repeat("123 Main "),
                                             repeat("😀1"),
                                             repeat("a.") + "@example.org",
                                             repeat("a-"),          // one run of an email's local part,
                                             repeat("a_b-") + "@",  // words and numbers all through it
                                             repeat("1-a-"),
                                             repeat("7h "),
                                             repeat("Jan ")};
    std::mt19937 rng(42);
    std::string mixed;
    const char* pieces[] = {"1", "2", "-", ".",   "/",    ":",  " ",   "@",    "a", "Dr", "é", "(",
                            ")", "+", "#", "MRN", "Main", "St", "Nov", "🙂", ",", "x",  "0", "9"};
    while (mixed.size() < kSize) mixed += pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))];
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t total = 0;
    for (const auto& in : inputs) {
        std::string out;
        redact_phi(in, out);
        CHECK(is_valid_utf8(out));
        total += out.size();
    }
    std::string out;
    redact_phi(mixed, out);
    CHECK(is_valid_utf8(out));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // 18 MiB in all: a quadratic scan would take hours; a linear one takes
    // about half a second optimized, about 10 s under ASan and UBSan.
    CHECK(total > 0);
    CHECK(seconds < 120.0);
}

TEST_CASE("redact: random UTF-8 text stays valid UTF-8", "[unit][redact]") {
    std::mt19937 rng(7);
    const char* pieces[] = {"Dr. ", "José", " ",     "555",  "-",  "123",  "4567", "é",  "😀",    "–",
                            "@",    "a.b",  ".org",  "MRN ", "#",  "2025", "/",    "11", "Nov ", "18",
                            ",",    "St",   "Main ", "Ñ",    "’s", "::",   "fe80", ":",  "日本"};
    for (int round = 0; round < 2000; ++round) {
        std::string in;
        const int n = static_cast<int>(rng() % 40);
        for (int k = 0; k < n; ++k) in += pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))];
        std::string out;
        redact_phi(in, out);
        INFO("input: " << in);
        REQUIRE(is_valid_utf8(out));
    }
}

namespace {

// `pattern` with every '|' replaced by `sep`.
std::string with_sep(std::string_view pattern, std::string_view sep) {
    std::string out;
    for (char c : pattern) {
        if (c == '|')
            out += sep;
        else
            out += c;
    }
    return out;
}

}  // namespace

TEST_CASE("redact: identifiers behind Unicode spaces and line separators", "[unit][redact]") {
    // Each separator of Unicode's White_Space a narrative may hold where an
    // ASCII space would be: no-break, line separator, NEL, thin, narrow
    // no-break, figure, ideographic, en, medium mathematical, Ogham, paragraph; and a tab.
    const char* seps[] = {"\u00a0", "\u2028", "\u0085", "\u2009", "\u202f", "\u2007",
                          "\u3000", "\u2002", "\u205f", "\u1680", "\u2029", "\t"};
    struct Case {
        const char* in;
        const char* want;
        PhiType type;
    };
    const Case cases[] = {
        {"Dr.|Jane|Doe reported", "Dr.|[NAME] reported", PhiType::Name},
        {"Patient|John|Smith slept", "Patient|[NAME] slept", PhiType::Name},
        {"MRN|12345678", "MRN|[MRN]", PhiType::Mrn},
        {"call|555-123-4567.", "call|[PHONE].", PhiType::Phone},
        {"fax|555|123|4567", "fax|[PHONE]", PhiType::Phone},
        {"SSN|123-45-6789", "SSN|[SSN]", PhiType::Ssn},
        {"lives at|123|Main|Street.", "lives at|[ADDRESS].", PhiType::Address},
        {"mail|jane@example.org", "mail|[EMAIL]", PhiType::Email},
        {"seen|March|3,|2025", "seen|[DATE]", PhiType::Date},
    };
    for (const char* sep : seps) {
        for (const Case& c : cases) check_one(with_sep(c.in, sep), with_sep(c.want, sep), c.type);
        // Readings behind the same separators are kept, byte for byte.
        check_kept(with_sep("HR|62|bpm, glucose|145|mg/dL,|10,432|steps, slept|7.5|hours", sep));
    }
}

TEST_CASE("redact: identifiers with invisible characters, full-width and other Unicode digits", "[unit][redact]") {
    // Zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen.
    check_one("Dr. Ja\u200bne Doe", "Dr. [NAME]", PhiType::Name);
    check_one("SSN 123-45-\u200c6789", "SSN [SSN]", PhiType::Ssn);
    check_one("MRN 1234\u00ad5678 seen", "MRN [MRN] seen", PhiType::Mrn);
    check_one("call 555\u2060-123-4567", "call [PHONE]", PhiType::Phone);
    check_one("\ufeffPatient John Smith", "\ufeffPatient [NAME]", PhiType::Name);
    // Full-width digits and punctuation (NFKC: their ASCII forms).
    check_one("SSN \uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19", "SSN [SSN]", PhiType::Ssn);
    check_one("SSN \uff11\uff12\uff13\uff0d\uff14\uff15\uff0d\uff16\uff17\uff18\uff19.", "SSN [SSN].", PhiType::Ssn);
    check_one("call \uff15\uff15\uff15-\uff11\uff12\uff13-\uff14\uff15\uff16\uff17", "call [PHONE]", PhiType::Phone);
    check_one("mail \uff4a\uff41\uff4e\uff45\uff20example.org", "mail [EMAIL]", PhiType::Email);
    // Arabic-Indic and Devanagari digits.
    check_one("SSN \u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669", "SSN [SSN]", PhiType::Ssn);
    check_one("MRN \u0967\u0968\u0969\u096a\u096b\u096c\u096d", "MRN [MRN]", PhiType::Mrn);
    // Readings in such digits are kept, byte for byte.
    check_kept("glucose \uff11\uff14\uff15 mg/dL, HR \u0666\u0662 bpm, 10,432\u200b steps, 36.8 \u00b0C");
}

TEST_CASE("redact: a cue at the end of a line names what starts the next one", "[unit][redact]") {
    check_one("Dr.\nJane Doe reported", "Dr.\n[NAME] reported", PhiType::Name);
    check_one("Patient\r\nJohn Smith slept", "Patient\r\n[NAME] slept", PhiType::Name);
    check_one("MRN\n12345678", "MRN\n[MRN]", PhiType::Mrn);
    check_one("seen March\n3, 2025", "seen [DATE]", PhiType::Date);
    check_kept("Patient\nSleep summary: 7.5 hours\nHR\n62 bpm\nglucose\n145 mg/dL");
}

namespace {

// `text` with every ASCII space replaced by `sep`, or (sep empty) every
// ASCII digit replaced by its full-width form.
std::string variant(const std::string& text, const std::string& sep) {
    std::string out;
    for (char c : text) {
        if (sep.empty() && c >= '0' && c <= '9')
            out += std::string("\xef\xbc") + static_cast<char>(0x90 + (c - '0'));
        else if (!sep.empty() && c == ' ')
            out += sep;
        else
            out += c;
    }
    return out;
}

}  // namespace

TEST_CASE("redact: the corpora behind Unicode spaces and in full-width digits, found and kept alike",
          "[unit][redact]") {
    const std::vector<std::string> variants = {"\u00a0", "\u2028", "\u0085", "\u2009", "\u202f", "\u2007",
                                               "\u3000", "\u2002", "\u205f", "\u1680", "\u2029", ""};
    for (const auto& sep : variants) {
        INFO("variant: " << (sep.empty() ? std::string("full-width digits") : "separator " + sep));
        int leaked = 0, miscounted = 0;
        for (const auto& line : lines("planted.jsonl")) {
            rapidjson::Document d;
            d.Parse(line.data(), line.size());
            REQUIRE_FALSE(d.HasParseError());
            const std::string text = variant(str(d["text"]), sep);
            const auto r = redact(text);
            std::array<std::uint32_t, kPhiTypeCount> want{};
            for (const auto& p : d["planted"].GetArray()) {
                ++want[static_cast<std::size_t>(type_of(str(p["type"])))];
                const std::string value = variant(str(p["value"]), sep);
                if (r.text.find(value) != std::string::npos) {
                    UNSCOPED_INFO("left in clear: " << value << " in " << r.text);
                    ++leaked;
                }
            }
            if (r.counts.by_type != want) {
                UNSCOPED_INFO("counted otherwise: " << text << " -> " << r.text);
                ++miscounted;
            }
            CHECK(is_valid_utf8(r.text));
        }
        CHECK(leaked == 0);
        CHECK(miscounted == 0);
        // Readings are kept byte for byte.
        int changed = 0;
        for (const auto& line : lines("vitals.jsonl")) {
            rapidjson::Document d;
            d.Parse(line.data(), line.size());
            REQUIRE_FALSE(d.HasParseError());
            const std::string text = variant(str(d["text"]), sep);
            const auto r = redact(text);
            if (r.text != text) {
                UNSCOPED_INFO("changed: " << text << " -> " << r.text);
                ++changed;
            }
        }
        CHECK(changed == 0);
    }
}

TEST_CASE("redact: health plan, account, license and vehicle numbers, other ids, ages over 89", "[unit][redact]") {
    check_one("member ID W123456789 on file", "member ID [HEALTH_PLAN] on file", PhiType::HealthPlan);
    check_one("Medicare number: 1EG4-TE5-MK73", "Medicare number: [HEALTH_PLAN]", PhiType::HealthPlan);
    check_one("policy # XK-99812-3", "policy # [HEALTH_PLAN]", PhiType::HealthPlan);
    check_one("beneficiary no. 55321907", "beneficiary no. [HEALTH_PLAN]", PhiType::HealthPlan);
    check_one("insurance ID: BCX4471902", "insurance ID: [HEALTH_PLAN]", PhiType::HealthPlan);
    check_one("acct #00123-88", "acct #[ACCOUNT]", PhiType::Account);
    check_one("account number 4417 pending", "account number [ACCOUNT] pending", PhiType::Account);
    check_one("license no. D1234567", "license no. [LICENSE]", PhiType::License);
    check_one("certificate number 77-AB-123", "certificate number [LICENSE]", PhiType::License);
    check_one("prescriber DEA AB1234563", "prescriber DEA [LICENSE]", PhiType::License);
    check_one("NPI 1234567890", "NPI [LICENSE]", PhiType::License);
    check_one("VIN 1HGCM82633A004352", "VIN [VEHICLE]", PhiType::Vehicle);
    check_one("license plate 7XYZ123 seen", "license plate [VEHICLE] seen", PhiType::Vehicle);
    check_one("ID: AB-12345", "ID: [ID]", PhiType::Id);
    check_one("claim number 889123", "claim number [ID]", PhiType::Id);
    check_one("case #A77821", "case #[ID]", PhiType::Id);
    check_one("aged 92, walks daily", "aged [AGE], walks daily", PhiType::Age);
    check_one("Age: 95", "Age: [AGE]", PhiType::Age);
    check_one("at the age of 91 years", "at the age of [AGE] years", PhiType::Age);
    // Ages up to 89, counts, readings and ordinary uses of the cue words stay.
    check_kept("aged 45, age 89, age of 18, aged 95 days, member of the family, policy review, the VIN sticker");
    check_kept("reference range: 70-100 mg/dL, reference: 145, in case of 3 episodes, plate count 250 and ID 12");
    check_kept("claim 2 steps, license renewed, insurance: Aetna, account of 3 nights, id est");
}

TEST_CASE(
    "redact: 5,000 generated narratives, identifiers planted behind random separators: none leaks, no "
    "reading is lost",
    "[unit][redact]") {
    struct Planted {
        std::string text;
        std::vector<std::string> values;
    };
    std::vector<Planted> planted;
    for (const auto& line : lines("planted.jsonl")) {
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        REQUIRE_FALSE(d.HasParseError());
        Planted p{str(d["text"]), {}};
        for (const auto& v : d["planted"].GetArray()) p.values.push_back(str(v["value"]));
        planted.push_back(std::move(p));
    }
    struct Vital {
        std::string text;
        std::vector<std::string> keep;
    };
    std::vector<Vital> vitals;
    for (const auto& line : lines("vitals.jsonl")) {
        rapidjson::Document d;
        d.Parse(line.data(), line.size());
        REQUIRE_FALSE(d.HasParseError());
        Vital v{str(d["text"]), {}};
        for (const auto& k : d["keep"].GetArray()) v.keep.push_back(str(k));
        vitals.push_back(std::move(v));
    }
    const std::vector<std::string> seps = {" ",      "\u00a0", "\u2028", "\u0085", "\u2009", "\u202f", "\u2007",
                                           "\u3000", "\u2002", "\u205f", "\u1680", "\u2029", "\t"};
    std::mt19937 rng(20261208);
    auto pick = [&](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
    // How often `value` is in `text` as a token of its own (no letter or
    // digit glued on: an age "92" is not in "1992").
    auto count = [](const std::string& text, const std::string& value) {
        auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
        int n = 0;
        for (auto at = text.find(value); at != std::string::npos; at = text.find(value, at + 1)) {
            const bool left = at == 0 || !alnum(text[at - 1]) || !alnum(value.front());
            const bool right =
                at + value.size() == text.size() || !alnum(text[at + value.size()]) || !alnum(value.back());
            n += left && right;
        }
        return n;
    };
    int leaked = 0, lost = 0;
    for (int k = 0; k < 5000; ++k) {
        // Readings and identifiers in a random order, each piece's spaces
        // all one random separator, pieces joined by another.
        std::string text;
        std::vector<std::string> must_go, must_stay;
        const std::size_t pieces = 2 + pick(4);
        for (std::size_t p = 0; p < pieces; ++p) {
            const std::string& sep = seps[pick(seps.size())];
            if (!text.empty()) text += seps[pick(seps.size())];
            if (pick(2) == 0) {
                const Planted& pl = planted[pick(planted.size())];
                text += variant(pl.text, sep);
                for (const auto& v : pl.values) must_go.push_back(variant(v, sep));
            } else {
                const Vital& vi = vitals[pick(vitals.size())];
                text += variant(vi.text, sep);
                for (const auto& v : vi.keep) must_stay.push_back(variant(v, sep));
            }
        }
        const auto r = redact(text);
        for (const auto& v : must_go) {
            // Gone where it was planted; the same token elsewhere ("95" may be a reading too) stays.
            const auto planted_here = std::count(must_go.begin(), must_go.end(), v);
            if (count(r.text, v) > count(text, v) - planted_here) {
                UNSCOPED_INFO("left in clear: " << v << " in " << r.text);
                ++leaked;
            }
        }
        for (const auto& v : must_stay) {
            if (count(r.text, v) == 0) {
                UNSCOPED_INFO("reading lost: " << v << " in " << r.text);
                ++lost;
            }
        }
    }
    CHECK(leaked == 0);
    CHECK(lost == 0);
}
