#include "append/batch_objects.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>

#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/json.hpp"
#include "common/object_key.hpp"
#include "common/random.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr const char* kFormat = "training_output.batches/1";
// A reader starts over when a compaction moved things under it, after a
// pause (full jitter, doubling from 10 ms up to 1 s: some 7 s in all, at
// most 15) so that a compaction in progress can finish.
constexpr int kReadAttempts = 20;

std::string stem(const std::string& month_key) { return object_stem(month_key); }

std::string hex16(std::uint64_t v) {
    static const char* digits = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 0xF];
    return s;
}

bool all_hex(std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

[[noreturn]] void fail(const std::string& what, const SinkResponse& r) {
    throw Error(r.status == SinkStatus::Auth ? ErrorCode::Auth : ErrorCode::Storage, what + ": " + r.describe());
}

// HEAD of `key`: its answer, NotFound included; any other failure throws.
SinkResponse head_or_missing(S3Sink& sink, const std::string& key) {
    SinkResponse h = sink.head(key);
    if (!h.ok() && h.status != SinkStatus::NotFound) fail("could not read " + json::quote(key), h);
    return h;
}

std::uint64_t uint_member(const rapidjson::Value& o, const char* name) {
    auto it = o.FindMember(name);
    if (it == o.MemberEnd() || !it->value.IsUint64()) {
        throw Error(ErrorCode::Storage, std::string("batches manifest: \"") + name + "\" is missing or not a count");
    }
    return it->value.GetUint64();
}

std::map<std::string, std::uint64_t> seq_map(const rapidjson::Value& o, const char* name) {
    std::map<std::string, std::uint64_t> out;
    auto it = o.FindMember(name);
    if (it == o.MemberEnd() || !it->value.IsObject()) {
        throw Error(ErrorCode::Storage, std::string("batches manifest: \"") + name + "\" is missing or not an object");
    }
    for (auto& m : it->value.GetObject()) {
        if (!m.value.IsUint64()) throw Error(ErrorCode::Storage, "batches manifest: a sequence number is not one");
        out[std::string(json::view(m.name))] = m.value.GetUint64();
    }
    return out;
}

void put_seq_map(std::string& out, const std::map<std::string, std::uint64_t>& m) {
    out += '{';
    bool first = true;
    for (const auto& [spool, seq] : m) {
        if (!first) out += ',';
        first = false;
        json::append_quoted(out, spool);
        out += ':' + std::to_string(seq);
    }
    out += '}';
}

// Runs f(i) for i in [0, n) on up to `threads` threads; the first exception
// is rethrown once all are done.
template <class F>
void parallel_for(std::size_t n, unsigned threads, F f) {
    std::atomic<std::size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&] {
        for (std::size_t i; (i = next.fetch_add(1)) < n;) {
            try {
                f(i);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                next = n;
            }
        }
    };
    std::vector<std::thread> pool;
    const std::size_t count = std::min<std::size_t>(std::max(1u, threads), n);
    for (std::size_t t = 1; t < count; ++t) pool.emplace_back(run);
    run();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace

namespace batch_objects {

std::string prefix(const std::string& month_key) { return stem(month_key) + ".batches/"; }

std::string manifest_key(const std::string& month_key) { return stem(month_key) + ".batches.json"; }

std::string key(const std::string& month_key, const std::string& spool, std::uint64_t first_seq) {
    return prefix(month_key) + spool + "-" + hex16(first_seq) + ".jsonl";
}

std::optional<BatchName> parse(const std::string& month_key, const std::string& key) {
    const std::string p = prefix(month_key);
    const std::string ext = ".jsonl";
    if (key.size() < p.size() + 18 + ext.size() || key.compare(0, p.size(), p) != 0 ||
        key.compare(key.size() - ext.size(), ext.size(), ext) != 0) {
        return std::nullopt;
    }
    const std::string_view name(key.data() + p.size(), key.size() - p.size() - ext.size());
    const auto dash = name.rfind('-');
    if (dash == std::string_view::npos || name.size() - dash - 1 != 16) return std::nullopt;
    const std::string_view spool = name.substr(0, dash), seq = name.substr(dash + 1);
    if (!all_hex(spool) || !all_hex(seq)) return std::nullopt;
    return BatchName{std::string(spool), std::strtoull(std::string(seq).c_str(), nullptr, 16)};
}

std::optional<std::string> month_of(const std::string& batch_key) {
    const std::string marker = ".batches/";
    const auto at = batch_key.rfind(marker);
    if (at == std::string::npos) return std::nullopt;
    const std::string stem = batch_key.substr(0, at);
    for (std::string month : {stem + ".jsonl", stem}) {
        if (parse(month, batch_key)) return month;
    }
    return std::nullopt;
}

BatchIntent intent(const std::string& month_key, const std::string& batch_key, std::uint64_t bytes, std::uint32_t crc) {
    return BatchIntent{month_key, "", 0, batch_key, bytes, crc};
}

}  // namespace batch_objects

bool BatchManifest::folded_in(const BatchName& name) const {
    auto it = folded.find(name.spool);
    return it != folded.end() && name.seq <= it->second;
}

std::string BatchManifest::encode() const {
    std::string out = "{\"format\":\"";
    out += kFormat;
    out += "\",\"file_bytes\":" + std::to_string(file_bytes) + ",\"folded\":";
    put_seq_map(out, folded);
    out += ",\"folding\":";
    if (!folding) {
        out += "null";
    } else {
        out += "{\"etag\":";
        json::append_quoted(out, folding->intent.etag);
        out += ",\"offset\":" + std::to_string(folding->intent.offset) +
               ",\"bytes\":" + std::to_string(folding->intent.bytes) +
               ",\"crc32c\":" + std::to_string(folding->intent.crc) + ",\"upto\":";
        put_seq_map(out, folding->upto);
        out += '}';
    }
    out += "}\n";
    return out;
}

BatchManifest BatchManifest::decode(std::string_view text) {
    rapidjson::Document doc;
    json::parse(doc, text, "batches manifest", ErrorCode::Storage);
    if (!doc.IsObject()) throw Error(ErrorCode::Storage, "batches manifest: not a JSON object");
    auto format = doc.FindMember("format");
    if (format == doc.MemberEnd() || !format->value.IsString() || json::view(format->value) != kFormat) {
        throw Error(ErrorCode::Storage,
                    std::string("batches manifest: not of format ") + kFormat + " (written by a newer library?)");
    }
    BatchManifest m;
    m.file_bytes = uint_member(doc, "file_bytes");
    m.folded = seq_map(doc, "folded");
    auto f = doc.FindMember("folding");
    if (f != doc.MemberEnd() && f->value.IsObject()) {
        Fold fold;
        auto etag = f->value.FindMember("etag");
        if (etag == f->value.MemberEnd() || !etag->value.IsString()) {
            throw Error(ErrorCode::Storage, "batches manifest: the fold's \"etag\" is missing");
        }
        fold.intent.etag = std::string(json::view(etag->value));
        fold.intent.offset = uint_member(f->value, "offset");
        fold.intent.bytes = uint_member(f->value, "bytes");
        const std::uint64_t crc = uint_member(f->value, "crc32c");
        if (crc > 0xFFFFFFFFu) throw Error(ErrorCode::Storage, "batches manifest: the fold's CRC is out of range");
        fold.intent.crc = static_cast<std::uint32_t>(crc);
        fold.upto = seq_map(f->value, "upto");
        m.folding = std::move(fold);
    } else if (f != doc.MemberEnd() && !f->value.IsNull()) {
        throw Error(ErrorCode::Storage, "batches manifest: \"folding\" is neither an object nor null");
    }
    return m;
}

BatchObjects::BatchObjects(S3Sink& sink, ObjectAppender& appender, BatchObjectsOptions options, const Logger* logger)
    : sink_(sink), appender_(appender), options_(std::move(options)), logger_(logger) {}

AppendResult BatchObjects::land(const std::string& month_key, const std::string& batch_key, std::string_view batch,
                                std::optional<BatchIntent>* left_undecided) {
    return land(batch_objects::intent(month_key, batch_key, batch.size(), crc32c::compute(batch)), batch,
                left_undecided);
}

AppendResult BatchObjects::land(const BatchIntent& intent, std::string_view batch,
                                std::optional<BatchIntent>* left_undecided) {
    if (!intent.as_object() || intent.bytes != batch.size()) {
        throw Error(ErrorCode::InvalidArgument, "BatchObjects::land(): the intent does not name this batch's object");
    }
    const std::string& month_key = intent.key;
    const std::string& batch_key = intent.batch_object;
    AppendResult result;
    result.attempts = 1;
    // From here the batch may land: if this fails, it stays undecided (a
    // write of it may still land, and it is always these bytes).
    if (left_undecided) *left_undecided = intent;
    WriteConditions create;
    create.if_none_match_any = true;
    // The name is taken: by this batch (an earlier write of it), or by a
    // fence, which a batch of lines never lands under.
    auto fenced = [&](const SinkResponse& existing) {
        if (batch.empty() || existing.size != 0) return;
        if (left_undecided) left_undecided->reset();  // none of it can land
        throw FencedName(ErrorCode::Storage, "the batch object " + json::quote(batch_key) +
                                                 " was fenced (by a writer that found its lines delivered elsewhere, "
                                                 "or that took claims of its spool over): its lines take another name");
    };
    if (!sink_.capabilities().conditional_writes) {
        // Conditions are ignored here: look first (a rewrite would be the same bytes anyway).
        SinkResponse h = sink_.head(batch_key);
        if (h.ok()) {
            fenced(h);
            result.found_landed = true;
            if (left_undecided) left_undecided->reset();
            std::lock_guard<std::mutex> lock(written_mutex_);
            written_.insert(month_key);  // its month is one to compact
            return result;
        }
    }
    SinkResponse r = sink_.put(batch_key, batch, options_.attributes, create);
    if (r.status == SinkStatus::PreconditionFailed && !batch.empty()) {
        SinkResponse h = sink_.head(batch_key);
        if (h.ok()) fenced(h);
    }
    if (r.ok() || r.status == SinkStatus::PreconditionFailed) {
        if (r.ok()) crash_point("append.after_write");  // landed; the writer has not seen it yet
        {
            std::lock_guard<std::mutex> lock(written_mutex_);
            written_.insert(month_key);
        }
        result.found_landed = !r.ok();  // 412: an earlier write of it is there
        if (left_undecided) left_undecided->reset();
        return result;
    }
    // It stays undecided even when refused outright: its INTENT names the
    // object, and the same name (and bytes) is written next.
    fail("could not write the batch object " + json::quote(batch_key), r);
}

Landed BatchObjects::check_landed(const BatchIntent& intent) {
    SinkResponse h = sink_.head(intent.batch_object);
    if (h.ok()) return h.size == 0 && intent.bytes > 0 ? Landed::No : Landed::Yes;
    if (h.status != SinkStatus::NotFound) return Landed::Unknown;
    const auto name = batch_objects::parse(intent.key, intent.batch_object);
    if (!name) return Landed::Unknown;
    try {
        // Written before its object is deleted: a batch object that is gone
        // was folded, or never written (and may still be: not yet).
        const BatchManifest m = read_manifest(intent.key);
        return m.folded_in(*name) ? Landed::Yes : Landed::NotYet;
    } catch (const Error&) {
        return Landed::Unknown;
    }
}

std::set<std::string> BatchObjects::take_months_written() {
    std::lock_guard<std::mutex> lock(written_mutex_);
    return std::exchange(written_, {});
}

BatchManifest BatchObjects::read_manifest(const std::string& month_key) {
    const std::string key = batch_objects::manifest_key(month_key);
    SinkResponse g = sink_.get(key);
    if (g.status == SinkStatus::NotFound) return BatchManifest{};
    if (!g.ok()) fail("could not read the batches manifest " + json::quote(key), g);
    BatchManifest m = BatchManifest::decode(g.body);
    m.etag = g.etag;
    if (m.folding) m.folding->intent.key = month_key;
    return m;
}

void BatchObjects::write_manifest(const std::string& month_key, BatchManifest& m) {
    const std::string key = batch_objects::manifest_key(month_key);
    const std::string body = m.encode();
    WriteConditions c;
    if (m.etag.empty()) {
        c.if_none_match_any = true;
    } else {
        c.if_match = m.etag;
    }
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    SinkResponse r = sink_.put(key, body, attrs, c);
    if (!r.ok() && r.may_have_applied) {
        // Its answer was lost: the manifest says whether it landed.
        SinkResponse g = sink_.get(key);
        if (g.ok() && g.body == body) r = std::move(g);
    }
    if (!r.ok() || r.etag.empty()) {
        fail("could not write the batches manifest " + json::quote(key) +
                 (r.status == SinkStatus::PreconditionFailed ? " (another compactor changed it)" : ""),
             r);
    }
    m.etag = r.etag;
}

std::vector<BatchObjects::Listed> BatchObjects::list_batches(const std::string& month_key) {
    std::vector<Listed> out;
    const std::string p = batch_objects::prefix(month_key);
    std::string token;
    do {
        ListPage page;
        SinkResponse r = sink_.list(p, token, page);
        if (!r.ok()) fail("could not list the batch objects under " + json::quote(p), r);
        for (auto& o : page.objects) {
            auto name = batch_objects::parse(month_key, o.key);
            if (!name) continue;  // not one of ours: left alone
            out.push_back(Listed{std::move(*name), std::move(o.key), o.size});
        }
        token = std::move(page.next);
    } while (!token.empty());
    std::sort(out.begin(), out.end(), [](const Listed& a, const Listed& b) {
        return a.name.spool != b.name.spool ? a.name.spool < b.name.spool : a.name.seq < b.name.seq;
    });
    return out;
}

std::string BatchObjects::read_batches(const std::vector<const Listed*>& batches, bool& missing) {
    std::vector<std::string> bodies(batches.size());
    std::atomic<bool> gone{false};
    parallel_for(batches.size(), options_.parallel_requests, [&](std::size_t i) {
        if (gone.load()) return;
        SinkResponse g = sink_.get(batches[i]->key);
        if (g.status == SinkStatus::NotFound) {
            gone = true;
            return;
        }
        if (!g.ok()) fail("could not read the batch object " + json::quote(batches[i]->key), g);
        bodies[i] = std::move(g.body);
    });
    missing = gone.load();
    std::string out;
    std::size_t total = 0;
    for (const auto& b : bodies) total += b.size() + 1;
    out.reserve(total);
    for (auto& b : bodies) {
        out += b;
        if (!b.empty() && b.back() != '\n') out += '\n';
    }
    return out;
}

std::uint64_t BatchObjects::remove_all(const std::vector<std::string>& keys) {
    constexpr std::size_t kPerRequest = 1000;  // DeleteObjects' limit
    const std::size_t chunks = (keys.size() + kPerRequest - 1) / kPerRequest;
    std::atomic<std::uint64_t> removed{0};
    parallel_for(chunks, options_.parallel_requests, [&](std::size_t c) {
        const std::vector<std::string> chunk(
            keys.begin() + static_cast<std::ptrdiff_t>(c * kPerRequest),
            keys.begin() + static_cast<std::ptrdiff_t>(std::min(keys.size(), (c + 1) * kPerRequest)));
        std::vector<std::string> failed;
        SinkResponse r = sink_.remove_many(chunk, failed);
        if (!r.ok()) failed = chunk;
        removed.fetch_add(chunk.size() - std::min(chunk.size(), failed.size()));
        // Folded already: the next compaction removes them.
        if (!failed.empty() && logger_) {
            logger_->log(LogLevel::Warning, "training_output_batch_objects_not_removed",
                         {{"count", static_cast<std::uint64_t>(failed.size())},
                          {"first", failed.front()},
                          {"error", r.ok() ? std::string("refused per key") : r.describe()}});
        }
    });
    return removed.load();
}

void BatchObjects::commit_fold(const std::string& month_key, BatchManifest& m, std::uint64_t end,
                               const std::function<bool()>& still_ours) {
    if (!still_ours()) throw Error(ErrorCode::Storage, "the compaction lease was lost before its fold was recorded");
    for (const auto& [spool, seq] : m.folding->upto) {
        auto& mark = m.folded[spool];
        mark = std::max(mark, seq);
    }
    m.file_bytes = end;
    m.folding.reset();
    write_manifest(month_key, m);
}

bool BatchObjects::fold_round(const std::string& month_key, BatchManifest& m, const std::vector<Listed>& listing,
                              const std::function<bool()>& still_ours, CompactionResult& result,
                              std::optional<Fold>& fold) {
    std::optional<BatchIntent> undecided;
    std::vector<const Listed*> take;
    if (m.folding) {
        // A fold an earlier compactor left: finished as it was planned.
        const Landed l = appender_.check_landed(m.folding->intent);
        if (l == Landed::Unknown) throw Error(ErrorCode::Storage, "cannot tell whether an earlier fold landed");
        for (const auto& b : listing) {
            auto up = m.folding->upto.find(b.name.spool);
            if (!m.folded_in(b.name) && up != m.folding->upto.end() && b.name.seq <= up->second) take.push_back(&b);
        }
        if (l == Landed::Yes) {
            const std::uint64_t end = m.folding->intent.offset + m.folding->intent.bytes;
            commit_fold(month_key, m, end, still_ours);
            fold = Fold{end, std::string()};  // its bytes are read back from M
            result.finished_earlier = true;
            result.folds += 1;
            std::vector<std::string> keys;
            for (const auto* b : take) keys.push_back(b->key);
            result.deleted += remove_all(keys);
            return true;  // the rest is planned next
        }
        if (l == Landed::NotYet) undecided = m.folding->intent;
        if (l == Landed::No) m.folding.reset();  // nothing of it can land: planned again below
    }
    std::vector<std::string> copies;  // batch objects folded already (late copies of requests)
    bool more = false;                // batch objects left for the next fold
    if (!m.folding) {
        // In (spool, seq) order, up to the budget and then none: what a
        // spool's mark covers is every one of its batches up to it.
        std::uint64_t bytes = 0;
        BatchManifest::Fold plan;
        for (const auto& b : listing) {
            if (m.folded_in(b.name)) {
                copies.push_back(b.key);
            } else if (more || (!take.empty() && bytes + b.size > options_.compaction_max_bytes)) {
                more = true;
            } else {
                take.push_back(&b);
                bytes += b.size;
                plan.upto[b.name.spool] = b.name.seq;
            }
        }
        m.folding = std::move(plan);
    }
    if (take.empty()) {
        m.folding.reset();
        result.deleted += remove_all(copies);
        return false;
    }
    bool missing = false;
    std::string body = read_batches(take, missing);
    if (missing) throw Error(ErrorCode::Storage, "a batch object vanished while it was being folded");
    if (body.empty() && !undecided) {
        // Only fences (empty batch objects): recorded as folded, nothing
        // appended. A first manifest counts the file as it is (written in
        // another mode before).
        if (m.etag.empty()) {
            const SinkResponse h = head_or_missing(sink_, month_key);
            m.file_bytes = h.ok() ? h.size : 0;
        }
        commit_fold(month_key, m, m.file_bytes, still_ours);
        result.folds += 1;
        result.batches += take.size();
        for (const auto* b : take) copies.push_back(b->key);
        result.deleted += remove_all(copies);
        return more;
    }
    const std::uint32_t crc = crc32c::compute(body);
    if (undecided && (body.size() != undecided->bytes || crc != undecided->crc)) {
        throw Error(ErrorCode::Storage, "an earlier fold may still land, and its batch objects no longer make it up");
    }
    const bool first = m.etag.empty();
    std::uint64_t end = 0;
    {
        // (Its lease on M, if it takes one, ends with it.)
        AppendJob job(appender_, month_key, body, crc, undecided);
        while (const BatchIntent* in = job.prepare()) {
            // The fold's INTENT, in the manifest, before each write of it.
            if (!still_ours()) throw Error(ErrorCode::Storage, "the compaction lease was lost");
            m.folding->intent = *in;
            if (first) m.file_bytes = in->offset;  // what M held before: the month's, from an earlier mode
            write_manifest(month_key, m);
            job.write_once();
        }
        end = job.result().offset + body.size();
    }
    commit_fold(month_key, m, end, still_ours);
    result.folds += 1;
    result.batches += take.size();
    result.bytes += body.size();
    fold = Fold{end, std::move(body)};
    for (const auto* b : take) copies.push_back(b->key);
    result.deleted += remove_all(copies);
    return more || undecided.has_value();
}

CompactionResult BatchObjects::compact(const std::string& month_key) {
    Compaction c(*this, month_key);
    while (c.next()) {}
    return c.result();
}

Compaction::Compaction(BatchObjects& batches, const std::string& month_key)
    : b_(batches),
      month_key_(month_key),
      lease_(b_.appender_, batch_objects::manifest_key(month_key), b_.options_.compaction_lease_wait) {
    result_.ran = lease_.held();
}

const Fold* Compaction::next() {
    fold_.reset();
    const std::function<bool()> still_ours = [this] { return lease_.still_ours(); };
    while (more_ && lease_.still_ours()) {
        BatchManifest m = b_.read_manifest(month_key_);
        more_ = b_.fold_round(month_key_, m, b_.list_batches(month_key_), still_ours, result_, fold_);
        if (fold_) return &*fold_;
    }
    more_ = false;
    return nullptr;
}

std::string BatchObjects::read_month(const std::string& month_key) {
    const std::string mkey = batch_objects::manifest_key(month_key);
    std::string why;  // what made the last attempt start over
    for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
        if (attempt > 0) {
            std::this_thread::sleep_for(
                random::full_jitter(attempt, std::chrono::milliseconds(10), std::chrono::milliseconds(1000)));
        }
        const BatchManifest m = read_manifest(month_key);
        const std::vector<Listed> listing = list_batches(month_key);
        // While the file is converted to an appendable one (ObjectAppender),
        // it may be missing or partly written again: then its copy holds it.
        const std::string marker_key = conversion_marker_key(month_key);
        SinkResponse marker = sink_.get(marker_key);
        if (!marker.ok() && marker.status != SinkStatus::NotFound)
            fail("could not read " + json::quote(marker_key), marker);
        const bool converting = marker.ok() && marker.body.find("\"done\":true") == std::string::npos;
        std::string out;
        std::optional<std::string> file_etag;  // of the file, when it was read (not its copy)
        if (m.etag.empty() || m.file_bytes > 0) {
            auto read = [&](const std::string& key) {
                return m.etag.empty() ? sink_.get(key) : sink_.get(key, ByteRange{0, m.file_bytes - 1});
            };
            SinkResponse g = converting ? read(conversion_copy_key(month_key)) : SinkResponse{};
            if (converting && !g.ok() && g.status != SinkStatus::NotFound) fail("could not read the copy", g);
            const bool from_copy = converting && g.ok();
            if (!from_copy) {
                // The file: whole unless a conversion's copy was completed
                // meanwhile (then the file may be partly written again).
                g = read(month_key);
                if (!g.ok() && g.status != SinkStatus::NotFound) fail("could not read " + json::quote(month_key), g);
                if (converting && sink_.head(conversion_copy_key(month_key)).status != SinkStatus::NotFound) {
                    why = "a conversion's copy appeared while the file was read";
                    continue;
                }
                if (g.status == SinkStatus::NotFound && (!m.etag.empty() || converting)) {
                    why = "the file was missing though " + std::string(converting ? "a conversion" : "the manifest") +
                          " names it";
                    continue;
                }
                file_etag = g.ok() ? g.etag : std::string();
            }
            out = std::move(g.body);
            if (!out.empty() && out.back() != '\n') out += '\n';
        }
        std::vector<const Listed*> unfolded;
        for (const auto& b : listing) {
            if (!m.folded_in(b.name)) unfolded.push_back(&b);
        }
        bool missing = false;
        out += read_batches(unfolded, missing);
        if (missing) {  // folded and removed meanwhile
            why = "a listed batch object was gone when read";
            continue;
        }
        // Nothing moved under the reader: the manifest is the one it started
        // from, and a conversion neither began nor ended meanwhile.
        const SinkResponse again = head_or_missing(sink_, mkey);
        if ((again.ok() ? again.etag : std::string()) != m.etag) {
            why = "the manifest changed";
            continue;
        }
        const SinkResponse marker_now = sink_.head(marker_key);
        const bool same_marker = marker_now.status == marker.status && marker_now.etag == marker.etag;
        const bool done_then_gone = marker.ok() && !converting && marker_now.status == SinkStatus::NotFound;
        if (!same_marker && !done_then_gone) {
            why = "a conversion began or ended";
            continue;
        }
        // A whole conversion may have begun and ended between the two looks
        // at its marker: it rewrote the file, which the reader may have read
        // half written. The file's ETag tells (a fold's append changes it
        // too: read again).
        if (file_etag) {
            const SinkResponse h = head_or_missing(sink_, month_key);
            if ((h.ok() ? h.etag : std::string()) != *file_etag) {
                why = "the file changed while it was read";
                continue;
            }
        }
        return out;
    }
    throw Error(ErrorCode::Storage, "the month " + json::quote(month_key) + " kept changing while it was read (" +
                                        std::to_string(kReadAttempts) + " attempts; the last: " + why + ")");
}

}  // namespace training_output
