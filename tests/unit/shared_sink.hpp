// A sink that forwards to a sink it does not own, so that a test (or a
// benchmark) can give a writer the sink and still look inside it.
#pragma once

#include <atomic>
#include <optional>
#include <string>

#include "memory_sink.hpp"

namespace tdo_test {

using namespace training_output;

// Forwards every call to `s`, which the caller keeps; reports `reported`
// as its capabilities when given (a probe that has not been answered).
class SharedSink : public S3Sink {
public:
    explicit SharedSink(S3Sink& s, std::optional<SinkCapabilities> reported = std::nullopt)
        : s_(s), reported_(reported) {}
    SinkResponse head(const std::string& k) override { return s_.head(k); }
    SinkResponse get(const std::string& k, std::optional<ByteRange> r) override { return s_.get(k, r); }
    SinkResponse put(const std::string& k, std::string_view b, const ObjectAttributes& a,
                     const WriteConditions& c) override {
        return s_.put(k, b, a, c);
    }
    SinkResponse remove(const std::string& k) override { return s_.remove(k); }
    SinkResponse create_multipart(const std::string& k, const ObjectAttributes& a) override {
        return s_.create_multipart(k, a);
    }
    SinkResponse upload_part(const std::string& k, const std::string& u, int n, std::string_view b) override {
        return s_.upload_part(k, u, n, b);
    }
    SinkResponse upload_part_copy(const std::string& k, const std::string& u, int n, const std::string& sk,
                                  const std::string& m, std::optional<ByteRange> r) override {
        return s_.upload_part_copy(k, u, n, sk, m, r);
    }
    SinkResponse complete_multipart(const std::string& k, const std::string& u, const std::vector<CompletedPart>& p,
                                    const WriteConditions& c) override {
        return s_.complete_multipart(k, u, p, c);
    }
    SinkResponse abort_multipart(const std::string& k, const std::string& u) override {
        return s_.abort_multipart(k, u);
    }
    SinkResponse append_at(const std::string& k, std::string_view b, std::uint64_t p, const ObjectAttributes& a,
                           const WriteConditions& c) override {
        return s_.append_at(k, b, p, a, c);
    }
    SinkResponse list(const std::string& p, const std::string& c, ListPage& page) override {
        return s_.list(p, c, page);
    }
    SinkResponse remove_many(const std::vector<std::string>& k, std::vector<std::string>& failed) override {
        return s_.remove_many(k, failed);
    }
    SinkCapabilities capabilities() const override { return reported_ ? *reported_ : s_.capabilities(); }
    std::string describe() const override { return s_.describe(); }

private:
    S3Sink& s_;
    std::optional<SinkCapabilities> reported_;
};

// Every request to `memory` fails with `status` while `down` is true.
inline void fail_while(MemorySink& memory, const std::atomic<bool>& down, SinkStatus status, const std::string& detail,
                       int http_status = 0) {
    memory.set_fault_hook(
        [&down, status, detail, http_status](MemorySink::Op, const std::string&) -> std::optional<MemorySink::Fault> {
            if (!down) return std::nullopt;
            SinkResponse r;
            r.status = status;
            r.http_status = http_status;
            r.detail = detail;
            return MemorySink::Fault{r, false};
        });
}

}  // namespace tdo_test
