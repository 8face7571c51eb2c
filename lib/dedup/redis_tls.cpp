// TLS for the Redis dedup store: the BIO, the SSL_CTX, the handshake, reads
// and writes, and what their failures are called.
#include "dedup/redis_tls.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <new>

#include "common/json.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

std::string system_error(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

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

using TlsSocket = RedisTlsConnection::Socket;

int tls_bio_write(BIO* bio, const char* data, int len) {
    auto* sock = static_cast<TlsSocket*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    for (;;) {
        ssize_t n = ::send(sock->fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
        if (n >= 0) return static_cast<int>(n);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(bio);
        else
            sock->err = errno;
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
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(bio);
        else
            sock->err = errno;
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

bool is_ip_address(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

// RedisTlsConnection ---------------------------------------------------------

void RedisTlsConnection::SslFree::operator()(ssl_st* ssl) const { SSL_free(ssl); }

short RedisTlsConnection::handshake() {
    SSL* ssl = ssl_.get();
    sock_.err = 0;
    ERR_clear_error();
    const int r = SSL_connect(ssl);
    if (r == 1) return 0;
    const int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ) return POLLIN;
    if (e == SSL_ERROR_WANT_WRITE) return POLLOUT;
    fail("handshake", e);
}

RedisTlsIo RedisTlsConnection::send(const char* data, std::size_t len) {
    SSL* ssl = ssl_.get();
    sock_.err = 0;
    ERR_clear_error();
    const int n = SSL_write(ssl, data, static_cast<int>(std::min<std::size_t>(len, INT_MAX)));
    if (n > 0) return {static_cast<std::size_t>(n), 0};
    const int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_WRITE) return {0, POLLOUT};
    if (e == SSL_ERROR_WANT_READ) return {0, POLLIN};
    if (e == SSL_ERROR_SYSCALL) {
        // A server that refuses our certificate (TLS 1.3: after the
        // handshake) says why and hangs up; the reset may reach our send
        // first. Its alert is still to be read.
        const int err = sock_.err;
        throw_received_alert();
        sock_.err = err;
    }
    fail("send", e);
}

RedisTlsIo RedisTlsConnection::recv(char* buf, std::size_t len) {
    SSL* ssl = ssl_.get();
    sock_.err = 0;
    ERR_clear_error();
    const int n = SSL_read(ssl, buf, static_cast<int>(std::min<std::size_t>(len, INT_MAX)));
    if (n > 0) return {static_cast<std::size_t>(n), 0};
    const int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ) return {0, POLLIN};
    if (e == SSL_ERROR_WANT_WRITE) return {0, POLLOUT};
    fail("receive", e);
}

bool RedisTlsConnection::has_pending() const { return SSL_has_pending(ssl_.get()); }

// Throws what a fatal alert the server sent says, if there is one.
void RedisTlsConnection::throw_received_alert() {
    char buf[1024];
    sock_.err = 0;
    ERR_clear_error();
    const int n = SSL_read(ssl_.get(), buf, sizeof buf);
    if (n <= 0 && SSL_get_error(ssl_.get(), n) == SSL_ERROR_SSL) fail("receive", SSL_ERROR_SSL);
    ERR_clear_error();
}

// After an SSL call failed with `code`: what went wrong, as an exception.
void RedisTlsConnection::fail(const char* during, int code) {
    const bool handshake = std::strcmp(during, "handshake") == 0;
    const std::string closed = handshake ? "connection closed by the server during the TLS handshake (is it "
                                           "a TLS port? does it require a client certificate?)"
                                         : "connection closed by the server";
    if (code == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        throw RedisConnectionError(closed);
    }
    if (code == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        if (sock_.err == 0) throw RedisConnectionError(closed);
        throw RedisConnectionError(system_error(handshake ? "TLS handshake" : during, sock_.err));
    }
    const unsigned long last = ERR_peek_last_error();
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    if (ERR_GET_LIB(last) == ERR_LIB_SSL && ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        throw RedisConnectionError(closed);
    }
#endif
    const long verify = SSL_get_verify_result(ssl_.get());
    if (handshake && (SSL_get_verify_mode(ssl_.get()) & SSL_VERIFY_PEER) && verify != X509_V_OK) {
        ERR_clear_error();
        std::string why = X509_verify_cert_error_string(verify);
        if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
            why += " (the certificate is for another name; redis_tls_server_name sets the one to expect)";
        } else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                   verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN || verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
            why += " (redis_tls_ca_file names the CA that signs the server's certificate)";
        }
        throw RedisRejectedError("TLS: the server's certificate was not accepted: " + why);
    }
    std::string why = openssl_errors();
    auto has = [&why](const char* text) { return why.find(text) != std::string::npos; };
    if (has("alert") && (has("certificate") || has("unknown ca") || has("access denied") || has("handshake failure"))) {
        why +=
            " (the server did not accept our client certificate, or wants one: redis_tls_cert_file and "
            "redis_tls_key_file)";
    }
    if (has("wrong version number") || has("packet length too long")) {
        why += " (is it a TLS port?)";
    }
    throw RedisRejectedError(std::string("TLS ") + during + " failed: " + why);
}

// RedisTls -------------------------------------------------------------------

void RedisTls::SslCtxFree::operator()(ssl_ctx_st* ctx) const { SSL_CTX_free(ctx); }

RedisTls::RedisTls(const RedisTlsOptions& tls, const std::string& host, const std::string& prefix)
    : verify_(tls.verify) {
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
    name_ = tls.server_name.empty() ? host : tls.server_name;
    name_is_ip_ = is_ip_address(name_);
    tls_bio_method();  // made now rather than in a call

    ERR_clear_error();
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_) throw Error(ErrorCode::DedupStore, prefix + "TLS: " + openssl_errors());
    SSL_CTX* ctx = ctx_.get();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        throw Error(ErrorCode::DedupStore, prefix + "TLS: " + openssl_errors());
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
    // An encrypted key fails to load instead of asking for a passphrase on the terminal.
    SSL_CTX_set_default_passwd_cb(ctx, [](char*, int, int, void*) { return 0; });
    SSL_CTX_set_verify(ctx, tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    if (!tls.ca_file.empty()) {
        readable("redis_tls_ca_file", tls.ca_file, true);
        if (SSL_CTX_load_verify_locations(ctx, tls.ca_file.c_str(), nullptr) != 1) {
            throw config_error("redis_tls_ca_file",
                               "no PEM certificates in " + json::quote(tls.ca_file) + " (" + openssl_errors() + ")");
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        throw Error(ErrorCode::DedupStore, prefix + "TLS: the system's CA certificates: " + openssl_errors());
    }
    if (!tls.cert_file.empty()) {
        readable("redis_tls_cert_file", tls.cert_file, true);
        readable("redis_tls_key_file", tls.key_file, false);  // its path is not shown
        if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_file.c_str()) != 1) {
            throw config_error("redis_tls_cert_file",
                               "no PEM certificate in " + json::quote(tls.cert_file) + " (" + openssl_errors() + ")");
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
}

std::unique_ptr<RedisTlsConnection> RedisTls::connect(int fd) const {
    std::unique_ptr<RedisTlsConnection> conn(new RedisTlsConnection(fd));
    ERR_clear_error();
    conn->ssl_.reset(SSL_new(ctx_.get()));
    if (!conn->ssl_) {
        ERR_clear_error();
        throw std::bad_alloc();
    }
    BIO* bio = BIO_new(tls_bio_method());
    if (!bio) {
        ERR_clear_error();
        throw std::bad_alloc();
    }
    BIO_set_data(bio, &conn->sock_);
    SSL* ssl = conn->ssl_.get();
    SSL_set_bio(ssl, bio, bio);  // the SSL owns it now
    // SNI is for names only (RFC 6066); an address is checked as an address.
    // SSL_set_tlsext_host_name, without the macro's C cast.
    if (!name_is_ip_ &&
        SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(name_.c_str())) != 1) {
        throw RedisRejectedError("TLS: cannot use the server name: " + openssl_errors());
    }
    if (verify_) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        int ok = 0;
        if (name_is_ip_) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(param, name_.c_str());
        } else {
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = X509_VERIFY_PARAM_set1_host(param, name_.c_str(), name_.size());
        }
        if (ok != 1) throw RedisRejectedError("TLS: cannot check the server name: " + openssl_errors());
    }
    return conn;
}

}  // namespace training_output
