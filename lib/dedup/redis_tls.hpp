// TLS for the Redis dedup store (rediss://): OpenSSL over the socket hiredis
// connected, through a BIO of ours that sends with MSG_NOSIGNAL (OpenSSL's
// socket BIO writes with write(), which raises SIGPIPE). Every step is
// non-blocking: each says what the socket must be ready for before it is
// tried again, and the store waits for that under the call's deadline.
//
// One RedisTls (one SSL_CTX) per store: TLS 1.2 or later, the server's
// certificate checked against the CA file (or the system's CAs) and the host
// name (or IP address) of the URL or redis_tls_server_name, sent as SNI; an
// optional client certificate. The key file's path never appears in a message.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>

#include "training_output/sys/dedup_store.hpp"

struct ssl_st;
struct ssl_ctx_st;

namespace training_output {

// What a connection of the Redis store throws, TLS included.
// The connection is unusable: drop it; the server may be down.
class RedisConnectionError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The server refused the credentials, the database or a certificate (its own
// or ours): a setup problem.
class RedisRejectedError : public RedisConnectionError {
    using RedisConnectionError::RedisConnectionError;
};

// One step of non-blocking I/O: `bytes` moved (> 0), or none until the
// socket is ready for `want` (POLLIN or POLLOUT).
struct RedisTlsIo {
    std::size_t bytes = 0;
    short want = 0;
};

// TLS over one connected, non-blocking socket, which stays its owner's to
// close (after this is gone). Throws RedisRejectedError when TLS fails (the
// server's certificate is not accepted, the server refuses ours with a fatal
// alert, it does not speak TLS), RedisConnectionError when it goes away.
class RedisTlsConnection {
public:
    RedisTlsConnection(const RedisTlsConnection&) = delete;
    RedisTlsConnection& operator=(const RedisTlsConnection&) = delete;

    // The handshake: 0 once it is done, else the event to wait for before
    // calling again.
    short handshake();

    // Up to `len` bytes of `data`. A retry after `want` must pass the same
    // arguments (OpenSSL requires it); partial writes are on, so a call
    // returns once a record is out.
    RedisTlsIo send(const char* data, std::size_t len);

    // Up to `len` decrypted bytes into `buf`.
    RedisTlsIo recv(char* buf, std::size_t len);

    // Decrypted bytes wait inside the SSL, unread.
    bool has_pending() const;

    // The socket under the SSL: the BIO's data.
    struct Socket {
        int fd = -1;
        int err = 0;  // errno of the last failed send/recv other than EAGAIN
    };

private:
    friend class RedisTls;
    struct SslFree {
        void operator()(ssl_st* ssl) const;
    };

    explicit RedisTlsConnection(int fd) { sock_.fd = fd; }
    void throw_received_alert();
    [[noreturn]] void fail(const char* during, int code);

    Socket sock_;
    std::unique_ptr<ssl_st, SslFree> ssl_;
};

// The TLS context of a store: set up once, shared by its connections.
class RedisTls {
public:
    // `host`: the URL's, checked unless options.server_name names another.
    // Throws Error(Config) naming the configuration key of a file that
    // cannot be used, Error(DedupStore) (its message after `prefix`) when
    // OpenSSL cannot make the context.
    RedisTls(const RedisTlsOptions& options, const std::string& host, const std::string& prefix);

    // TLS on `fd`, with the name to check set, before its handshake. Throws
    // RedisRejectedError when that name cannot be used.
    std::unique_ptr<RedisTlsConnection> connect(int fd) const;

private:
    struct SslCtxFree {
        void operator()(ssl_ctx_st* ctx) const;
    };

    std::unique_ptr<ssl_ctx_st, SslCtxFree> ctx_;
    std::string name_;  // checked in the server's certificate
    bool name_is_ip_ = false;
    bool verify_ = true;
};

}  // namespace training_output
