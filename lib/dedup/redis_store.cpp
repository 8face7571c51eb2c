// Redis dedup store over hiredis, for fleets of writers.
//
// claim    EVAL on the key: free -> SET key <owner> EX <claim_ttl>; answers
//          claimed (free or ours), committed ("1"), or the other owner's id
// then, only for keys another owner holds: EXISTS <prefix><that owner>
//          (its liveness), and for an owner that is gone, EXISTS on its
//          inflight batches (any: OwnersToSettle, the writer settles them
//          first), then EVAL on the key: take it over if it still holds that
//          owner's id
// inflight EVAL on <prefix><id>:batches: a line per batch object the owner
//          may be writing (its key, size and keys), with the claims' TTL;
//          removed once committed; GET by a taker
// commit   SET key 1 [EX <ttl>]                      (pipelined for a batch)
// owners   SET <prefix><id> <spool path> EX <owner_ttl>, refreshed while the
//          spool is held; DEL when it is gone
// Every command and script touches one key: keys may live on any node of a
// cluster, and the key names stay those of earlier versions.
//
// hiredis connects (TCP or unix socket, with a timeout), formats commands and
// parses replies; the socket I/O is ours, non-blocking with poll(), so that
// each call keeps to its deadline and a closed connection never raises
// SIGPIPE in the host (send with MSG_NOSIGNAL).
//
// rediss:// (TLS): after hiredis's TCP connect, OpenSSL runs over the same
// socket (redis_tls.hpp); the handshake and every read and write are
// non-blocking under the call's deadline, polled here like plain I/O.
//
// Connections live in a small pool. When one fails, the store is marked down:
// calls throw at once (the deduplicator fails open) until the next connection
// attempt, made by one caller after a jittered, doubling backoff. The outage
// and the recovery are logged once each.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/random.hpp"
#include "config/redis_url.hpp"
#include "dedup/redis_tls.hpp"
#include "log/logger.hpp"
#include "training_output/error.hpp"
#include "training_output/log.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The connection is unusable: drop it; the server may be down.
using ConnectionError = RedisConnectionError;
// The server refused the credentials, the database or a TLS certificate: a
// setup problem.
using RejectedError = RedisRejectedError;
// The server answered with an error; the connection is still in step.
class AnswerError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ReplyFree {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// KEYS[1] the key; ARGV[1] the owner, ARGV[2] the claim TTL in seconds.
// 1: claimed (it was free); 3: ours already; 0: committed; else the holder's id.
const char kClaimScript[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
    "if v == ARGV[1] then return 3 end "
    "if v == '1' then return 0 end "
    "return v";
// The same, taking the key over if it still holds ARGV[3] (an owner that is
// gone). 1: claimed; 3: ours; 0: committed; 2: held by another owner since.
const char kTakeOverScript[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if not v or v == ARGV[3] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end "
    "if v == ARGV[1] then return 3 end "
    "if v == '1' then return 0 end "
    "return 2";

// KEYS[1] an owner's inflight batches; ARGV[1] a line to add (unless its
// object's line is there: a retry); ARGV[2] its object key; ARGV[3] the TTL.
const char kInflightAddScript[] =
    "local v = redis.call('GET', KEYS[1]) or '' local head = ARGV[2] .. '\\t' "
    "if string.sub(v, 1, #head) == head or string.find(v, '\\n' .. head, 1, true) then return 0 end "
    "redis.call('SET', KEYS[1], v .. ARGV[1], 'EX', ARGV[3]) return 1";
// The same; ARGV[1] an object key whose lines go.
const char kInflightRemoveScript[] =
    "local v = redis.call('GET', KEYS[1]) if not v then return 0 end "
    "local keep = {} local head = ARGV[1] .. '\\t' "
    "for line in string.gmatch(v, '[^\\n]+') do "
    "if string.sub(line, 1, #head) ~= head then keep[#keep + 1] = line end end "
    "if #keep == 0 then redis.call('DEL', KEYS[1]) "
    "else redis.call('SET', KEYS[1], table.concat(keep, '\\n') .. '\\n', 'EX', ARGV[2]) end return 1";

ClaimState claim_state(long long answer) {
    switch (answer) {
        case 0: return ClaimState::Committed;
        case 1: return ClaimState::Claimed;
        case 3: return ClaimState::Own;
        default: return ClaimState::Held;
    }
}
const char kCommitted[] = "1";

// Appends one command in the Redis protocol to `out`.
void append_command(std::string& out, std::initializer_list<std::string_view> args) {
    const char* argv[8];
    std::size_t lens[8];
    int argc = 0;
    for (std::string_view a : args) {
        argv[argc] = a.data();
        lens[argc] = a.size();
        ++argc;
    }
    char* cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || !cmd) throw std::bad_alloc();
    out.append(cmd, static_cast<std::size_t>(len));
    redisFreeCommand(cmd);
}

std::string reply_text(const redisReply& r) { return std::string(r.str ? r.str : "", r.str ? r.len : 0); }

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

std::string system_error(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

class Connection {
public:
    Connection(redisContext* ctx, std::uint64_t opened_in, milliseconds timeout)
        : epoch(opened_in), ctx_(ctx), timeout_(timeout) {}
    ~Connection() {
        tls_.reset();  // before its socket closes
        redisFree(ctx_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Wraps the connected socket in TLS: the handshake, before `deadline`.
    // Throws RejectedError when the server's certificate is not accepted or
    // the server refuses ours, ConnectionError when it goes away or is silent.
    void start_tls(const RedisTls& tls, Clock::time_point deadline) {
        tls_ = tls.connect(ctx_->fd);
        while (const short want = tls_->handshake()) wait(want, deadline, "to the TLS handshake ");
    }

    // Sends `commands` and reads `count` replies, all before `deadline`.
    // Throws ConnectionError; error replies are returned like any other.
    std::vector<Reply> exchange(const std::string& commands, std::size_t count, Clock::time_point deadline) {
        send_all(commands, deadline);
        std::vector<Reply> replies;
        replies.reserve(count);
        while (replies.size() < count) {
            void* r = nullptr;
            if (redisReaderGetReply(ctx_->reader, &r) != REDIS_OK) {
                throw ConnectionError(std::string("protocol error: ") + ctx_->reader->errstr);
            }
            if (r) {
                replies.emplace_back(static_cast<redisReply*>(r));
                continue;
            }
            wait(POLLIN, deadline);
            receive(deadline);
        }
        return replies;
    }

    // An idle connection the server closed (restart, timeout) reads as EOF;
    // one with unexpected bytes is out of step. Either way: not reusable.
    bool reusable() const {
        if (tls_ && tls_->has_pending()) return false;
        pollfd p{ctx_->fd, POLLIN, 0};
        int n = ::poll(&p, 1, 0);
        return n == 0 || (n < 0 && errno == EINTR);
    }

    std::uint64_t epoch;  // the store's up/down period this connection was opened in

private:
    void send_all(const std::string& data, Clock::time_point deadline) {
        if (tls_) return send_all_tls(data, deadline);
        std::size_t off = 0;
        while (off < data.size()) {
            ssize_t n = ::send(ctx_->fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) throw ConnectionError(system_error("send", errno));
            // Read replies while the send buffer is full, so that a long
            // pipeline never stalls both sides.
            if (wait(POLLOUT | POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)) receive(deadline);
        }
    }

    // A retried send gets the same arguments (OpenSSL requires it).
    void send_all_tls(const std::string& data, Clock::time_point deadline) {
        std::size_t off = 0;
        while (off < data.size()) {
            const RedisTlsIo io = tls_->send(data.data() + off, data.size() - off);
            if (io.bytes > 0) {
                off += io.bytes;
            } else if (io.want == POLLOUT) {
                // As above: read replies while the send buffer is full.
                if (wait(POLLOUT | POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)) receive(deadline);
            } else {
                wait(POLLIN, deadline);
            }
        }
    }

    // Returns the events that are ready; throws when the deadline passes.
    short wait(short events, Clock::time_point deadline, const char* to = "") {
        for (;;) {
            pollfd p{ctx_->fd, events, 0};
            int n = ::poll(&p, 1, remaining_ms(deadline));
            if (n > 0) return p.revents;
            if (n == 0) {
                throw ConnectionError(std::string("no answer ") + to + "within " + std::to_string(timeout_.count()) +
                                      " ms");
            }
            if (errno != EINTR) throw ConnectionError(system_error("poll", errno));
        }
    }

    void receive(Clock::time_point deadline) {
        if (tls_) return receive_tls(deadline);
        char buf[16384];
        for (;;) {
            ssize_t n = ::recv(ctx_->fd, buf, sizeof buf, 0);
            if (n > 0) {
                if (redisReaderFeed(ctx_->reader, buf, static_cast<std::size_t>(n)) != REDIS_OK) {
                    throw ConnectionError(std::string("protocol error: ") + ctx_->reader->errstr);
                }
                return;
            }
            if (n == 0) throw ConnectionError("connection closed by the server");
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            throw ConnectionError(system_error("recv", errno));
        }
    }

    // Reads until OpenSSL would need more from the socket, so that nothing
    // waits inside the SSL while we poll the socket.
    void receive_tls(Clock::time_point deadline) {
        char buf[16384];
        for (;;) {
            const RedisTlsIo io = tls_->recv(buf, sizeof buf);
            if (io.bytes > 0) {
                if (redisReaderFeed(ctx_->reader, buf, io.bytes) != REDIS_OK) {
                    throw ConnectionError(std::string("protocol error: ") + ctx_->reader->errstr);
                }
                continue;
            }
            if (io.want == POLLIN) return;
            wait(POLLOUT, deadline);
        }
    }

    redisContext* ctx_;
    milliseconds timeout_;                     // for messages: the caller's deadline is what counts
    std::unique_ptr<RedisTlsConnection> tls_;  // rediss:// only
};

std::chrono::milliseconds since(Clock::time_point t) {
    return std::chrono::duration_cast<milliseconds>(Clock::now() - t);
}

class RedisDedupStore final : public DedupStore {
public:
    explicit RedisDedupStore(const RedisStoreOptions& options)
        : url_(parse_redis_url(options.url)), display_(url_.redacted()), options_(options) {
        if (options_.pool_size == 0) options_.pool_size = 1;
        if (options_.timeout.count() <= 0) options_.timeout = milliseconds(1);
        if (options_.reconnect_max < options_.reconnect_base) options_.reconnect_max = options_.reconnect_base;
        if (url_.tls) setup_tls();
        try {
            auto conn = connect(Clock::now() + options_.timeout, epoch_);
            open_ = 1;
            idle_.push_back(std::move(conn));
        } catch (const RejectedError& e) {
            throw Error(ErrorCode::DedupStore, prefix() + e.what());
        } catch (const ConnectionError& e) {
            // Never block processors: start down, connect on a later call.
            std::unique_lock<std::mutex> lock(mutex_);
            start_outage(e.what(), "open", lock);
        }
    }

    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds claim_ttl) override {
        return claim_batch({key}, owner, claim_ttl)[0];
    }

    // One pipelined round trip; one more only for keys another owner holds,
    // and two more before a take-over.
    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds claim_ttl) override {
        if (keys.empty()) return {};
        const std::string seconds = std::to_string(std::max<std::int64_t>(claim_ttl.count(), 1));
        std::vector<std::string> gone_owner(keys.size());  // of a key held by an owner that is gone
        std::vector<ClaimState> out = call("claim", [&](Connection& c, Clock::time_point deadline) {
            std::string cmds;
            cmds.reserve(keys.size() * (keys.front().size() + owner.size() + sizeof kClaimScript + 32));
            for (const auto& key : keys) append_command(cmds, {"EVAL", kClaimScript, "1", key, owner, seconds});
            auto replies = c.exchange(cmds, keys.size(), deadline);
            std::vector<ClaimState> states(keys.size(), ClaimState::Claimed);
            std::vector<std::size_t> held;  // by another owner: is it alive?
            for (std::size_t i = 0; i < keys.size(); ++i) {
                const redisReply& r = *replies[i];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type == REDIS_REPLY_INTEGER) {
                    states[i] = claim_state(r.integer);
                } else if (r.type == REDIS_REPLY_STRING) {
                    states[i] = ClaimState::Held;
                    held.push_back(i);
                } else {
                    throw AnswerError("unexpected reply to the claim script");
                }
            }
            if (held.empty()) return states;
            cmds.clear();
            for (std::size_t i : held)
                append_command(cmds, {"EXISTS", options_.owner_key_prefix + reply_text(*replies[i])});
            auto alive = c.exchange(cmds, held.size(), deadline);
            for (std::size_t j = 0; j < held.size(); ++j) {
                const redisReply& r = *alive[j];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type != REDIS_REPLY_INTEGER) throw AnswerError("unexpected reply to EXISTS");
                if (r.integer == 0) gone_owner[held[j]] = reply_text(*replies[held[j]]);
            }
            return states;
        });
        std::vector<std::size_t> gone;
        std::vector<std::string> owners;  // gone, once each
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (gone_owner[i].empty()) continue;
            gone.push_back(i);
            if (std::find(owners.begin(), owners.end(), gone_owner[i]) == owners.end()) owners.push_back(gone_owner[i]);
        }
        if (gone.empty()) return out;
        // A gone owner's batches in flight are settled by the writer first
        // (OwnersToSettle): until then nothing of it is taken over. (Not Held:
        // that would void the caller's line, which nobody may deliver if that
        // owner never comes back.)
        std::vector<std::string> unsettled = call("read inflight", [&](Connection& c, Clock::time_point deadline) {
            std::string cmds;
            for (const auto& o : owners) append_command(cmds, {"EXISTS", inflight_key(o)});
            auto replies = c.exchange(cmds, owners.size(), deadline);
            std::vector<std::string> found;
            for (std::size_t j = 0; j < owners.size(); ++j) {
                const redisReply& r = *replies[j];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type != REDIS_REPLY_INTEGER) throw AnswerError("unexpected reply to EXISTS");
                if (r.integer != 0) found.push_back(owners[j]);
            }
            return found;
        });
        if (!unsettled.empty()) throw OwnersToSettle(std::move(unsettled));
        call("take over", [&](Connection& c, Clock::time_point deadline) {
            std::string takeovers;
            for (std::size_t i : gone)
                append_command(takeovers, {"EVAL", kTakeOverScript, "1", keys[i], owner, seconds, gone_owner[i]});
            auto taken = c.exchange(takeovers, gone.size(), deadline);
            for (std::size_t j = 0; j < gone.size(); ++j) {
                const redisReply& r = *taken[j];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type != REDIS_REPLY_INTEGER) throw AnswerError("unexpected reply to the take-over script");
                out[gone[j]] = claim_state(r.integer);
            }
            return true;
        });
        return out;
    }

    // An owner's inflight batches: one string, `<owner key>:batches`, a line
    // "<object key>\t<bytes>[\t<key>]...\n" per batch, changed by scripts
    // (GET, SET, DEL: what an ACL user is allowed), with the claims' TTL.
    void record_inflight(const std::string& owner, const InflightBatch& batch, std::chrono::seconds ttl) override {
        std::string line = batch.object_key + '\t' + std::to_string(batch.bytes);
        for (const auto& k : batch.keys) {
            line += '\t';
            line += k;
        }
        line += '\n';
        const std::int64_t seconds = std::max<std::int64_t>(ttl.count(), 1);
        call("record inflight", [&](Connection& c, Clock::time_point deadline) {
            std::string cmd;
            append_command(cmd, {"EVAL", kInflightAddScript, "1", inflight_key(owner), line, batch.object_key,
                                 std::to_string(seconds)});
            auto replies = c.exchange(cmd, 1, deadline);
            if (replies[0]->type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(*replies[0]));
            return true;
        });
    }

    std::vector<InflightBatch> inflight(const std::string& owner) override {
        const std::string text = call("read inflight", [&](Connection& c, Clock::time_point deadline) {
            std::string cmd;
            append_command(cmd, {"GET", inflight_key(owner)});
            auto replies = c.exchange(cmd, 1, deadline);
            const redisReply& r = *replies[0];
            if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
            return r.type == REDIS_REPLY_STRING ? reply_text(r) : std::string();
        });
        std::vector<InflightBatch> out;
        std::size_t at = 0;
        while (at < text.size()) {
            std::size_t end = text.find('\n', at);
            if (end == std::string::npos) end = text.size();
            std::vector<std::string> fields;
            for (std::size_t f = at; f <= end;) {
                std::size_t tab = text.find('\t', f);
                if (tab == std::string::npos || tab > end) tab = end;
                fields.push_back(text.substr(f, tab - f));
                f = tab + 1;
            }
            at = end + 1;
            if (fields.size() < 2 || fields[0].empty()) continue;
            InflightBatch b;
            b.object_key = fields[0];
            b.bytes = std::strtoull(fields[1].c_str(), nullptr, 10);
            b.keys.assign(fields.begin() + 2, fields.end());
            out.push_back(std::move(b));
        }
        return out;
    }

    void clear_inflight(const std::string& owner, const std::vector<std::string>& object_keys,
                        std::chrono::seconds ttl) override {
        if (object_keys.empty()) return;
        call("clear inflight", [&](Connection& c, Clock::time_point deadline) {
            const std::string key = inflight_key(owner);
            const std::string seconds = std::to_string(std::max<std::int64_t>(ttl.count(), 1));
            std::string cmds;
            for (const auto& k : object_keys)
                append_command(cmds, {"EVAL", kInflightRemoveScript, "1", key, k, seconds});
            for (const auto& r : c.exchange(cmds, object_keys.size(), deadline)) {
                if (r->type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(*r));
            }
            return true;
        });
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        std::vector<const std::string*> present;
        for (const auto& key : keys) {
            if (!key.empty()) present.push_back(&key);
        }
        if (present.empty()) return;
        call("commit", [&](Connection& c, Clock::time_point deadline) {
            std::string cmds;
            const std::string seconds = std::to_string(ttl.count());
            for (const std::string* key : present) {
                if (ttl.count() > 0)
                    append_command(cmds, {"SET", *key, kCommitted, "EX", seconds});
                else
                    append_command(cmds, {"SET", *key, kCommitted});  // no TTL: permanent
            }
            for (const auto& r : c.exchange(cmds, present.size(), deadline)) expect_ok(*r);
            return true;
        });
    }

    void register_owner(const OwnerRecord& owner) override { refresh_owners({owner}); }

    void refresh_owners(const std::vector<OwnerRecord>& owners) override {
        if (owners.empty()) return;
        call("refresh owners", [&](Connection& c, Clock::time_point deadline) {
            std::string cmds;
            const std::string seconds = std::to_string(options_.owner_ttl.count());
            for (const auto& o : owners) {
                append_command(cmds, {"SET", options_.owner_key_prefix + o.id, o.spool_path, "EX", seconds});
            }
            for (const auto& r : c.exchange(cmds, owners.size(), deadline)) expect_ok(*r);
            return true;
        });
    }

    void retire_owner(const std::string& owner) override {
        call("retire owner", [&](Connection& c, Clock::time_point deadline) {
            std::string cmd;
            append_command(cmd, {"DEL", options_.owner_key_prefix + owner});
            auto replies = c.exchange(cmd, 1, deadline);
            if (replies[0]->type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(*replies[0]));
            return true;
        });
    }

    std::chrono::seconds owner_ttl() const override { return options_.owner_ttl; }

    const char* kind() const noexcept override { return "redis"; }
    std::string identity() const override { return display_; }

private:
    std::string prefix() const { return "redis dedup store " + display_ + ": "; }
    std::string inflight_key(const std::string& owner) const { return options_.owner_key_prefix + owner + ":batches"; }

    // The TLS context every connection of the store shares. Throws
    // Error(Config) naming the configuration key of a file that cannot be used.
    void setup_tls() {
        tls_ = std::make_unique<RedisTls>(options_.tls, url_.host, prefix());
        if (!options_.tls.verify && options_.logger) {
            options_.logger->log(
                LogLevel::Warning, "training_output_redis_tls_unverified",
                {{"url", display_}, {"detail", "redis_tls_verify is false: any server certificate is accepted"}});
        }
    }

    static void expect_ok(const redisReply& r) {
        if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
        if (r.type != REDIS_REPLY_STATUS) throw AnswerError("unexpected reply to SET");
    }

    // Runs `fn` on a pooled connection within the timeout; maps failures to
    // Error(DedupStore) and keeps the pool and the outage state.
    template <class Fn>
    auto call(const char* what, Fn&& fn) -> decltype(fn(std::declval<Connection&>(), Clock::time_point())) {
        const auto deadline = Clock::now() + options_.timeout;
        std::unique_ptr<Connection> conn = acquire(what, deadline);
        try {
            auto result = fn(*conn, deadline);
            give_back(std::move(conn));
            return result;
        } catch (const AnswerError& e) {
            give_back(std::move(conn));  // every reply was read: still in step
            throw Error(ErrorCode::DedupStore, prefix() + what + ": " + scrub(e.what()));
        } catch (const ConnectionError& e) {
            const std::string why = e.what();
            drop(std::move(conn), &why, what);
            throw Error(ErrorCode::DedupStore, prefix() + what + " failed: " + why);
        } catch (...) {
            drop(std::move(conn), nullptr, what);  // out of memory: its state is unknown
            throw;
        }
    }

    std::unique_ptr<Connection> acquire(const char* what, Clock::time_point deadline) {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            if (down_) return reconnect(what, deadline, lock);
            while (!idle_.empty()) {
                auto conn = std::move(idle_.back());
                idle_.pop_back();
                if (conn->reusable()) return conn;
                --open_;  // closed by the server: open another below
            }
            if (open_ < options_.pool_size) {
                ++open_;
                const std::uint64_t epoch = epoch_;
                lock.unlock();
                try {
                    return connect(deadline, epoch);
                } catch (const ConnectionError& e) {
                    lock.lock();
                    --open_;
                    available_.notify_one();
                    if (epoch == epoch_) start_outage(e.what(), what, lock);
                    throw Error(ErrorCode::DedupStore, prefix() + what + " failed: " + e.what());
                } catch (...) {
                    lock.lock();
                    --open_;
                    available_.notify_one();
                    throw;
                }
            }
            if (available_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && !down_ &&
                open_ >= options_.pool_size) {
                throw Error(ErrorCode::DedupStore, prefix() + what + ": no connection free within " +
                                                       std::to_string(options_.timeout.count()) + " ms (" +
                                                       std::to_string(options_.pool_size) + " in use)");
            }
        }
    }

    // While down: fail at once, except for one caller per backoff period,
    // who tries to connect.
    std::unique_ptr<Connection> reconnect(const char* what, Clock::time_point deadline,
                                          std::unique_lock<std::mutex>& lock) {
        const auto now = Clock::now();
        if (probing_ || now < retry_at_) {
            ++failed_calls_;
            auto wait = std::chrono::duration_cast<milliseconds>(retry_at_ - now).count();
            throw Error(ErrorCode::DedupStore, prefix() + what + ": unavailable for " +
                                                   std::to_string(since(down_since_).count()) + " ms (" + last_error_ +
                                                   "); next connection attempt in " +
                                                   std::to_string(std::max<long long>(wait, 0)) + " ms");
        }
        probing_ = true;
        const std::uint64_t epoch = epoch_;
        lock.unlock();
        std::unique_ptr<Connection> conn;
        std::string why;
        try {
            conn = connect(deadline, epoch);
        } catch (const ConnectionError& e) {
            why = e.what();
        } catch (...) {
            lock.lock();
            probing_ = false;
            throw;
        }
        lock.lock();
        probing_ = false;
        if (!conn) {
            ++failed_calls_;
            ++attempts_;
            last_error_ = why;
            retry_at_ = Clock::now() + backoff(attempts_);
            throw Error(ErrorCode::DedupStore, prefix() + what + ": unavailable: " + why);
        }
        down_ = false;
        conn->epoch = ++epoch_;
        ++open_;
        const auto down_ms = static_cast<std::int64_t>(since(down_since_).count());
        const std::uint64_t failed_calls = failed_calls_;
        lock.unlock();  // the log callback is the host's code
        if (options_.logger) {
            options_.logger->log(
                LogLevel::Warning, "training_output_dedup_store_reconnected",
                {{"store", "redis"}, {"url", display_}, {"down_ms", down_ms}, {"failed_calls", failed_calls}});
        }
        return conn;
    }

    void give_back(std::unique_ptr<Connection> conn) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (conn->epoch == epoch_ && !down_) {
            idle_.push_back(std::move(conn));
        } else {
            --open_;  // from before an outage: not trusted
        }
        available_.notify_one();
    }

    // Closes a connection that failed (`why`: a connection failure, which
    // may start an outage) or whose state is unknown (`why` null).
    void drop(std::unique_ptr<Connection> conn, const std::string* why, const char* what) {
        std::unique_lock<std::mutex> lock(mutex_);
        --open_;
        const bool current = conn->epoch == epoch_ && !down_;
        conn.reset();
        available_.notify_one();
        if (why && current) start_outage(*why, what, lock);
    }

    // The first failure of an up period: drop idle connections (they lead to
    // the same server), fail fast until the first reconnection attempt, log
    // once. Unlocks `lock`.
    void start_outage(const std::string& why, const char* when, std::unique_lock<std::mutex>& lock) {
        down_ = true;
        ++epoch_;
        down_since_ = Clock::now();
        attempts_ = 0;
        failed_calls_ = 0;
        last_error_ = why;
        open_ -= idle_.size();
        idle_.clear();
        retry_at_ = down_since_ + backoff(0);
        available_.notify_all();  // waiters for a connection: fail fast now
        lock.unlock();            // the log callback is the host's code
        if (options_.logger) {
            options_.logger->log(LogLevel::Warning, "training_output_dedup_store_unavailable",
                                 {{"store", "redis"},
                                  {"url", display_},
                                  {"error", why},
                                  {"when", when},
                                  {"detail",
                                   "examples are written without dedup until the store is reachable again; "
                                   "reconnecting with backoff"}});
        }
    }

    // Half the doubled delay, plus up to the other half at random.
    milliseconds backoff(int attempt) const {
        std::int64_t delay = options_.reconnect_base.count();
        for (int i = 0; i < attempt && delay < options_.reconnect_max.count(); ++i) delay *= 2;
        delay = std::min<std::int64_t>(delay, options_.reconnect_max.count());
        return milliseconds(delay / 2 +
                            static_cast<std::int64_t>(random::uniform(static_cast<std::uint64_t>(delay / 2 + 1))));
    }

    // A new connection: AUTH, SELECT and PING in one round trip.
    std::unique_ptr<Connection> connect(Clock::time_point deadline, std::uint64_t epoch) const {
        int ms = std::max(remaining_ms(deadline), 1);
        timeval tv{ms / 1000, (ms % 1000) * 1000};
        redisContext* ctx = url_.unix_socket ? redisConnectUnixWithTimeout(url_.path.c_str(), tv)
                                             : redisConnectWithTimeout(url_.host.c_str(), url_.port, tv);
        if (!ctx) throw std::bad_alloc();
        if (ctx->err) {
            std::string why = ctx->errstr;
            redisFree(ctx);
            throw ConnectionError("cannot connect: " + why);
        }
        auto conn = std::make_unique<Connection>(ctx, epoch, options_.timeout);
        int flags = ::fcntl(ctx->fd, F_GETFL);
        if (flags < 0 || ::fcntl(ctx->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
            throw ConnectionError(system_error("fcntl", errno));
        }
        if (!url_.unix_socket) redisEnableKeepAlive(ctx);  // notice dead peers of idle connections
        if (tls_) conn->start_tls(*tls_, deadline);

        std::string cmds;
        std::size_t count = 0;
        if (!url_.password.empty()) {
            if (url_.user.empty())
                append_command(cmds, {"AUTH", url_.password});
            else
                append_command(cmds, {"AUTH", url_.user, url_.password});
            ++count;
        }
        if (url_.db != 0) {
            append_command(cmds, {"SELECT", std::to_string(url_.db)});
            ++count;
        }
        append_command(cmds, {"PING"});
        ++count;
        const bool check_policy = !policy_checked_.load();
        if (check_policy) {
            append_command(cmds, {"CONFIG", "GET", "maxmemory-policy"});
            append_command(cmds, {"CONFIG", "GET", "maxmemory"});
            count += 2;
        }
        auto replies = conn->exchange(cmds, count, deadline);
        std::size_t i = 0;
        if (!url_.password.empty()) {
            const redisReply& r = *replies[i++];
            if (r.type == REDIS_REPLY_ERROR) {
                throw RejectedError("authentication failed" +
                                    std::string(url_.user.empty() ? "" : " for user " + url_.user) + ": " +
                                    scrub(reply_text(r)));
            }
        }
        if (url_.db != 0) {
            const redisReply& r = *replies[i++];
            if (r.type == REDIS_REPLY_ERROR && reply_text(r).rfind("NOAUTH", 0) != 0) {
                throw RejectedError("database " + std::to_string(url_.db) + " refused: " + scrub(reply_text(r)));
            }
        }
        const redisReply& ping = *replies[i];
        if (ping.type == REDIS_REPLY_ERROR) {
            std::string text = scrub(reply_text(ping));
            if (text.rfind("NOAUTH", 0) == 0) {
                throw RejectedError("authentication failed: the server requires a password and redis_url has none (" +
                                    text + ")");
            }
            if (text.rfind("LOADING", 0) == 0) throw ConnectionError(text);  // restarting: try again later
            throw RejectedError("PING refused: " + text);
        }
        if (check_policy && !policy_checked_.exchange(true)) warn_of_eviction(*replies[i + 1], *replies[i + 2]);
        return conn;
    }

    // Claims, commits and the owners' liveness keys must stay until they are
    // deleted or expire: a policy that evicts keys when memory is full (the
    // volatile-* ones, the default of several managed services, evict exactly
    // the liveness keys and the commits with a TTL; allkeys-* any key) lets
    // another writer take live claims over, or write content again. Read
    // once, at the first connection (at open); CONFIG may be refused (an ACL
    // user, a managed service that renames it): then said at info level.
    void warn_of_eviction(const redisReply& policy_reply, const redisReply& maxmemory_reply) const {
        if (!options_.logger) return;
        auto value = [](const redisReply& r) {
            if (r.type == REDIS_REPLY_ARRAY && r.elements == 2 && r.element[1]->type == REDIS_REPLY_STRING)
                return std::optional<std::string>(reply_text(*r.element[1]));
            return std::optional<std::string>();
        };
        const auto policy = value(policy_reply);
        const auto maxmemory = value(maxmemory_reply);
        if (policy && *policy == "noeviction") return;
        const std::string need =
            "the store needs maxmemory-policy noeviction: an evicted claim, commit or liveness key lets another "
            "writer write the same content again";
        if (!policy) {
            options_.logger->log(
                LogLevel::Info, "training_output_redis_eviction_policy",
                {{"url", display_},
                 {"maxmemory_policy", "unknown"},
                 {"detail", "cannot read maxmemory-policy (" + scrub(reply_text(policy_reply)) + "); " + need}});
            return;
        }
        const bool unlimited = maxmemory && *maxmemory == "0";  // Redis never evicts then
        options_.logger->log(unlimited ? LogLevel::Info : LogLevel::Warning, "training_output_redis_eviction_policy",
                             {{"url", display_},
                              {"maxmemory_policy", *policy},
                              {"maxmemory", maxmemory ? *maxmemory : "unknown"},
                              {"detail", (unlimited ? "maxmemory is 0 (no limit), so nothing is evicted now; if a "
                                                      "limit is set, "
                                                    : "when memory fills, Redis evicts keys: ") +
                                             need}});
    }

    // Server messages do not echo passwords; make sure of it anyway.
    std::string scrub(std::string text) const {
        if (url_.password.empty()) return text;
        for (std::size_t at = text.find(url_.password); at != std::string::npos; at = text.find(url_.password, at)) {
            text.replace(at, url_.password.size(), "***");
        }
        return text;
    }

    const RedisUrl url_;
    const std::string display_;
    RedisStoreOptions options_;
    std::unique_ptr<RedisTls> tls_;                    // rediss:// only, set up once
    mutable std::atomic<bool> policy_checked_{false};  // maxmemory-policy read (at the first connection)

    std::mutex mutex_;
    std::condition_variable available_;
    std::vector<std::unique_ptr<Connection>> idle_;
    std::size_t open_ = 0;     // idle + in use
    std::uint64_t epoch_ = 0;  // changes at each outage and each recovery
    bool down_ = false;
    bool probing_ = false;  // a caller is trying to reconnect
    int attempts_ = 0;      // failed reconnections in this outage
    std::uint64_t failed_calls_ = 0;
    Clock::time_point down_since_{};
    Clock::time_point retry_at_{};
    std::string last_error_;
};

}  // namespace

std::unique_ptr<DedupStore> make_redis_dedup_store(const RedisStoreOptions& options) {
    return std::make_unique<RedisDedupStore>(options);
}

}  // namespace training_output
