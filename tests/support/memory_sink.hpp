// MemorySink: objects in memory, with S3 semantics and fault injection, for
// tests of everything that sits on an S3Sink. Its capabilities are also its
// behaviour: without conditional_complete it ignores If-Match on
// CompleteMultipartUpload and x-amz-copy-source-if-match (as Ceph RGW 16
// does); without conditional_writes it ignores every condition (as s3rver);
// with native_append it takes RGW's appends (append_at), and a PUT or a
// Complete makes an object plain again, as there.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "training_output/sys/s3_sink.hpp"

namespace training_output {

class MemorySink : public S3Sink {
public:
    enum class Op {
        Head,
        Get,
        Put,
        Remove,
        CreateMultipart,
        UploadPart,
        UploadPartCopy,
        Complete,
        Abort,
        Append,
        List
    };

    // A fault hook sees each request before it runs and may answer instead.
    // `applied` = true makes the operation happen first and then replaces its
    // answer (a response lost after the server acted).
    struct Fault {
        SinkResponse response;
        bool applied = false;
    };
    using FaultHook = std::function<std::optional<Fault>(Op op, const std::string& key)>;

    explicit MemorySink(SinkCapabilities capabilities = {});

    SinkResponse head(const std::string& key) override;
    SinkResponse get(const std::string& key, std::optional<ByteRange> range) override;
    SinkResponse put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                     const WriteConditions& conditions) override;
    SinkResponse remove(const std::string& key) override;
    SinkResponse remove_if_unmodified_since(const std::string& key, std::int64_t unix_seconds) override;
    SinkResponse create_multipart(const std::string& key, const ObjectAttributes& attributes) override;
    SinkResponse upload_part(const std::string& key, const std::string& upload_id, int part_number,
                             std::string_view body) override;
    SinkResponse upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                  const std::string& source_key, const std::string& source_if_match,
                                  std::optional<ByteRange> range) override;
    SinkResponse complete_multipart(const std::string& key, const std::string& upload_id,
                                    const std::vector<CompletedPart>& parts,
                                    const WriteConditions& conditions) override;
    SinkResponse abort_multipart(const std::string& key, const std::string& upload_id) override;
    SinkResponse append_at(const std::string& key, std::string_view body, std::uint64_t position,
                           const ObjectAttributes& attributes, const WriteConditions& conditions = {}) override;
    // Pages of list_page_size keys (continuation: the last key of the page).
    SinkResponse list(const std::string& prefix, const std::string& continuation, ListPage& page) override;
    std::size_t list_page_size = 1000;
    SinkCapabilities capabilities() const override { return capabilities_; }
    std::string describe() const override { return "memory"; }

    void set_fault_hook(FaultHook hook);
    // Test access.
    std::optional<std::string> object(const std::string& key) const;
    // Pretends the object was last written at `unix_seconds` (lease expiry tests).
    void set_last_modified(const std::string& key, std::int64_t unix_seconds);
    std::map<std::string, std::string> objects() const;
    std::uint64_t request_count(Op op) const;
    std::uint64_t bytes_received() const;  // request bodies (put + upload_part)
    std::size_t open_uploads() const;

private:
    struct Object {
        std::string data;
        std::string etag;
        ObjectAttributes attributes;
        std::int64_t last_modified = 0;
        bool appendable = false;
    };
    struct Upload {
        std::string key;
        ObjectAttributes attributes;
        std::map<int, std::pair<std::string, std::string>> parts;  // number -> (etag, data)
    };
    std::optional<Fault> fault(Op op, const std::string& key);
    template <class F>
    SinkResponse run(Op op, const std::string& key, F&& body);
    static SinkResponse answer(SinkStatus status, int http, const char* code);
    std::string next_etag();

    SinkCapabilities capabilities_;
    mutable std::mutex mutex_;
    FaultHook hook_;
    std::map<std::string, Object> objects_;
    std::map<std::string, Upload> uploads_;
    std::map<Op, std::uint64_t> requests_;
    std::uint64_t bytes_received_ = 0;
    std::uint64_t etag_counter_ = 0;
};

}  // namespace training_output
