// LandedEvents: what follows a batch that landed (the writer's manifest,
// metrics, span, log and the host's delivery callback), served in landing
// order on a thread of its own, off the delivery thread: a manifest's
// request or a slow callback never holds the next batch back. The thread
// starts with an event and ends after 2 s without one. At most `max_events` events (and
// `max_bytes` of their batches' bytes) wait; past that, the delivery thread
// waits for room, as it did when it served them itself.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace training_output {

// A batch that landed (and whose DONE is recorded), for the writer's
// manifests and delivery notifications.
struct LandedBatch {
    std::string key;           // where it landed: the monthly file, or its batch object
    std::uint64_t offset = 0;  // where it starts there
    std::uint64_t size = 0;    // its bytes
    std::string_view bytes;    // exactly them, or empty when not at hand
    std::size_t lines = 0;
    bool batch_object = false;                      // s3_append_mode=batches: its own object, folded later
    double seconds = 0;                             // from the start of its delivery to its DONE
    std::chrono::system_clock::time_point done_at;  // when its DONE was recorded
};

class LandedEvents {
public:
    using Handler = std::function<void(const LandedBatch&)>;  // must not throw

    explicit LandedEvents(Handler handler, std::size_t max_events = 64, std::uint64_t max_bytes = 64u << 20);
    ~LandedEvents();  // serves what waits, then ends the thread
    LandedEvents(const LandedEvents&) = delete;
    LandedEvents& operator=(const LandedEvents&) = delete;

    // Queues `batch` for the handler, with `bytes`: the batch's bytes when
    // batch.bytes is not empty (the event's view of them is set to these).
    void post(const LandedBatch& batch, std::string bytes);
    // Returns once every event posted before the call was served.
    void drain();

private:
    struct Event {
        LandedBatch batch;  // its bytes point into `bytes`
        std::string bytes;
    };
    void run();

    Handler handler_;
    const std::size_t max_events_;
    const std::uint64_t max_bytes_;
    std::mutex mutex_;
    std::condition_variable wake_;    // the thread: an event, or stopping
    std::condition_variable served_;  // drain() and post() waiting for room
    std::deque<Event> queue_;
    std::uint64_t queued_bytes_ = 0;
    std::uint64_t posted_ = 0, done_ = 0;
    bool stopping_ = false;
    bool running_ = false;  // thread_ serves; it ends after 2 s with nothing to serve
    std::thread thread_;
};

}  // namespace training_output
