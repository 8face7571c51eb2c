// Redis dedup store over hiredis, for fleets of writers.
//
// claim    EVAL on the key: free -> SET key <owner> EX <claim_ttl>; answers
//          claimed (free or ours), committed ("1"), or the other owner's id
// then, only for keys another owner holds: EXISTS <prefix><that owner>
//          (its liveness), and for an owner that is gone, EVAL on the key:
//          take it over if it still holds that owner's id
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
// socket, through a BIO of ours that sends with MSG_NOSIGNAL (OpenSSL's
// socket BIO writes with write(), which raises SIGPIPE). The handshake and
// every read and write are non-blocking under the call's deadline. One
// SSL_CTX per store: TLS 1.2 or later, the server's certificate checked
// against the CA file (or the system's CAs) and the host name (or IP
// address) of the URL or redis_tls_server_name, sent as SNI; an optional
// client certificate. The key file's path never appears in a message.
//
// Connections live in a small pool. When one fails, the store is marked down:
// calls throw at once (the deduplicator fails open) until the next connection
// attempt, made by one caller after a jittered, doubling backoff. The outage
// and the recovery are logged once each.
#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "common/json.hpp"
#include "common/random.hpp"
#include "dedup/redis_url.hpp"
#include "training_output/dedup_store.hpp"
#include "training_output/error.hpp"
#include "training_output/log.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The connection is unusable: drop it; the server may be down.
class ConnectionError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The server refused the credentials or the database: a setup problem.
class RejectedError : public ConnectionError {
    using ConnectionError::ConnectionError;
};
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

// TLS -----------------------------------------------------------------------

struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};
struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

// OpenSSL's reasons for its queued errors (never their data, which may hold
// file names), and clears the queue.
std::string openssl_errors() {
    std::string out;
    for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
        const char* reason = ERR_reason_error_string(e);
        std::string text = reason ? reason : "error " + std::to_string(ERR_GET_REASON(e));
        if (out.find(text) != std::string::npos) continue;
        out += (out.empty() ? "" : "; ") + text;
    }
    return out.empty() ? "unknown TLS error" : out;
}

// The socket under an SSL: the BIO's data.
struct TlsSocket {
    int fd = -1;
    int err = 0;  // errno of the last failed send/recv other than EAGAIN
};

int tls_bio_write(BIO* bio, const char* data, int len) {
    auto* sock = static_cast<TlsSocket*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t n = ::send(sock->fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
        if (n >= 0) return static_cast<int>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
        else sock->err = errno;
        return -1;
    }
}

int tls_bio_read(BIO* bio, char* data, int len) {
    auto* sock = static_cast<TlsSocket*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (len <= 0) return 0;
    for (;;) {
        ssize_t n = ::recv(sock->fd, data, static_cast<std::size_t>(len), 0);
        if (n >= 0) return static_cast<int>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
        else sock->err = errno;
        return -1;
    }
}

int tls_bio_puts(BIO* bio, const char* text) { return tls_bio_write(bio, text, static_cast<int>(std::strlen(text))); }

long tls_bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int tls_bio_create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}

int tls_bio_destroy(BIO*) { return 1; }  // the socket is hiredis's to close

BIO_METHOD* make_tls_bio_method() {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "training_output redis socket");
    if (!m || BIO_meth_set_write(m, tls_bio_write) != 1 || BIO_meth_set_read(m, tls_bio_read) != 1 ||
        BIO_meth_set_puts(m, tls_bio_puts) != 1 || BIO_meth_set_ctrl(m, tls_bio_ctrl) != 1 ||
        BIO_meth_set_create(m, tls_bio_create) != 1 || BIO_meth_set_destroy(m, tls_bio_destroy) != 1) {
        BIO_meth_free(m);
        ERR_clear_error();
        throw std::bad_alloc();
    }
    return m;
}

// The BIO method for TLS over a socket without SIGPIPE: one for the
// process (BIO type indices are few), kept for its life.
const BIO_METHOD* tls_bio_method() {
    static const BIO_METHOD* const method = make_tls_bio_method();
    return method;
}

// What a new TLS connection needs: the store's context and BIO method, the
// name to check in the server's certificate.
struct TlsSetup {
    SSL_CTX* ctx;
    const BIO_METHOD* bio_method;
    const std::string& name;
    bool name_is_ip;
    bool verify;
};

bool is_ip_address(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

class Connection {
public:
    Connection(redisContext* ctx, std::uint64_t opened_in, milliseconds timeout)
        : epoch(opened_in), ctx_(ctx), timeout_(timeout) {
        sock_.fd = ctx->fd;
    }
    ~Connection() {
        ssl_.reset();  // before its socket closes
        redisFree(ctx_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Wraps the connected socket in TLS: the handshake, before `deadline`.
    // Throws RejectedError when the server's certificate is not accepted or
    // the server refuses ours, ConnectionError when it goes away or is silent.
    void start_tls(const TlsSetup& tls, Clock::time_point deadline) {
        ERR_clear_error();
        ssl_.reset(SSL_new(tls.ctx));
        if (!ssl_) {
            ERR_clear_error();
            throw std::bad_alloc();
        }
        BIO* bio = BIO_new(tls.bio_method);
        if (!bio) {
            ERR_clear_error();
            throw std::bad_alloc();
        }
        BIO_set_data(bio, &sock_);
        SSL_set_bio(ssl_.get(), bio, bio);  // the SSL owns it now
        SSL* ssl = ssl_.get();
        // SNI is for names only (RFC 6066); an address is checked as an address.
        // SSL_set_tlsext_host_name, without the macro's C cast.
        if (!tls.name_is_ip && SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                                        const_cast<char*>(tls.name.c_str())) != 1) {
            throw RejectedError("TLS: cannot use the server name: " + openssl_errors());
        }
        if (tls.verify) {
            X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
            int ok = 0;
            if (tls.name_is_ip) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(param, tls.name.c_str());
            } else {
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = X509_VERIFY_PARAM_set1_host(param, tls.name.c_str(), tls.name.size());
            }
            if (ok != 1) throw RejectedError("TLS: cannot check the server name: " + openssl_errors());
        }
        for (;;) {
            sock_.err = 0;
            ERR_clear_error();
            const int r = SSL_connect(ssl);
            if (r == 1) return;
            const int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                wait(POLLIN, deadline, "to the TLS handshake ");
            } else if (e == SSL_ERROR_WANT_WRITE) {
                wait(POLLOUT, deadline, "to the TLS handshake ");
            } else {
                tls_failure("handshake", e);
            }
        }
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
        if (ssl_ && SSL_has_pending(ssl_.get())) return false;
        pollfd p{ctx_->fd, POLLIN, 0};
        int n = ::poll(&p, 1, 0);
        return n == 0 || (n < 0 && errno == EINTR);
    }

    std::uint64_t epoch;  // the store's up/down period this connection was opened in

private:
    void send_all(const std::string& data, Clock::time_point deadline) {
        if (ssl_) return send_all_tls(data, deadline);
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

    // A retried SSL_write gets the same arguments (OpenSSL requires it);
    // partial writes are on, so each returns once a record is out.
    void send_all_tls(const std::string& data, Clock::time_point deadline) {
        SSL* ssl = ssl_.get();
        std::size_t off = 0;
        while (off < data.size()) {
            const int len = static_cast<int>(std::min<std::size_t>(data.size() - off, INT_MAX));
            sock_.err = 0;
            ERR_clear_error();
            const int n = SSL_write(ssl, data.data() + off, len);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
                continue;
            }
            const int e = SSL_get_error(ssl, n);
            if (e == SSL_ERROR_WANT_WRITE) {
                // As above: read replies while the send buffer is full.
                if (wait(POLLOUT | POLLIN, deadline) & (POLLIN | POLLHUP | POLLERR)) receive(deadline);
            } else if (e == SSL_ERROR_WANT_READ) {
                wait(POLLIN, deadline);
            } else {
                if (e == SSL_ERROR_SYSCALL) {
                    // A server that refuses our certificate (TLS 1.3: after
                    // the handshake) says why and hangs up; the reset may
                    // reach our send first. Its alert is still to be read.
                    const int err = sock_.err;
                    throw_received_alert();
                    sock_.err = err;
                }
                tls_failure("send", e);
            }
        }
    }

    // Throws what a fatal alert the server sent says, if there is one.
    void throw_received_alert() {
        char buf[1024];
        sock_.err = 0;
        ERR_clear_error();
        const int n = SSL_read(ssl_.get(), buf, sizeof buf);
        if (n <= 0 && SSL_get_error(ssl_.get(), n) == SSL_ERROR_SSL) tls_failure("receive", SSL_ERROR_SSL);
        ERR_clear_error();
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
        if (ssl_) return receive_tls(deadline);
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
        SSL* ssl = ssl_.get();
        char buf[16384];
        for (;;) {
            sock_.err = 0;
            ERR_clear_error();
            const int n = SSL_read(ssl, buf, sizeof buf);
            if (n > 0) {
                if (redisReaderFeed(ctx_->reader, buf, static_cast<std::size_t>(n)) != REDIS_OK) {
                    throw ConnectionError(std::string("protocol error: ") + ctx_->reader->errstr);
                }
                continue;
            }
            const int e = SSL_get_error(ssl, n);
            if (e == SSL_ERROR_WANT_READ) return;
            if (e == SSL_ERROR_WANT_WRITE) {
                wait(POLLOUT, deadline);
                continue;
            }
            tls_failure("receive", e);
        }
    }

    // After an SSL call failed with `code`: what went wrong, as an exception.
    [[noreturn]] void tls_failure(const char* during, int code) {
        const bool handshake = std::strcmp(during, "handshake") == 0;
        const std::string closed = handshake ? "connection closed by the server during the TLS handshake (is it "
                                               "a TLS port? does it require a client certificate?)"
                                             : "connection closed by the server";
        if (code == SSL_ERROR_ZERO_RETURN) {
            ERR_clear_error();
            throw ConnectionError(closed);
        }
        if (code == SSL_ERROR_SYSCALL) {
            ERR_clear_error();
            if (sock_.err == 0) throw ConnectionError(closed);
            throw ConnectionError(system_error(handshake ? "TLS handshake" : during, sock_.err));
        }
        const unsigned long last = ERR_peek_last_error();
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
        if (ERR_GET_LIB(last) == ERR_LIB_SSL && ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            throw ConnectionError(closed);
        }
#endif
        const long verify = SSL_get_verify_result(ssl_.get());
        if (handshake && (SSL_get_verify_mode(ssl_.get()) & SSL_VERIFY_PEER) && verify != X509_V_OK) {
            ERR_clear_error();
            std::string why = X509_verify_cert_error_string(verify);
            if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
                why += " (the certificate is for another name; redis_tls_server_name sets the one to expect)";
            } else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                       verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                       verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
                why += " (redis_tls_ca_file names the CA that signs the server's certificate)";
            }
            throw RejectedError("TLS: the server's certificate was not accepted: " + why);
        }
        std::string why = openssl_errors();
        auto has = [&why](const char* text) { return why.find(text) != std::string::npos; };
        if (has("alert") &&
            (has("certificate") || has("unknown ca") || has("access denied") || has("handshake failure"))) {
            why += " (the server did not accept our client certificate, or wants one: redis_tls_cert_file and "
                   "redis_tls_key_file)";
        }
        if (has("wrong version number") || has("packet length too long")) {
            why += " (is it a TLS port?)";
        }
        throw RejectedError(std::string("TLS ") + during + " failed: " + why);
    }

    redisContext* ctx_;
    milliseconds timeout_;  // for messages: the caller's deadline is what counts
    TlsSocket sock_;
    std::unique_ptr<SSL, SslFree> ssl_;  // rediss:// only
};

std::chrono::milliseconds since(Clock::time_point t) {
    return std::chrono::duration_cast<milliseconds>(Clock::now() - t);
}

class RedisDedupStore final : public DedupStore {
public:
    explicit RedisDedupStore(const RedisStoreOptions& options)
        : url_(parse_redis_url(options.url)),
          display_(url_.redacted()),
          options_(options) {
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

    // One pipelined round trip; two more only for keys another owner holds.
    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds claim_ttl) override {
        if (keys.empty()) return {};
        return call("claim", [&](Connection& c, Clock::time_point deadline) {
            const std::string seconds = std::to_string(std::max<std::int64_t>(claim_ttl.count(), 1));
            std::string cmds;
            cmds.reserve(keys.size() * (keys.front().size() + owner.size() + sizeof kClaimScript + 32));
            for (const auto& key : keys) append_command(cmds, {"EVAL", kClaimScript, "1", key, owner, seconds});
            auto replies = c.exchange(cmds, keys.size(), deadline);
            std::vector<ClaimState> out(keys.size(), ClaimState::Claimed);
            std::vector<std::size_t> held;  // by another owner: is it alive?
            for (std::size_t i = 0; i < keys.size(); ++i) {
                const redisReply& r = *replies[i];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type == REDIS_REPLY_INTEGER) {
                    out[i] = claim_state(r.integer);
                } else if (r.type == REDIS_REPLY_STRING) {
                    out[i] = ClaimState::Held;
                    held.push_back(i);
                } else {
                    throw AnswerError("unexpected reply to the claim script");
                }
            }
            if (held.empty()) return out;
            cmds.clear();
            for (std::size_t i : held) append_command(cmds, {"EXISTS", options_.owner_key_prefix + reply_text(*replies[i])});
            auto alive = c.exchange(cmds, held.size(), deadline);
            std::vector<std::size_t> gone;
            std::string takeovers;
            for (std::size_t j = 0; j < held.size(); ++j) {
                const redisReply& r = *alive[j];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type != REDIS_REPLY_INTEGER) throw AnswerError("unexpected reply to EXISTS");
                if (r.integer != 0) continue;
                const std::size_t i = held[j];
                gone.push_back(i);
                append_command(takeovers, {"EVAL", kTakeOverScript, "1", keys[i], owner, seconds, reply_text(*replies[i])});
            }
            if (gone.empty()) return out;
            auto taken = c.exchange(takeovers, gone.size(), deadline);
            for (std::size_t j = 0; j < gone.size(); ++j) {
                const redisReply& r = *taken[j];
                if (r.type == REDIS_REPLY_ERROR) throw AnswerError(reply_text(r));
                if (r.type != REDIS_REPLY_INTEGER) throw AnswerError("unexpected reply to the take-over script");
                out[gone[j]] = claim_state(r.integer);
            }
            return out;
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
                if (ttl.count() > 0) append_command(cmds, {"SET", *key, kCommitted, "EX", seconds});
                else append_command(cmds, {"SET", *key, kCommitted});  // no TTL: permanent
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

private:
    std::string prefix() const { return "redis dedup store " + display_ + ": "; }

    // The SSL_CTX every connection of the store shares. Throws Error(Config)
    // naming the configuration key of a file that cannot be used.
    void setup_tls() {
        const RedisTlsOptions& tls = options_.tls;
        auto config_error = [](const char* key, const std::string& why) {
            ERR_clear_error();
            return Error(ErrorCode::Config, std::string("configuration key \"") + key + "\": " + why);
        };
        // Readable at all? (Before OpenSSL, whose errors say less.)
        auto readable = [&](const char* key, const std::string& path, bool show_path) {
            std::FILE* f = std::fopen(path.c_str(), "rb");
            if (!f) {
                const int err = errno;
                throw config_error(key, (show_path ? "cannot read " + json::quote(path) : std::string("cannot be read")) +
                                            ": " + std::strerror(err));
            }
            std::fclose(f);
        };
        if (tls.key_file.empty() && !tls.cert_file.empty()) {
            throw config_error("redis_tls_key_file", "required with redis_tls_cert_file (the client certificate's key)");
        }
        if (tls.cert_file.empty() && !tls.key_file.empty()) {
            throw config_error("redis_tls_cert_file", "required with redis_tls_key_file (the certificate of that key)");
        }
        tls_name_ = tls.server_name.empty() ? url_.host : tls.server_name;
        tls_name_is_ip_ = is_ip_address(tls_name_);
        tls_bio_method();  // made now rather than in a call

        ERR_clear_error();
        tls_ctx_.reset(SSL_CTX_new(TLS_client_method()));
        if (!tls_ctx_) throw Error(ErrorCode::DedupStore, prefix() + "TLS: " + openssl_errors());
        SSL_CTX* ctx = tls_ctx_.get();
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
            throw Error(ErrorCode::DedupStore, prefix() + "TLS: " + openssl_errors());
        }
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
        // An encrypted key fails to load instead of asking for a passphrase on the terminal.
        SSL_CTX_set_default_passwd_cb(ctx, [](char*, int, int, void*) { return 0; });
        SSL_CTX_set_verify(ctx, tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
        if (!tls.ca_file.empty()) {
            readable("redis_tls_ca_file", tls.ca_file, true);
            if (SSL_CTX_load_verify_locations(ctx, tls.ca_file.c_str(), nullptr) != 1) {
                throw config_error("redis_tls_ca_file", "no PEM certificates in " + json::quote(tls.ca_file) + " (" +
                                                            openssl_errors() + ")");
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            throw Error(ErrorCode::DedupStore, prefix() + "TLS: the system's CA certificates: " + openssl_errors());
        }
        if (!tls.cert_file.empty()) {
            readable("redis_tls_cert_file", tls.cert_file, true);
            readable("redis_tls_key_file", tls.key_file, false);  // its path is not shown
            if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_file.c_str()) != 1) {
                throw config_error("redis_tls_cert_file", "no PEM certificate in " + json::quote(tls.cert_file) +
                                                              " (" + openssl_errors() + ")");
            }
            if (SSL_CTX_use_PrivateKey_file(ctx, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
                const unsigned long last = ERR_peek_last_error();
                if (ERR_GET_LIB(last) == ERR_LIB_X509 && ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH) {
                    throw config_error("redis_tls_key_file", "is not the key of the certificate in redis_tls_cert_file");
                }
                throw config_error("redis_tls_key_file",
                                   "not a PEM private key, or an encrypted one (" + openssl_errors() + ")");
            }
            if (SSL_CTX_check_private_key(ctx) != 1) {
                throw config_error("redis_tls_key_file", "is not the key of the certificate in redis_tls_cert_file");
            }
        }
        if (!tls.verify && options_.logger) {
            options_.logger->log(LogLevel::Warning, "training_output_redis_tls_unverified",
                                 {{"url", display_},
                                  {"detail", "redis_tls_verify is false: any server certificate is accepted"}});
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
                                                   std::to_string(since(down_since_).count()) + " ms (" +
                                                   last_error_ + "); next connection attempt in " +
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
            options_.logger->log(LogLevel::Warning, "training_output_dedup_store_reconnected",
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
                                  {"detail", "examples are written without dedup until the store is reachable again; "
                                             "reconnecting with backoff"}});
        }
    }

    // Half the doubled delay, plus up to the other half at random.
    milliseconds backoff(int attempt) const {
        std::int64_t delay = options_.reconnect_base.count();
        for (int i = 0; i < attempt && delay < options_.reconnect_max.count(); ++i) delay *= 2;
        delay = std::min<std::int64_t>(delay, options_.reconnect_max.count());
        return milliseconds(delay / 2 + static_cast<std::int64_t>(random::uniform(static_cast<std::uint64_t>(delay / 2 + 1))));
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
        if (url_.tls) {
            conn->start_tls({tls_ctx_.get(), tls_bio_method(), tls_name_, tls_name_is_ip_, options_.tls.verify},
                            deadline);
        }

        std::string cmds;
        std::size_t count = 0;
        if (!url_.password.empty()) {
            if (url_.user.empty()) append_command(cmds, {"AUTH", url_.password});
            else append_command(cmds, {"AUTH", url_.user, url_.password});
            ++count;
        }
        if (url_.db != 0) {
            append_command(cmds, {"SELECT", std::to_string(url_.db)});
            ++count;
        }
        append_command(cmds, {"PING"});
        ++count;
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
        return conn;
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
    // TLS (rediss://), set up once; connections hold references to it.
    std::unique_ptr<SSL_CTX, SslCtxFree> tls_ctx_;
    std::string tls_name_;  // checked in the server's certificate
    bool tls_name_is_ip_ = false;

    std::mutex mutex_;
    std::condition_variable available_;
    std::vector<std::unique_ptr<Connection>> idle_;
    std::size_t open_ = 0;       // idle + in use
    std::uint64_t epoch_ = 0;    // changes at each outage and each recovery
    bool down_ = false;
    bool probing_ = false;       // a caller is trying to reconnect
    int attempts_ = 0;           // failed reconnections in this outage
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
