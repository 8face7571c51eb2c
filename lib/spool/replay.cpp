// Replay of a spool's files (rules in replay.hpp).
#include "spool/replay.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "append/batch_objects.hpp"
#include "common/json.hpp"
#include "spool/record.hpp"

namespace training_output::spool {
namespace {

constexpr std::size_t kMaxNotes = 32;

// An INTENT record's batch: a batch object's key is where the monthly
// object's ETag would be (Spool::record_intent).
BatchIntent intent_of(const IntentRecord& r) {
    BatchIntent in{r.object_key, r.etag, r.object_size, "", r.batch_bytes, r.batch_crc};
    if (r.etag.find('/') != std::string::npos && batch_objects::parse(r.object_key, r.etag)) {
        in.batch_object = r.etag;
        in.etag.clear();
        in.offset = 0;
    }
    return in;
}

struct LineInfo {
    std::string_view key;
    SpoolLineRef ref;
    std::size_t segment = 0;  // index into the segments given
    bool live = true;
    std::uint64_t batch = 0;  // the undecided batch whose INTENT names it last (0: none)
};

// A control record, where it was found.
struct Control {
    std::string_view payload;
    std::size_t file = 0;     // index into the control files given
    bool in_segment = false;  // earlier versions kept them among the lines
};

class Replayer {
public:
    explicit Replayer(ReplayResult& r) : r_(r) {}

    // Reads the records of one file; LINE records go to lines_ (segments
    // only), the others to controls_.
    void scan(const ReplayFile& file, std::size_t index, bool segment) {
        ReplayedFile& out = segment ? r_.segments[index] : r_.controls[index];
        const std::string_view data = file.data;
        const bool v1 =
            data.size() >= kMagicBytes && data.compare(0, kMagicBytes, std::string_view(kMagicV1, kMagicBytes)) == 0;
        const bool v2 =
            data.size() >= kMagicBytes && data.compare(0, kMagicBytes, std::string_view(kMagic, kMagicBytes)) == 0;
        if (!v1 && !v2) {
            // Not even the magic made it: nothing to recover.
            out.end = 0;
            out.torn = data.find_first_not_of('\0') != std::string_view::npos;
            if (out.torn) torn(file, 0, data.size(), segment);
            return;
        }
        const std::uint32_t seed = v1 ? 0 : checksum_seed(file.number);
        std::size_t pos = kMagicBytes;
        while (pos < data.size()) {
            auto payload = record_at(data, pos, seed);
            if (!payload) {
                if (data.find_first_not_of('\0', pos) == std::string_view::npos) break;  // the unused rest
                out.torn = true;
                torn(file, pos, data.size() - pos, segment);
                break;
            }
            const std::uint64_t record_bytes = kHeaderBytes + payload->size();
            if (static_cast<unsigned char>((*payload)[0]) == kLine) {
                if (segment) {
                    if (auto line = decode_line(*payload)) {
                        LineInfo info;
                        info.key = line->object_key;
                        info.ref.seq = line->seq;
                        info.ref.segment = file.number;
                        info.ref.offset = pos;
                        info.ref.record_bytes = static_cast<std::uint32_t>(record_bytes);
                        info.ref.line_bytes = static_cast<std::uint32_t>(line->line.size());
                        info.segment = index;
                        lines_.push_back(info);
                    } else {
                        reject("a LINE record whose fields do not parse");
                    }
                }
            } else {
                (segment ? segment_controls_ : controls_).push_back(Control{*payload, index, segment});
            }
            pos += record_bytes;
        }
        out.end = pos;
    }

    void run(const std::vector<ReplayFile>& segments, const std::vector<ReplayFile>& controls) {
        r_.segments.resize(segments.size());
        r_.controls.resize(controls.size());
        for (std::size_t i = 0; i < segments.size(); ++i) scan(segments[i], i, true);
        for (std::size_t i = 0; i < controls.size(); ++i) scan(controls[i], i, false);
        index_lines();
        for (const auto& c : segment_controls_) apply(c);
        for (const auto& c : controls_) apply(c);
        collect();
    }

private:
    void torn(const ReplayFile& file, std::size_t offset, std::size_t dropped, bool segment) {
        ++r_.torn_records;
        note(std::string(segment ? "segment " : "control file ") + std::to_string(file.number) +
             ": a record torn at offset " + std::to_string(offset) + " (" + std::to_string(dropped) +
             " bytes dropped); the records before it are recovered");
    }
    void reject(const std::string& why) {
        ++r_.rejected_records;
        note("a record was rejected: " + why);
    }
    void note(std::string text) {
        if (r_.notes.size() < kMaxNotes) r_.notes.push_back(std::move(text));
    }

    // Lines by seq; a seq found twice (a damaged or copied file) keeps its first record.
    void index_lines() {
        std::stable_sort(lines_.begin(), lines_.end(),
                         [](const LineInfo& a, const LineInfo& b) { return a.ref.seq < b.ref.seq; });
        std::vector<LineInfo> unique;
        unique.reserve(lines_.size());
        for (auto& l : lines_) {
            if (!unique.empty() && unique.back().ref.seq == l.ref.seq) {
                reject("seq " + std::to_string(l.ref.seq) + " logged twice");
                continue;
            }
            unique.push_back(l);
        }
        lines_ = std::move(unique);
        for (const auto& l : lines_) {
            ReplayedFile& seg = r_.segments[l.segment];
            ++seg.live;
            seg.first_seq = std::min(seg.first_seq, l.ref.seq);
            r_.next_seq = std::max(r_.next_seq, l.ref.seq + 1);
        }
    }

    LineInfo* find(std::uint64_t seq) {
        auto it = std::lower_bound(lines_.begin(), lines_.end(), seq,
                                   [](const LineInfo& l, std::uint64_t s) { return l.ref.seq < s; });
        return it != lines_.end() && it->ref.seq == seq ? &*it : nullptr;
    }

    void kill(LineInfo& l) {
        if (!l.live) return;
        l.live = false;
        --r_.segments[l.segment].live;
    }

    void named(const Control& c, std::uint64_t seq) {
        if (!c.in_segment) r_.controls[c.file].max_seq = std::max(r_.controls[c.file].max_seq, seq);
    }

    // The lines a record names that are still in the spool, all logged
    // under `key`; nullopt (the record is rejected) when one was not.
    std::optional<std::vector<LineInfo*>> present(const std::vector<std::uint64_t>& seqs, const std::string& key,
                                                  const char* what) {
        std::vector<LineInfo*> out;
        out.reserve(seqs.size());
        for (std::uint64_t s : seqs) {
            LineInfo* l = find(s);
            if (!l) continue;  // landed or voided, and its segment deleted
            if (l->key != key) {
                reject(std::string(what) + " names seq " + std::to_string(s) + " of another object key");
                return std::nullopt;
            }
            out.push_back(l);
        }
        return out;
    }

    void apply(const Control& c) {
        const auto type = static_cast<unsigned char>(c.payload[0]);
        switch (type) {
            case kIntent: {
                auto rec = decode_intent(c.payload);
                if (!rec) return reject("an INTENT whose fields do not parse");
                for (auto s : rec->seqs) named(c, s);
                r_.next_batch = std::max(r_.next_batch, rec->batch + 1);
                auto lines = present(rec->seqs, rec->object_key, "an INTENT");
                if (!lines) return;
                for (LineInfo* l : *lines) {
                    if (l->live && l->batch != 0 && l->batch != rec->batch && intents_.count(l->batch)) {
                        return reject("an INTENT names seq " + std::to_string(l->ref.seq) +
                                      " of another undecided batch");
                    }
                }
                for (LineInfo* l : *lines) l->batch = rec->batch;
                intents_[rec->batch] = std::move(*rec);
                return;
            }
            case kDone: {
                auto rec = decode_done(c.payload);
                if (!rec) return reject("a DONE whose fields do not parse");
                for (auto s : rec->seqs) named(c, s);
                r_.next_batch = std::max(r_.next_batch, rec->batch + 1);
                // A DONE names its INTENT's lines, or those of them that were
                // still in the spool (an adopter's, after a torn tail).
                auto in = intents_.find(rec->batch);
                if (in != intents_.end()) {
                    std::set<std::uint64_t> intended(in->second.seqs.begin(), in->second.seqs.end());
                    bool within = in->second.object_key == rec->object_key;
                    for (auto s : rec->seqs) within = within && intended.count(s) > 0;
                    if (!within) {
                        return reject("a DONE of batch " + std::to_string(rec->batch) +
                                      " names lines its INTENT does not");
                    }
                }
                auto lines = present(rec->seqs, rec->object_key, "a DONE");
                if (!lines) return;
                for (LineInfo* l : *lines) kill(*l);
                if (in != intents_.end()) intents_.erase(in);
                if (!rec->uncommitted.empty() && !c.in_segment) {
                    commits_[rec->batch] = ReplayResult::Commit{{rec->batch, std::move(rec->uncommitted)}, c.file};
                }
                return;
            }
            case kVoid: {
                auto rec = decode_void(c.payload);
                if (!rec) return reject("a VOID whose fields do not parse");
                named(c, rec->seq);
                auto lines = present({rec->seq}, rec->object_key, "a VOID");
                if (!lines) return;
                for (LineInfo* l : *lines) kill(*l);
                return;
            }
            case kCommitted: {
                auto batch = decode_committed(c.payload);
                if (!batch) return reject("a COMMITTED whose fields do not parse");
                commits_.erase(*batch);
                return;
            }
            case kRangeIntent: {
                auto rec = decode_range(c.payload, true);
                if (!rec) return reject("an INTENT whose fields do not parse");
                named(c, rec->last);
                range_intents_[rec->object_key] = std::move(*rec);
                return;
            }
            case kRangeDone: {
                auto rec = decode_range(c.payload, false);
                if (!rec) return reject("a DONE whose fields do not parse");
                named(c, rec->last);
                auto lo = std::lower_bound(lines_.begin(), lines_.end(), rec->first,
                                           [](const LineInfo& l, std::uint64_t s) { return l.ref.seq < s; });
                for (auto it = lo; it != lines_.end() && it->ref.seq <= rec->last; ++it) {
                    if (it->key == rec->object_key) kill(*it);
                }
                auto in = range_intents_.find(rec->object_key);
                if (in != range_intents_.end() && in->second.last <= rec->last) range_intents_.erase(in);
                return;
            }
            default: return reject("a record of unknown type " + std::to_string(type));
        }
    }

    void collect() {
        std::map<std::string_view, SpoolRecovered> by_key;
        auto entry = [&](std::string_view key) -> SpoolRecovered& {
            auto& e = by_key[key];
            if (e.object_key.empty()) e.object_key = std::string(key);
            return e;
        };
        std::vector<bool> taken(lines_.size(), false);
        auto index_of = [&](const LineInfo* l) { return static_cast<std::size_t>(l - lines_.data()); };
        for (auto& [batch, in] : intents_) {
            SpoolRecovered::Undecided u;
            u.batch = batch;
            u.intent = intent_of(in);
            for (std::uint64_t s : in.seqs) {
                LineInfo* l = find(s);
                if (!l || !l->live || taken[index_of(l)]) {
                    u.complete = false;
                    continue;
                }
                taken[index_of(l)] = true;
                u.lines.push_back(l->ref);
            }
            if (!u.lines.empty()) entry(in.object_key).undecided.push_back(std::move(u));
        }
        // Earlier versions: the last INTENT of a key names the front of its queue.
        for (auto& [key, in] : range_intents_) {
            SpoolRecovered::Undecided u;
            u.intent = BatchIntent{in.object_key, in.etag, in.object_size, "", 0, 0};
            bool front = true;
            for (std::size_t i = 0; i < lines_.size(); ++i) {
                const LineInfo& l = lines_[i];
                if (!l.live || taken[i] || l.key != key) continue;
                if (u.lines.empty() && l.ref.seq != in.first) front = false;
                if (!front || l.ref.seq > in.last) break;
                taken[i] = true;
                u.lines.push_back(l.ref);
                u.intent.bytes += l.ref.line_bytes;
            }
            if (!u.lines.empty()) entry(key).undecided.push_back(std::move(u));
        }
        for (std::size_t i = 0; i < lines_.size(); ++i) {
            const LineInfo& l = lines_[i];
            if (!l.live) continue;
            ++r_.live_lines;
            r_.recovered_bytes += l.ref.line_bytes;
            if (!taken[i]) entry(l.key).lines.push_back(l.ref);
        }
        for (auto& [key, rec] : by_key) r_.recovered.push_back(std::move(rec));
        for (auto& [batch, c] : commits_) r_.commits.push_back(std::move(c));
    }

    ReplayResult& r_;
    std::vector<LineInfo> lines_;
    std::vector<Control> segment_controls_;
    std::vector<Control> controls_;
    std::map<std::uint64_t, IntentRecord> intents_;  // undecided, by batch
    std::map<std::uint64_t, ReplayResult::Commit> commits_;
    std::map<std::string, RangeRecord, std::less<>> range_intents_;
};

}  // namespace

ReplayResult replay_files(const std::vector<ReplayFile>& segments, const std::vector<ReplayFile>& controls) {
    ReplayResult r;
    Replayer(r).run(segments, controls);
    return r;
}

}  // namespace training_output::spool
